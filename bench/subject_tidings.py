"""The subject: the workloads run with tidings through its public async API.

Writers are asyncio tasks on one event loop sharing one store. Each writer appends to
its own stream with an exact expected version (``NO_STREAM`` first, then the version
the previous append returned), the same optimistic-concurrency check the eventsourcing
peer gets from its ``(originator_id, originator_version)`` primary key. Reads iterate
``store.read_all(from_position=0)``, which yields decoded ``RecordedEvent`` objects.

SQLite runs with ``?synchronous=full`` (WAL + synchronous=FULL, tidings' default).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from urllib.parse import quote

from workloads import EVENT_TYPE, Measurement, Spec, event_data

import tidings
from tidings import EventStore


def store_url(spec: Spec, pg: dict[str, str]) -> str:
    """The tidings URL of the spec's fresh database."""
    if spec.backend == "sqlite":
        return f"sqlite:///{spec.target}?synchronous=full"
    auth = quote(pg["user"]) + (":" + quote(pg["password"]) if pg["password"] else "")
    return f"postgresql://{auth}@{pg['host']}:{pg['port']}/{spec.target}"


def run(spec: Spec, pg: dict[str, str], runs: int) -> list[Measurement]:
    """Run ``spec`` (``runs`` timed reads of one pre-load for read_all, else one append run)."""
    return asyncio.run(_run(spec, pg, runs))


async def _run(spec: Spec, pg: dict[str, str], runs: int) -> list[Measurement]:
    store = await tidings.connect(store_url(spec, pg))
    async with store:
        if spec.workload == "read_all":
            await preload(store, spec)
            measurements = [await read_all(store, spec.events) for _ in range(runs)]
        else:
            measurements = [await append(store, spec)]
    if spec.backend == "sqlite":
        check_wal(spec.target)
    return measurements


async def append(store: EventStore, spec: Spec) -> Measurement:
    """``spec.writers`` tasks, each appending ``spec.batch`` events at a time to its stream."""
    written = [0] * spec.writers

    async def writer(w: int) -> None:
        stream = f"order-{w}"
        expected: tidings.Expected = tidings.NO_STREAM
        n = 0
        for _ in range(spec.appends(w)):
            if time.perf_counter() > deadline:
                break
            batch = [tidings.NewEvent(EVENT_TYPE, event_data(n + i)) for i in range(spec.batch)]
            result = await store.append(stream, batch, expected_version=expected)
            expected = result.last_version
            n += spec.batch
        written[w] = n

    began = time.perf_counter()
    deadline = began + spec.max_seconds
    await asyncio.gather(*(writer(w) for w in range(spec.writers)))
    seconds = time.perf_counter() - began

    events = sum(written)
    head = await store.head()
    if head != events:
        raise RuntimeError(f"wrote {events} events but the log's head is {head}")
    return Measurement(
        events, seconds, f"store.append, {spec.batch} event(s) per append, asyncio tasks"
    )


async def preload(store: EventStore, spec: Spec) -> None:
    """Fill the log quickly (untimed): streams of ``spec.batch`` events, one append each."""
    batch = [tidings.NewEvent(EVENT_TYPE, event_data(n)) for n in range(spec.batch)]
    for s in range(spec.events // spec.batch):
        await store.append(f"order-{s}", batch, expected_version=tidings.NO_STREAM)


async def read_all(store: EventStore, expected: int) -> Measurement:
    """Read the whole global log as decoded ``RecordedEvent`` objects."""
    count = 0
    last = 0
    began = time.perf_counter()
    async for event in store.read_all(from_position=0):
        if event.position <= last:
            raise RuntimeError(f"position {event.position} after {last}")
        last = event.position
        count += 1
    seconds = time.perf_counter() - began

    if count != expected:
        raise RuntimeError(f"expected to read {expected} events, read {count}")
    return Measurement(count, seconds, "store.read_all -> RecordedEvent")


def check_wal(path: str) -> None:
    """Fail unless tidings left its SQLite file in WAL mode (persistent in the file)."""
    with closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"tidings SQLite file is in journal_mode={mode}, not WAL")
