"""Appends beside the database's own ceiling: tidings against plain sqlite3 and asyncpg
writing the same rows into tidings' own schema, in one run.

Usage::

    python bench/ceilings.py [--runs N] [--quick] [--backend sqlite|postgres ...]
                             [--workload append_1|append_100|append_100_lone ...]
                             [--pg-url URL] [--sqlite-dir DIR] [--output PATH]

Workloads (event counts as ``workloads.SHAPES``; ``--quick`` a tenth):

``append_1``
    64 writers, each appending single events to its own stream (PostgreSQL 20,000
    events, SQLite 30,000).
``append_100``
    8 writers, each appending 100-event batches to its own stream (200,000 events).
``append_100_lone``
    One writer appending 100-event batches, one after another (100,000 events).

Sides, each on a fresh store per run (a SQLite file in a new temp dir, or a PostgreSQL
database ``tidings_bench_<pid>_<n>`` with tidings' schema ``tidings``), each a child
process of its own (this script with ``--child``), taking turns run by run:

``tidings``
    As ``subject_tidings.append`` (asyncio tasks sharing one store, ``store.append`` with
    an exact expected version), but with every append's ``NewEvent`` list built before
    the clock, as the raw sides' rows are (``--harness``: built on the clock, as ``run.py``
    does; that costs ~5 µs an event here). The child counts tidings' commits (its
    writer's batches), so the table shows the rows per commit tidings reached.
``sqlite3`` (SQLite)
    One ``sqlite3`` connection on a file made and migrated by tidings (WAL,
    ``synchronous=FULL``), writing what tidings' writer thread writes for a batch:
    ``BEGIN IMMEDIATE``, the event rows in multi-row ``INSERT`` statements of 100 rows,
    the streams' upserts, the head row's update, ``COMMIT``. A commit holds what tidings'
    writer finds queued when every writer waits: writers x events per append rows (64,
    800, 100).
``asyncpg_free`` / ``asyncpg_head`` / ``asyncpg_head2`` (PostgreSQL)
    asyncpg connections on tidings' schema, each committing one prepared statement per
    transaction, as tidings' one ``write_batch`` call: the events through ``unnest``
    and the streams' upserts. A connection stands for every n-th writer, and a commit
    holds the next append of each of them. ``asyncpg_free``: 8 connections (1 for the
    lone writer), positions assigned before the clock, so the connections insert in
    parallel (the unserialised ceiling: readers of such a log would see gaps).
    ``asyncpg_head``: the same 8, but the statement first moves the head row
    (``UPDATE ... RETURNING``), which serialises the writers as tidings' head lock
    does. ``asyncpg_head2``: the head row with 2 connections, batching as tidings' two
    writer tasks do (each takes half of what waits: 32 rows a commit for 64 single
    event writers, 400 for 8 writers of 100).

Rows, ids (UUID v7, as tidings makes), JSON texts and connections are built before the
clock starts; the clock covers the commits only. After every run the table is counted
(and the head checked). Figures are medians of ``--runs`` with min-max; ``tidings /
ceiling`` is the ratio of medians. The load average goes in the footer and, per run, in
the JSON (``bench/results/ceilings.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import cell, fixed_width, load_line, machine, med, versions

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
CHILD_TIMEOUT = 600.0
PG_CONNECTIONS = 8
SQLITE_ROWS_PER_INSERT = 100  # tidings' _ROWS_PER_INSERT

# workload: (writers, events per append, events on PostgreSQL, events on SQLite)
WORKLOADS: dict[str, tuple[int, int, int, int]] = {
    "append_1": (64, 1, 20_000, 30_000),
    "append_100": (8, 100, 200_000, 200_000),
    "append_100_lone": (1, 100, 100_000, 100_000),
}
SIDES = {
    "sqlite": ("tidings", "sqlite3"),
    "postgres": ("tidings", "asyncpg_free", "asyncpg_head", "asyncpg_head2"),
}
PG_SIDES = {  # side: (connections at most, whether the head row serialises them)
    "asyncpg_free": (PG_CONNECTIONS, False),
    "asyncpg_head": (PG_CONNECTIONS, True),
    "asyncpg_head2": (2, True),  # tidings' two writer tasks, each taking half the queue
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the events")
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "ceilings.json")
    parser.add_argument(
        "--harness",
        action="store_true",
        help="tidings' clock also covers building the events (run.py's harness)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a measurement's request (JSON)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.backend = args.backend or list(BACKENDS)
    args.workload = args.workload or list(WORKLOADS)
    return args


def shape(backend: str, workload: str, quick: bool) -> tuple[int, int, int]:
    """(writers, events per append, events) of a workload on a backend."""
    writers, batch, pg_events, sqlite_events = WORKLOADS[workload]
    events = pg_events if backend == "postgres" else sqlite_events
    return writers, batch, events // 10 if quick else events


def connections(side: str, writers: int) -> int:
    """The raw PostgreSQL side's connections (never more than the writers)."""
    return min(PG_SIDES[side][0], writers)


