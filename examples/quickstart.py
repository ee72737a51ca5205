"""Quick start: append events to an embedded SQLite store and read them back.

Run it with ``make demo`` (or ``python examples/quickstart.py [URL]``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import tidings


async def main(url: str) -> None:
    store = await tidings.connect(url)
    async with store:
        placed = await store.append(
            "order-42",
            [tidings.NewEvent("Placed", {"customer": "ada", "total": 10})],
            expected_version=tidings.NO_STREAM,
        )
        print(f"appended to {placed.stream}: v{placed.last_version}, position {placed.position}")

        # Several streams, all or nothing, with one audit record.
        async with store.transaction(
            audit=tidings.Audit(user="alice", extra={"ip": "1.2.3.4"})
        ) as tx:
            tx.append("order-42", [tidings.NewEvent("Paid", {"amount": 10})], expected_version=0)
            tx.append("stock-7", [tidings.NewEvent("Reserved", {"order": 42, "quantity": 1})])

        try:
            await store.append("order-42", [tidings.NewEvent("Paid", {})], expected_version=0)
        except tidings.WrongExpectedVersion as conflict:
            print(f"conflict, as expected: {conflict}")

        print("the order stream:")
        async for event in store.read_stream("order-42"):
            print(f"  v{event.version} {event.type} {event.data}")

        print("the global log:")
        async for event in store.read_all(from_position=0):
            audit = await store.audit(event)
            who = f" by {audit.user}" if audit else ""
            print(f"  #{event.position} {event.time:%H:%M:%S.%f} {event.stream} {event.type}{who}")

        print("streams:", [(s.name, s.version) async for s in store.list_streams()])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(main(f"sqlite:///{Path(folder) / 'events.db'}"))
