"""A satellite process for the fault tests (run as a script, never imported by pytest).

Usage: python satellite_child.py FILE SERVER_URL SATELLITE_ID RUN SEED [--offline N]
       [--online-every P] [--pull-page N]

Opens ``Satellite(sqlite:///FILE, SERVER_URL, ["sale", "stock"])`` (the parent makes the
server unreachable first), records N local transactions while offline, then waits for a
line on stdin (the parent heals the network) and syncs in a loop, now and then recording
one more transaction (online: it goes through the server), until it is killed.

Every transaction's events carry ``{"sat": ID, "run": RUN, "n": N, "i": I}``: ``(RUN, N)``
is the order in which this satellite recorded them, across restarts. The protocol on
stdout is one JSON object per line, each written with one ``write`` below PIPE_BUF, so a
SIGKILL never leaves half a line:

* ``{"t": "ready", "pid": PID}`` once the satellite is open;
* ``{"t": "begin", "run": R, "n": N, "ids": [...], "streams": [...]}`` before a write;
* ``{"t": "commit", "run": R, "n": N, "ids": [...], "results": [[STREAM, FIRST, LAST,
  POSITION], ...], "online": BOOL}`` once the write returned (it is committed locally);
* ``{"t": "refused", "run": R, "n": N, "error": TEXT}`` if it raised (the server said
  conflict to an online write, which then records nothing);
* ``{"t": "written"}`` after the offline writes;
* ``{"t": "synced", "pending": N, "conflicts": N}`` after each sync that reached the
  server, ``{"t": "unsynced", "error": TEXT}`` after one that did not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import uuid
from typing import Any

import tidings
from tidings.satellite import Satellite, syncer

MAX_LIFETIME_S = 60.0  # never outlive a parent that forgot to kill us
PIPE_BUF = 4096
STREAMS = 4


def emit(obj: dict[str, Any]) -> None:
    """Write one line to stdout with one write(2): atomic on a pipe below PIPE_BUF."""
    line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    if len(line) >= PIPE_BUF:
        raise AssertionError(f"protocol line too long ({len(line)} bytes)")
    os.write(1, line)


class Writer:
    def __init__(self, sat: Satellite, run: int, rng: random.Random) -> None:
        self.sat = sat
        self.run = run
        self.rng = rng
        self.n = 0

    def events(self, count: int, start: int) -> list[tidings.NewEvent]:
        return [
            tidings.NewEvent(
                "Sold",
                {"sat": self.sat.satellite_id, "run": self.run, "n": self.n, "i": start + i},
                id=uuid.uuid4(),
            )
            for i in range(count)
        ]

    async def expected(self, stream: str) -> tidings.Expected:
        """Half the time the exact version the satellite sees now (stale if the server
        moved meanwhile: a conflict), else any."""
        if self.rng.random() < 0.5:
            return tidings.ANY
        version = await self.sat.stream_version(stream)
        return tidings.NO_STREAM if version is None else version

    async def write(self, online: bool) -> None:
        k = self.rng.randrange(STREAMS)
        sale = self.events(self.rng.randint(1, 3), 0)
        parts: list[tuple[str, list[tidings.NewEvent]]] = [(f"sale-{k}", sale)]
        if self.rng.random() < 0.4:  # a transaction over both categories
            parts.append((f"stock-{k}", self.events(self.rng.randint(1, 2), len(sale))))
        ids = [str(e.id) for _, events in parts for e in events]
        emit(
            {
                "t": "begin",
                "run": self.run,
                "n": self.n,
                "ids": ids,
                "streams": [s for s, _ in parts],
            }
        )
        try:
            if len(parts) == 1:
                stream, events = parts[0]
                found = [await self.sat.append(stream, events, await self.expected(stream))]
            else:
                async with self.sat.transaction(tidings.Audit("till", {"n": self.n})) as tx:
                    for stream, events in parts:
                        tx.append(stream, events, await self.expected(stream))
                found = tx.results
        except Exception as exc:
            emit(
                {
                    "t": "refused",
                    "run": self.run,
                    "n": self.n,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                }
            )
        else:
            results = [[r.stream, r.first_version, r.last_version, r.position] for r in found]
            emit(
                {
                    "t": "commit",
                    "run": self.run,
                    "n": self.n,
                    "ids": ids,
                    "results": results,
                    "online": online,
                }
            )
        self.n += 1


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("server")
    parser.add_argument("satellite_id")
    parser.add_argument("run", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("--offline", type=int, default=10)
    parser.add_argument("--online-every", type=float, default=0.5)
    parser.add_argument("--pull-page", type=int, default=0, help="events per pull (0: default)")
    args = parser.parse_args()
    if args.pull_page:
        syncer.PULL_PAGE = args.pull_page
    rng = random.Random(args.seed)
    sat = Satellite(
        f"sqlite:///{args.file}",
        args.server,
        ["sale", "stock"],
        satellite_id=args.satellite_id,
        timeout=2.0,
        long_poll=2.0,
    )
    await sat.open()
    emit({"t": "ready", "pid": os.getpid()})
    writer = Writer(sat, args.run, rng)
    for _ in range(args.offline):
        await writer.write(online=False)
    emit({"t": "written"})
    await asyncio.to_thread(sys.stdin.readline)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_LIFETIME_S
    while loop.time() < deadline:
        if rng.random() < args.online_every:
            await writer.write(online=True)
        try:
            status = await sat.sync(timeout=5)
        except Exception as exc:
            emit({"t": "unsynced", "error": f"{type(exc).__name__}: {exc}"[:500]})
            await asyncio.sleep(0.05)
        else:
            emit({"t": "synced", "pending": status.pending, "conflicts": status.conflicts})
    await sat.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