def rows_per_commit(backend: str, side: str, writers: int, batch: int) -> int:
    """The rows a raw side commits at once."""
    if backend == "sqlite":
        return writers * batch
    return writers // connections(side, writers) * batch


def sides_of(backend: str, writers: int) -> tuple[str, ...]:
    """The sides of a workload: one raw side per distinct shape (the lone writer's
    head-row sides are the same one connection)."""
    if backend == "sqlite":
        return SIDES[backend]
    seen: set[tuple[int, bool]] = set()
    out = ["tidings"]
    for side in SIDES[backend][1:]:
        key = (connections(side, writers), PG_SIDES[side][1])
        if key not in seen:
            seen.add(key)
            out.append(side)
    return tuple(out)


def label(backend: str, side: str, writers: int, batch: int) -> str:
    rows = rows_per_commit(backend, side, writers, batch)
    if side == "sqlite3":
        return f"sqlite3, {rows} rows/commit"
    head = "head row" if PG_SIDES[side][1] else "no head"
    conns = connections(side, writers)
    return f"asyncpg {conns} conn{'s' if conns > 1 else ''}, {rows} rows/commit, {head}"


# --- the child: one measurement --------------------------------------------------------------


def event_rows(writers: int, batch: int, events: int) -> list[list[tuple[str, int, str]]]:
    """Per append, in the order the writers make them (round robin), its events as
    (stream, version, data JSON): writer w appends to ``order-w`` as subject_tidings."""
    from workloads import event_data

    from tidings.codec import encode_json

    appends = events // batch
    per_writer = [appends // writers + (w < appends % writers) for w in range(writers)]
    out: list[list[tuple[str, int, str]]] = []
    for k in range(max(per_writer)):
        for w in range(writers):
            if k < per_writer[w]:
                n = k * batch
                out.append(
                    [(f"order-{w}", n + i, encode_json(event_data(n + i))) for i in range(batch)]
                )
    return out


async def run_tidings(request: dict[str, Any]) -> dict[str, Any]:
    from subject_tidings import append
    from workloads import Spec

    import tidings

    writers, batch, events = request["writers"], request["batch"], request["events"]
    spec = Spec("tidings", request["backend"], request["workload"], events, writers, batch, "")
    spec = Spec(**{**spec.to_json(), "max_seconds": 120.0})
    store = await tidings.connect(request["url"], notify=None)
    commits = 0
    async with store:
        # Count the writer's commits: one per batch (_write_batch), whatever the backend.
        inner = store._write_batch  # type: ignore[attr-defined]
        if request["backend"] == "sqlite":

            def counted(batch_: Any) -> Any:
                nonlocal commits
                commits += 1
                return inner(batch_)

            store._write_batch = counted  # type: ignore[attr-defined]
        else:

            async def counted_async(groups: Any) -> Any:
                nonlocal commits
                commits += 1
                return await inner(groups)

            store._write_batch = counted_async  # type: ignore[attr-defined]
        if request.get("harness"):
            cpu = time.process_time()
            measured = await append(store, spec)
            cpu = time.process_time() - cpu
        else:
            measured, cpu = await append_prebuilt(store, writers, batch, events)
    if measured.events != events:
        raise RuntimeError(f"tidings wrote {measured.events:,} of {events:,} events")
    return {
        "events": measured.events,
        "seconds": measured.seconds,
        "commits": commits,
        "cpu_pct": 100 * cpu / measured.seconds,
    }


async def append_prebuilt(store: Any, writers: int, batch: int, events: int) -> tuple[Any, float]:
    """``subject_tidings.append`` with every append's ``NewEvent`` list built before the
    clock, as the raw sides' rows are: the clock covers ``store.append`` only."""
    from workloads import EVENT_TYPE, Measurement, event_data

    import tidings

    appends = events // batch
    per_writer = [appends // writers + (w < appends % writers) for w in range(writers)]
    prebuilt = [
        [
            [tidings.NewEvent(EVENT_TYPE, event_data(k * batch + i)) for i in range(batch)]
            for k in range(per_writer[w])
        ]
        for w in range(writers)
    ]

    async def writer(w: int) -> None:
        stream = f"order-{w}"
        expected: tidings.Expected = tidings.NO_STREAM
        for batch_ in prebuilt[w]:
            result = await store.append(stream, batch_, expected_version=expected)
            expected = result.last_version

    cpu = time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    head = await store.head()
    if head != events:
        raise RuntimeError(f"wrote {events} events but the log's head is {head}")
    return Measurement(events, seconds, "store.append of prebuilt NewEvents"), cpu


async def make_schema(url: str) -> None:
    """Create and migrate an empty tidings store, then close it."""
    import tidings

    store = await tidings.connect(url, notify=None)
    await store.close()


def run_sqlite3(request: dict[str, Any]) -> dict[str, Any]:
    from tidings.codec import new_event_id

    path = request["path"]
    asyncio.run(make_schema(f"sqlite:///{path}?synchronous=full"))
    writers, batch, events = request["writers"], request["batch"], request["events"]
    appends = event_rows(writers, batch, events)
    per_commit = writers  # appends per commit: one per writer
    commits: list[tuple[list[list[Any]], list[tuple[str, int]], int]] = []
    position = 0
    built_ms = time.time_ns() // 1_000_000
    for first in range(0, len(appends), per_commit):
        params: list[Any] = []
        last: dict[str, int] = {}
        for events_ in appends[first : first + per_commit]:
            for stream, version, data in events_:
                position += 1
                params.append(
                    (
                        position,
                        new_event_id().bytes,
                        stream,
                        version,
                        "LineAdded",
                        data,
                        "{}",
                        built_ms,
                        stream.split("-", 1)[0],
                        None,
                    )
                )
                last[stream] = version
        statements = [
            [v for row in params[i : i + SQLITE_ROWS_PER_INSERT] for v in row]
            for i in range(0, len(params), SQLITE_ROWS_PER_INSERT)
        ]
        commits.append((statements, list(last.items()), position))
    one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    insert = {
        n: "INSERT INTO tidings_events (position, id, stream, version, type, data, metadata,"
        f" time_ms, category, audit_id) VALUES {', '.join([one] * n)}"
        for n in {len(s) // 10 for c in commits for s in c[0]}
    }
    upsert = (
        "INSERT INTO tidings_streams (name, version) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET version = excluded.version"
    )
    set_head = "UPDATE tidings_head SET position = ?, time_ms = ? WHERE id = 1"
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=256)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if mode.lower() != "wal" or sync != 2:
            raise RuntimeError(f"journal_mode={mode}, synchronous={sync}: not WAL and FULL")
        cpu = time.process_time()
        began = time.perf_counter()
        for statements, streams, head in commits:
            now_ms = time.time_ns() // 1_000_000
            conn.execute("BEGIN IMMEDIATE")
            for values in statements:
                conn.execute(insert[len(values) // 10], values)
            conn.executemany(upsert, streams)
            conn.execute(set_head, (head, now_ms))
            conn.execute("COMMIT")
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
        count = conn.execute("SELECT count(*) FROM tidings_events").fetchone()[0]
        head = conn.execute("SELECT position FROM tidings_head").fetchone()[0]
    finally:
        conn.close()
    if count != events or head != events:
        raise RuntimeError(f"sqlite3 wrote {count:,} rows, head {head:,}, of {events:,}")
    return {
        "events": count,
        "seconds": seconds,
        "commits": len(commits),
        "cpu_pct": 100 * cpu / seconds,
    }


PG_FREE = """
WITH e AS (
    INSERT INTO tidings.events (position, id, stream, version, type, data, metadata, time, category)
    SELECT p, i, s, v, t, d, '{}'::json, now(), c
    FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::json[], $7::text[])
         AS e(p, i, s, v, t, d, c)
)
INSERT INTO tidings.streams (name, version) SELECT * FROM unnest($8::text[], $9::bigint[])
ON CONFLICT (name) DO UPDATE SET version = excluded.version
"""

PG_HEAD = """
WITH h AS (
    UPDATE tidings.head SET position = position + cardinality($2::uuid[]), time = now()
    WHERE id = 1 RETURNING position - cardinality($2::uuid[]) AS base
), e AS (
    INSERT INTO tidings.events (position, id, stream, version, type, data, metadata, time, category)
    SELECT h.base + p, i, s, v, t, d, '{}'::json, now(), c
    FROM h, unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::json[], $7::text[])
         AS e(p, i, s, v, t, d, c)
), s AS (
    INSERT INTO tidings.streams (name, version) SELECT * FROM unnest($8::text[], $9::bigint[])
    ON CONFLICT (name) DO UPDATE SET version = excluded.version
)
SELECT base FROM h
"""


async def run_asyncpg(request: dict[str, Any]) -> dict[str, Any]:
    import asyncpg

    from tidings.codec import new_event_id

    url, side = request["url"], request["side"]
    await make_schema(url)
    writers, batch, events = request["writers"], request["batch"], request["events"]
    conns = connections(side, writers)
    appends = event_rows(writers, batch, events)
    # Connection c stands for writers c, c + conns, ...: each of its commits holds the
    # next append of each of them (round robin order keeps a stream's versions in order).
    plans: list[list[tuple[Any, ...]]] = [[] for _ in range(conns)]
    queues: list[list[list[tuple[str, int, str]]]] = [[] for _ in range(conns)]
    for k, events_ in enumerate(appends):
        queues[(k % writers) % conns].append(events_)
    per_commit = writers // conns
    position = 0
    for c, queue in enumerate(queues):
        for first in range(0, len(queue), per_commit):
            rows = [row for events_ in queue[first : first + per_commit] for row in events_]
            last: dict[str, int] = {}
            for stream, version, _ in rows:
                last[stream] = version
            if not PG_SIDES[side][1]:
                offsets = list(range(position + 1, position + len(rows) + 1))
                position += len(rows)
            else:
                offsets = list(range(1, len(rows) + 1))
            plans[c].append(
                (
                    offsets,
                    [new_event_id() for _ in rows],
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    ["LineAdded"] * len(rows),
                    [r[2] for r in rows],
                    [r[0].split("-", 1)[0] for r in rows],
                    list(last),
                    list(last.values()),
                )
            )
    sql = PG_HEAD if PG_SIDES[side][1] else PG_FREE
    pool = [await asyncpg.connect(url) for _ in range(conns)]
    try:
        statements = [await conn.prepare(sql) for conn in pool]

        async def writer(c: int) -> None:
            statement = statements[c]
            for args in plans[c]:
                await statement.fetch(*args)

        cpu = time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(writer(c) for c in range(conns)))
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
        count = await pool[0].fetchval("SELECT count(*) FROM tidings.events")
        head = await pool[0].fetchval("SELECT position FROM tidings.head")
    finally:
        for conn in pool:
            await conn.close()
    if count != events or (PG_SIDES[side][1] and head != events):
        raise RuntimeError(f"{side} wrote {count:,} rows, head {head:,}, of {events:,}")
    return {
        "events": count,
        "seconds": seconds,
        "commits": sum(len(p) for p in plans),
        "cpu_pct": 100 * cpu / seconds,
    }


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    side = request["side"]
    if side == "tidings":
        result = asyncio.run(run_tidings(request))
    elif side == "sqlite3":
        result = run_sqlite3(request)
    else:
        result = asyncio.run(run_asyncpg(request))
    result["load_at_start"] = load
    result["rate"] = result["events"] / result["seconds"]
    return result


# --- the runner ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from run import Postgres

        self.args = args
        self.postgres = Postgres(args.pg_url)
        self.errors: list[str] = []

    def pg_url(self, database: str) -> str:
        return self.postgres.url(database)

    @contextlib.contextmanager
    def fresh(self, backend: str) -> Iterator[dict[str, str]]:
        if backend == "sqlite":
            from run import sqlite_scratch

            with sqlite_scratch(self.args.sqlite_dir) as path:
                yield {"path": path, "url": f"sqlite:///{path}?synchronous=full"}
        else:
            with self.postgres.scratch() as name:
                yield {"url": self.pg_url(name)}

    def child(self, request: dict[str, Any]) -> dict[str, Any]:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"timed out after {CHILD_TIMEOUT:g} s") from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
        found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return found

    def run_row(self, backend: str, workload: str) -> dict[str, Any]:
        writers, batch, events = shape(backend, workload, self.args.quick)
        sides = sides_of(backend, writers)
        row: dict[str, Any] = {
            "backend": backend,
            "workload": workload,
            "writers": writers,
            "batch": batch,
            "events": events,
            "sides": {side: [] for side in sides},
            "labels": {side: label(backend, side, writers, batch) for side in sides[1:]},
            "errors": {},
        }
        for run in range(1, self.args.runs + 1):
            order = sides if run % 2 else sides[::-1]
            for side in order:
                if side in row["errors"]:
                    continue
                request = {
                    "side": side,
                    "backend": backend,
                    "workload": workload,
                    "writers": writers,
                    "batch": batch,
                    "events": events,
                    "harness": self.args.harness,
                }
                began = time.perf_counter()
                try:
                    with self.fresh(backend) as where:
                        result = self.child({**request, **where})
                except Exception as exc:
                    message = str(exc) or type(exc).__name__
                    row["errors"][side] = message
                    self.errors.append(f"{backend} {workload} {side}: {message}")
                    print(
                        f"{NAMES[backend]:10} {workload:15} {side:13} ERROR {message}", flush=True
                    )
                    continue
                row["sides"][side].append(result)
                print(
                    f"{NAMES[backend]:10} {workload:15} {side:13} {run}/{self.args.runs} "
                    f"{result['rate']:,.0f} ev/s ({result['events']:,} in {result['seconds']:.2f} s, "
                    f"{result['events'] / max(result['commits'], 1):.0f} rows/commit, "
                    f"CPU {result['cpu_pct']:.0f} %, load {result['load_at_start']:.1f})  "
                    f"[{time.perf_counter() - began:.0f} s]",
                    flush=True,
                )
        return row


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "backend",
            "workload",
            "events",
            "tidings ev/s",
            "rows/commit",
            "ceiling",
            "ceiling ev/s",
            "tidings/ceiling",
        )
    ]
    for row in rows:
        ours = row["sides"]["tidings"]
        ours_rate = med([r["rate"] for r in ours])
        per_commit = med([r["events"] / max(r["commits"], 1) for r in ours])
        name = f"{row['workload']} ({row['writers']}x{row['batch']})"
        for i, side in enumerate(row["labels"]):
            theirs = row["sides"][side]
            theirs_rate = med([r["rate"] for r in theirs])
            ratio = f"{ours_rate / theirs_rate:.2f}" if ours_rate and theirs_rate else "-"
            first = i == 0
            lines.append(
                (
                    NAMES[row["backend"]] if first else "",
                    name if first else "",
                    f"{row['events']:,}" if first else "",
                    ("ERROR" if "tidings" in row["errors"] else cell([r["rate"] for r in ours]))
                    if first
                    else "",
                    (f"{per_commit:.0f}" if per_commit else "-") if first else "",
                    row["labels"][side],
                    "ERROR" if side in row["errors"] else cell([r["rate"] for r in theirs]),
                    ratio,
                )
            )
    return "\n".join(fixed_width(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    load_before = os.getloadavg()
    began = time.perf_counter()
    bench = Bench(args)
    pg_version = None
    rows: list[dict[str, Any]] = []
    for backend in args.backend:
        if backend == "postgres":
            try:
                bench.postgres.drop_stale()
                pg_version = bench.postgres.server_version()
            except Exception as exc:
                message = f"PostgreSQL unavailable at {args.pg_url}: {type(exc).__name__}: {exc}"
                print(message, file=sys.stderr)
                bench.errors.append(message)
                continue
        for workload in args.workload:
            rows.append(bench.run_row(backend, workload))
    load_after = os.getloadavg()
    total = time.perf_counter() - began

    print()
    print(render(rows))
    print(
        f"(medians of {args.runs} run(s), min-max in brackets; rows/commit: tidings' events "
        "over its writer's commits; tidings/ceiling: ratio of medians; durable settings: "
        "SQLite WAL + synchronous=FULL, PostgreSQL synchronous_commit as the server has it)"
    )
    starts = [r["load_at_start"] for row in rows for runs in row["sides"].values() for r in runs]
    print(load_line(load_before, load_after, starts, f"; {total:.0f} s in all"))
    for message in bench.errors:
        print(f"ERROR {message}", file=sys.stderr)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, load_after),
        "versions": versions(pg_version),
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "backends": args.backend,
            "workloads": args.workload,
            "pg_connections": PG_CONNECTIONS,
            "harness": args.harness,
        },
        "total_seconds": round(total, 1),
        "errors": bench.errors,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
