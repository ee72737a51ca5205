"""A backup or restore in a process of its own, printing a line per progress report, for
the tests that SIGKILL it midway: ``backup_child.py backup URL FILE`` or ``restore FILE URL``."""

from __future__ import annotations

import asyncio
import sys

import tidings
from tidings.backup import Progress


def report(progress: Progress) -> None:
    if progress.table != "events":  # killed in the middle of the log, not before it
        return
    print(f"progress {progress.table} {progress.events}", flush=True)


async def main(action: str, source: str, target: str) -> None:
    if action == "backup":
        async with await tidings.connect(source) as store:
            await store.backup(target, progress=report)
    else:
        await tidings.restore(source, target, progress=report)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
