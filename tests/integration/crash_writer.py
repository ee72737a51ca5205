"""A writer process for the crash-safety tests (run as a script, never imported by pytest).

Usage: python crash_writer.py URL TAG [--tasks N] [--seconds S] [--seed N] [--wait-go]

Opens the store at URL and runs N concurrent tasks that append in a loop until
S seconds have passed (S = 0: until killed); with ``--wait-go`` it opens the
store, then waits for a line on stdin before it starts (so that several writers
can start together). Every operation is one of

* ``single``: one event to the task's own stream ``s-TAG-TASK`` at the exact
  expected version;
* ``multi``: 2..5 events to the task's own stream ``m-TAG-TASK`` at the exact
  expected version;
* ``tx``: a transaction (audit user ``crash``) appending 1..3 events to ``a-K``
  and 1..2 events to ``b-K``, K in 0..7, streams shared by every task, every
  round and every process, with ANY expected version.

Each event's id is generated here and its data is ``{"op": OP, "k": INDEX}``
(INDEX counts the operation's events across all its appends), so the parent can
tell which operation and which transaction a stored event belongs to.

The protocol on stdout is one JSON object per line, each written with a single
``write`` of less than PIPE_BUF bytes, so a SIGKILL never leaves half a line:

* ``{"t": "ready", "pid": PID, "connect_s": SECONDS, "wall_ms": MS}`` once the store is open;
* ``{"t": "begin", "op": OP, "kind": KIND, "appends": [[STREAM, [ID, ...]], ...]}``
  written *before* the operation is handed to the store;
* ``{"t": "ack", "op": OP, "results": [[STREAM, FIRST, LAST, POSITION], ...]}``
  written after the append or transaction returned (it was acknowledged);
* ``{"t": "error", "op": OP, "error": TEXT}`` if it raised (never expected);
* ``{"t": "done", "acked": N, "failed": 0, "max_wait_s": S}`` after a bounded run
  closed the store cleanly (S: the longest an operation waited to be acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import traceback
import uuid
from typing import Any

import tidings

SHARED_STREAMS = 8
MAX_LIFETIME_S = 60.0  # never outlive a parent that forgot to kill us
PIPE_BUF = 4096


def emit(obj: dict[str, Any]) -> None:
    """Write one line to stdout with one write(2): atomic on a pipe below PIPE_BUF."""
    line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    if len(line) >= PIPE_BUF:
        raise AssertionError(f"protocol line too long ({len(line)} bytes)")
    written = os.write(1, line)
    if written != len(line):
        raise AssertionError(f"short write on stdout ({written} of {len(line)} bytes)")


def new_events(op: str, type_: str, count: int, start: int) -> list[tidings.NewEvent]:
    return [
        tidings.NewEvent(type_, {"op": op, "k": start + i}, id=uuid.uuid4()) for i in range(count)
    ]


def ids(events: list[tidings.NewEvent]) -> list[str]:
    return [str(e.id) for e in events]


def results_of(results: list[tidings.AppendResult]) -> list[list[Any]]:
    return [[r.stream, r.first_version, r.last_version, r.position] for r in results]


class Writer:
    def __init__(self, store: tidings.EventStore, tag: str, deadline: float, seed: int) -> None:
        self.store = store
        self.tag = tag
        self.deadline = deadline
        self.seed = seed
        self.acked = 0
        self.failed = 0
        self.max_wait_s = 0.0  # the longest an operation waited for its acknowledgement

    async def task(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        own_version: dict[str, int | None] = {
            f"s-{self.tag}-{index}": None,
            f"m-{self.tag}-{index}": None,
        }
        n = 0
        while time.monotonic() < self.deadline:
            op = f"{self.tag}.{index}.{n}"
            kind = ("single", "multi", "tx")[(n + index) % 3]
            n += 1
            started = time.monotonic()
            try:
                if kind == "tx":
                    await self.transaction(op, rng)
                else:
                    stream = f"{kind[0]}-{self.tag}-{index}"
                    count = 1 if kind == "single" else rng.randint(2, 5)
                    events = new_events(op, kind.capitalize(), count, 0)
                    current = own_version[stream]
                    expected: tidings.Expected = tidings.NO_STREAM if current is None else current
                    emit({"t": "begin", "op": op, "kind": kind, "appends": [[stream, ids(events)]]})
                    result = await self.store.append(stream, events, expected_version=expected)
                    own_version[stream] = result.last_version
                    emit({"t": "ack", "op": op, "results": results_of([result])})
                self.acked += 1
                self.max_wait_s = max(self.max_wait_s, time.monotonic() - started)
            except Exception as exc:
                self.failed += 1
                emit(
                    {
                        "t": "error",
                        "op": op,
                        "error": "".join(traceback.format_exception(exc))[-1500:],
                    }
                )
                return

    async def transaction(self, op: str, rng: random.Random) -> None:
        k = rng.randrange(SHARED_STREAMS)
        a_events = new_events(op, "TxA", rng.randint(1, 3), 0)
        b_events = new_events(op, "TxB", rng.randint(1, 2), len(a_events))
        appends = [[f"a-{k}", ids(a_events)], [f"b-{k}", ids(b_events)]]
        emit({"t": "begin", "op": op, "kind": "tx", "appends": appends})
        audit = tidings.Audit(user="crash", extra={"tx": op})
        async with self.store.transaction(audit=audit) as tx:
            tx.append(f"a-{k}", a_events)
            tx.append(f"b-{k}", b_events)
        emit({"t": "ack", "op": op, "results": results_of(tx.results)})


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tag")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-go", action="store_true", help="start writing on a line on stdin")
    args = parser.parse_args()

    started = time.monotonic()
    store = await tidings.connect(args.url)
    emit(
        {
            "t": "ready",
            "pid": os.getpid(),
            "connect_s": round(time.monotonic() - started, 3),
            "wall_ms": time.time_ns() // 1_000_000,
        }
    )
    if args.wait_go:
        await asyncio.to_thread(sys.stdin.readline)
    seconds = args.seconds if args.seconds > 0 else MAX_LIFETIME_S
    writer = Writer(store, args.tag, time.monotonic() + seconds, args.seed)
    await asyncio.gather(*(writer.task(i) for i in range(args.tasks)))
    await store.close()
    emit(
        {
            "t": "done",
            "acked": writer.acked,
            "failed": writer.failed,
            "max_wait_s": round(writer.max_wait_s, 3),
        }
    )
    return 1 if writer.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
