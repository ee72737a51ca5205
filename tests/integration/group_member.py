"""A consumer-group member process for the group crash test (run as a script, never imported).

Usage: python group_member.py URL MEMBER OUT

Runs member MEMBER of the group ``crew`` (8 partitions, lease_ttl 1 s) on the store at
URL until SIGTERM, then stops cleanly and exits 0. The handler appends one line
``MEMBER POSITION STREAM TIME`` per event to the file OUT (one write per batch, flushed and
fsynced) and then sleeps a little, so that a SIGKILL often lands mid-batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import tidings
from tidings.subscriptions import subscribe


async def main(url: str, member: str, out: str) -> None:
    store = await tidings.connect(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handler(events: list[tidings.RecordedEvent]) -> None:
        now = time.time()
        lines = "".join(f"{member} {e.position} {e.stream} {now}\n" for e in events)
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        await asyncio.sleep(0.02)

    sub = subscribe(
        store, "crew", handler, member=member, partitions=8, lease_ttl=1.0, batch_size=10
    )
    async with store, sub:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
