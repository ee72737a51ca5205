"""A subscriber process for the subscription crash tests (run as a script, never imported).

Usage: python crash_subscriber.py URL MODE OUT

Runs the durable subscription ``crash`` on the store at URL until every event of the
log is handled, then exits 0. MODE ``plain``: the handler appends the positions of
each batch to the file OUT (flushed and fsynced) and then sleeps a little, so that a
SIGKILL often lands mid-batch. MODE ``tx``: the handler inserts the positions into
the table OUT (it must exist) in the checkpoint's own transaction.
"""

from __future__ import annotations

import asyncio
import os
import sys

import tidings
from tidings.subscriptions import subscribe


async def main(url: str, mode: str, out: str) -> None:
    store = await tidings.connect(url)
    head = await store.head()

    def record(positions: str) -> None:
        with open(out, "a") as f:
            f.write(positions)
            f.flush()
            os.fsync(f.fileno())

    async def plain(events: list[tidings.RecordedEvent]) -> None:
        record("".join(f"{e.position}\n" for e in events))
        await asyncio.sleep(0.03)

    async def tx(events: list[tidings.RecordedEvent], conn: object) -> None:
        rows = [(e.position,) for e in events]
        if url.startswith("sqlite"):
            conn.executemany(f"INSERT INTO {out} (position) VALUES (?)", rows)  # type: ignore[attr-defined]
        else:
            await conn.executemany(f"INSERT INTO {out} (position) VALUES ($1)", rows)  # type: ignore[attr-defined]
        await asyncio.sleep(0.03)

    handler = plain if mode == "plain" else tx
    async with store, subscribe(store, "crash", handler, batch_size=50) as sub:
        print("ready", flush=True)
        while (sub.position or 0) < head:  # noqa: ASYNC110 (handled and checkpointed)
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
