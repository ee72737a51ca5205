"""Where the time of a tidings append goes: wall-time probes around each phase.

Usage::

    python bench/append_profile.py [--backend sqlite|postgres ...] [--workload append_1|append_100 ...]
                                   [--events N] [--cprofile] [--pg-url URL] [--sqlite-dir DIR]

Not part of ``make bench``: a tool for reading where an append's time goes. It runs a
workload of ``ceilings.py`` (64 writers of single events, 8 writers of 100-event appends,
one writer of 100-event appends) on a fresh store, with tidings' phases wrapped in
``perf_counter`` probes:

``prepare``
    ``StoreFront._prepare``: validation and JSON encoding (``codec.prepare_append``), on
    the calling task.
``plan``
    ``planner.plan_batch`` (the decision, no I/O); on SQLite also the reads it needs
    (head, stream versions), reported apart as ``plan reads``.
``write`` / ``round trip``
    SQLite: ``_write_plan`` (parameters built, the multi-row ``INSERT``s, the upserts and
    the head update). PostgreSQL: the ``write_batch`` call (``Connection.fetchval``: the
    client encoding the arrays, the server running the function, the commit's WAL
    flush), and the server's own time in the function (``pg_stat_user_functions``, with
    ``track_functions = pl`` on the scratch database).
``begin + commit``
    SQLite: the rest of ``_write_batch``, i.e. ``BEGIN IMMEDIATE`` and ``COMMIT`` (the
    WAL ``fsync`` at ``synchronous=FULL``).

Per event µs of each phase are its summed wall time over the events; with two
PostgreSQL writer tasks in flight, phases overlap and can add up to more than the
elapsed µs per event. ``--cprofile`` also prints the top functions of a cProfile run of
the same workload (a separate run: the profiler slows it ~2x).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ceilings import WORKLOADS, shape

BENCH = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append")
    parser.add_argument("--events", type=int, help="events per workload (default ceilings')")
    parser.add_argument("--cprofile", action="store_true", help="also a cProfile run")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    args.backend = args.backend or ["sqlite", "postgres"]
    args.workload = args.workload or list(WORKLOADS)
    return args


class Probes:
    """Summed wall seconds and calls per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Any) -> Any:
        seconds, calls = self.seconds, self.calls

        def probe(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - began
                calls[name] += 1

        return probe

    def wrap_async(self, name: str, fn: Any) -> Any:
        seconds, calls = self.seconds, self.calls

        async def probe(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - began
                calls[name] += 1

        return probe


async def run(
    backend: str, url: str, writers: int, batch: int, events: int, profile: bool
) -> dict[str, Any]:
    from subject_tidings import append
    from workloads import Spec

    import tidings
    from tidings.store import postgres as pg_module
    from tidings.store import sqlite as sqlite_module

    probes = Probes()
    module = sqlite_module if backend == "sqlite" else pg_module
    original_plan = module.plan_batch
    module.plan_batch = probes.wrap("plan", original_plan)
    restore: list[Any] = []
    try:
        store = await tidings.connect(url, notify=None)
        async with store:
            store._prepare = probes.wrap("prepare", store._prepare)  # type: ignore[method-assign]
            if backend == "sqlite":
                inner_plan = store._plan  # type: ignore[attr-defined]
                store._plan = probes.wrap("plan + plan reads", inner_plan)  # type: ignore[attr-defined]
                store._write_plan = probes.wrap("write", store._write_plan)  # type: ignore[attr-defined]
                store._write_batch = probes.wrap("writer batch", store._write_batch)  # type: ignore[attr-defined]
            else:
                import asyncpg

                fetchval = asyncpg.connection.Connection.fetchval
                restore.append(fetchval)
                probe = probes.wrap_async("round trip", fetchval)

                async def counted(self: Any, query: str, *args: Any, **kw: Any) -> Any:
                    if "write_batch" in query:
                        return await probe(self, query, *args, **kw)
                    return await fetchval(self, query, *args, **kw)

                asyncpg.connection.Connection.fetchval = counted  # type: ignore[method-assign]
                store._apply = probes.wrap_async("apply", store._apply)  # type: ignore[attr-defined]
                store._write_batch = probes.wrap_async("writer batch", store._write_batch)  # type: ignore[attr-defined]
            spec = Spec("tidings", backend, "append", events, writers, batch, "", 600.0)
            profiler = cProfile.Profile() if profile else None
            cpu = time.process_time()
            if profiler:
                profiler.enable()
            measured = await append(store, spec)
            if profiler:
                profiler.disable()
            cpu = time.process_time() - cpu
    finally:
        module.plan_batch = original_plan
        if restore:
            import asyncpg

            asyncpg.connection.Connection.fetchval = restore[0]  # type: ignore[method-assign]
    result: dict[str, Any] = {
        "events": measured.events,
        "seconds": measured.seconds,
        "cpu": cpu,
        "phases": dict(probes.seconds),
        "calls": dict(probes.calls),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["cprofile"] = out.getvalue()
    return result


async def pg_function_time(admin_url: str, database: str) -> float | None:
    """Seconds the server spent in write_batch (pg_stat_user_functions), after the
    store's backends have exited and flushed their statistics."""
    import asyncpg

    await asyncio.sleep(0.5)
    conn = await asyncpg.connect(admin_url.rsplit("/", 1)[0] + f"/{database}")
    try:
        value = await conn.fetchval(
            "SELECT total_time FROM pg_stat_user_functions WHERE funcname = 'write_batch'"
        )
    finally:
        await conn.close()
    return None if value is None else float(value) / 1000


def report(backend: str, workload: str, result: dict[str, Any], server: float | None) -> None:
    events = result["events"]
    per = {k: 1e6 * v / events for k, v in result["phases"].items()}
    elapsed = 1e6 * result["seconds"] / events
    print(
        f"\n{backend} {workload}: {events:,} events, {events / result['seconds']:,.0f} ev/s, "
        f"{elapsed:.1f} µs/event elapsed, client CPU {1e6 * result['cpu'] / events:.1f} µs/event "
        f"({100 * result['cpu'] / result['seconds']:.0f} %), "
        f"{events / max(result['calls'].get('writer batch', 1), 1):.0f} events/commit"
    )
    if backend == "sqlite":
        reads = per.get("plan + plan reads", 0) - per.get("plan", 0)
        rest = per["writer batch"] - per.get("plan + plan reads", 0) - per.get("write", 0)
        lines = [
            ("prepare (validate, encode)", per.get("prepare", 0)),
            ("plan (plan_batch)", per.get("plan", 0)),
            ("plan reads (head, versions)", reads),
            ("write (params, INSERTs, upserts, head)", per.get("write", 0)),
            ("BEGIN IMMEDIATE + COMMIT (fsync)", rest),
            ("writer thread, whole batch", per["writer batch"]),
        ]
    else:
        server_us = None if server is None else 1e6 * server / events
        trip = per.get("round trip", 0)
        lines = [
            ("prepare (validate, encode)", per.get("prepare", 0)),
            ("plan (plan_batch)", per.get("plan", 0)),
            ("_apply args (Python lists)", per.get("apply", 0) - trip),
            ("write_batch round trip", trip),
            ("  of it: server in write_batch", server_us or 0),
            ("  of it: the rest (encode, commit flush, wire)", trip - (server_us or 0)),
            ("writer batch (acquire, plan, apply)", per["writer batch"]),
        ]
    for name, value in lines:
        print(f"  {name:48} {value:8.1f} µs/event")
    if "cprofile" in result:
        print(result["cprofile"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from run import Postgres, sqlite_scratch

    postgres = Postgres(args.pg_url)
    print(f"load average {os.getloadavg()}", flush=True)
    for backend in args.backend:
        for workload in args.workload:
            writers, batch, events = shape(backend, workload, False)
            events = args.events or events
            for profile in [False, True] if args.cprofile else [False]:
                if backend == "sqlite":
                    with sqlite_scratch(args.sqlite_dir) as path:
                        url = f"sqlite:///{path}?synchronous=full"
                        result = asyncio.run(run(backend, url, writers, batch, events, profile))
                    server = None
                else:
                    with postgres.scratch() as name:
                        import psycopg

                        with psycopg.connect(
                            autocommit=True, **{**postgres.settings, "dbname": postgres.admin_db}
                        ) as conn:
                            conn.execute(f'ALTER DATABASE "{name}" SET track_functions = pl')
                        pg = postgres.settings
                        url = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{name}"
                        result = asyncio.run(run(backend, url, writers, batch, events, profile))
                        server = asyncio.run(pg_function_time(url, name))
                report(backend, workload + (" (cProfile)" if profile else ""), result, server)
    print(f"\nload average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
