"""A process that folds a view and writes to it, for test_view_processes.py.

Usage: ``python view_folder.py URL COUNT``. Opens the store, folds the View
``profiles`` (category ``profile``), prints ``ready``, then on a line from stdin makes
COUNT changes to keys 0..9 (new, mod, del), prints the last position and waits for
stdin to close.
"""

from __future__ import annotations

import asyncio
import sys

import tidings
from tidings.views import View


async def main(url: str, count: int) -> None:
    store = await tidings.connect(url)
    async with store, View(store, "profiles", category="profile", poll_interval=0.05):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        last = 0
        for i in range(count):
            key = f"profile-{i % 10}"
            if i % 7 == 6:
                event = tidings.NewEvent("del", {})
            elif i % 10 == i:
                event = tidings.NewEvent("new", {"n": i, "since": i})
            else:
                event = tidings.NewEvent("mod", {"n": i})
            last = (await store.append(key, [event])).position
        print(last, flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
