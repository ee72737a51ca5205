"""Satellites: a reconnect's sync and a first replication, each beside its HTTP baseline.

Usage::

    python bench/satellite.py [--runs N] [--quick] [--backend sqlite|postgres ...]
                              [--pg-url URL] [--output PATH]

For each server backend a real ``tidings serve`` runs in a child process on a fresh
store (a SQLite file in a new temporary directory; a PostgreSQL schema
``tidings_bench_sat_<pid>`` of the ``--pg-url`` database, dropped at the end). The
client (satellite or remote store) runs in this process; both reach the server over
loopback. ``--runs`` times, taking turns (the baseline first in odd runs):

``sync``
    A satellite records 10,000 single-event transactions (``--quick``: 1,000) while its
    server cannot be reached (untimed), is closed, and is opened again on the same file
    with the server's address; timed: ``await sat.sync()`` until nothing is pending (the
    pushes, the verdicts, and the pull of the events back into the replica).
    Transactions/s.
``online appends``
    The same number of single-event appends through the remote store (``http://``), one
    after another, each acknowledged before the next, as a satellite online would make
    them. Transactions/s.
``catch-up``
    A new satellite's first sync of 100,000 events of its category (``--quick``: 10,000;
    pre-loaded once, untimed, in 100-event appends, with as many events of another
    category between them): events/s landed in its replica.
``read_all``
    The remote store's ``read_all`` of the same category's events, decoded, over HTTP.
    Events/s.

``ratio`` is the satellite's median over its baseline's; the issue's goal is a catch-up
at >= 0.70 of ``read_all``. Each run's result is checked: the server holds every pushed
event once, the replica every event of the category. The load average goes in the footer
and, with every run, in ``bench/results/satellite.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import cell, fixed_width, load_line, machine, med, versions

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import tidings  # noqa: E402
from tests.served import Served, start_server  # noqa: E402
from tidings.satellite import Satellite  # noqa: E402

DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
UNREACHABLE = "http://127.0.0.1:9"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "satellite.json")
    args = parser.parse_args(argv)
    args.backend = args.backend or list(BACKENDS)
    args.transactions = 1_000 if args.quick else 10_000
    args.events = 10_000 if args.quick else 100_000
    return args


async def preload(url: str, events: int) -> None:
    """``events`` of category ``cat`` in 100-event appends, with noise between them."""
    async with await tidings.connect(url) as store:
        for n in range(events // 100):
            async with store.transaction(tidings.Audit("bench")) as tx:
                tx.append(
                    f"cat-{n}", [tidings.NewEvent("Sold", {"n": n, "k": k}) for k in range(100)]
                )
                tx.append(f"noise-{n}", [tidings.NewEvent("Noise", {"n": n})] * 100)


async def sync_run(server: str, folder: Path, run: int, count: int) -> dict[str, Any]:
    file = f"sqlite:///{folder / f'push-{run}.db'}"
    sid = f"bench-{os.getpid()}-{run}"
    async with Satellite(file, UNREACHABLE, [f"p{run}"], satellite_id=sid) as sat:
        for n in range(count):
            await sat.append(f"p{run}-{n % 100}", [tidings.NewEvent("Sold", {"n": n})])
    async with Satellite(file, server, [f"p{run}"], satellite_id=sid, timeout=120) as sat:
        began = time.perf_counter()
        status = await sat.sync(timeout=600)
        while status.pending:
            status = await sat.sync(timeout=600)
        seconds = time.perf_counter() - began
        replicated = sum([1 async for _ in sat.read_all()])
    async with await tidings.connect(server) as remote:
        landed = sum([1 async for _ in remote.read_all(filter=tidings.Filter([f"p{run}"]))])
    if landed != count or replicated != count:
        raise RuntimeError(f"sync: {landed} on the server, {replicated} replicated, of {count}")
    return {"seconds": seconds, "rate": count / seconds}


async def online_run(server: str, run: int, count: int) -> dict[str, Any]:
    async with await tidings.connect(server) as remote:
        began = time.perf_counter()
        for n in range(count):
            await remote.append(f"o{run}-{n % 100}", [tidings.NewEvent("Sold", {"n": n})])
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "rate": count / seconds}


async def catchup_run(server: str, folder: Path, run: int, events: int) -> dict[str, Any]:
    file = f"sqlite:///{folder / f'catch-{run}.db'}"
    async with Satellite(
        file, server, ["cat"], satellite_id=f"c-{os.getpid()}-{run}", timeout=120
    ) as sat:
        began = time.perf_counter()
        await sat.sync(timeout=600)
        seconds = time.perf_counter() - began
        got = sum([1 async for _ in sat.read_all()])
    if got != events:
        raise RuntimeError(f"catch-up: {got} replicated of {events}")
    return {"seconds": seconds, "rate": events / seconds}


async def read_run(server: str, events: int) -> dict[str, Any]:
    async with await tidings.connect(server) as remote:
        began = time.perf_counter()
        got = sum([1 async for _ in remote.read_all(filter=tidings.Filter(["cat"]))])
        seconds = time.perf_counter() - began
    if got != events:
        raise RuntimeError(f"read_all: {got} of {events}")
    return {"seconds": seconds, "rate": events / seconds}


def server_store(backend: str, args: argparse.Namespace, folder: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'server.db'}", None
    schema = f"tidings_bench_sat_{os.getpid()}"
    joiner = "&" if "?" in args.pg_url else "?"
    return f"{args.pg_url}{joiner}schema={schema}", schema


async def drop_schema(pg_url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_url.split("?", 1)[0])
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    steps: dict[str, list[dict[str, Any]]] = {
        "sync": [],
        "online appends": [],
        "catch-up": [],
        "read_all": [],
    }
    with tempfile.TemporaryDirectory(prefix="tidings-bench-sat-") as directory:
        folder = Path(directory)
        store, schema = server_store(backend, args, folder)
        server: Served = start_server(store)
        try:
            asyncio.run(preload(server.url, args.events))
            for run in range(1, args.runs + 1):
                url, n, events = server.url, args.transactions, args.events
                pairs: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]] = [
                    ("online appends", functools.partial(online_run, url, run, n)),
                    ("sync", functools.partial(sync_run, url, folder, run, n)),
                    ("read_all", functools.partial(read_run, url, events)),
                    ("catch-up", functools.partial(catchup_run, url, folder, run, events)),
                ]
                if run % 2 == 0:  # take turns: the satellite first in even runs
                    pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
                for name, make in pairs:
                    load = os.getloadavg()[0]
                    result = asyncio.run(make())
                    result["load_at_start"] = load
                    steps[name].append(result)
                    print(f"{NAMES[backend]} run {run} {name}: {result['rate']:,.0f}/s", flush=True)
        finally:
            server.stop()
            if schema is not None:
                asyncio.run(drop_schema(args.pg_url, schema))
    return {"backend": backend, "steps": steps}


def render(rows: list[dict[str, Any]]) -> str:
    lines = [["server", "workload", "satellite /s", "baseline", "baseline /s", "ratio"]]
    for row in rows:
        steps = row["steps"]
        for mine, base, unit in (("sync", "online appends", "tx"), ("catch-up", "read_all", "ev")):
            ours = [r["rate"] for r in steps[mine]]
            theirs = [r["rate"] for r in steps[base]]
            m, t = med(ours), med(theirs)
            ratio = f"{m / t:.2f}" if m and t else "-"
            lines.append(
                [NAMES[row["backend"]], f"{mine} ({unit})", cell(ours), base, cell(theirs), ratio]
            )
    return "\n".join(fixed_width(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before = os.getloadavg()
    began = time.perf_counter()
    rows = [run_backend(backend, args) for backend in args.backend]
    after = os.getloadavg()
    total = time.perf_counter() - began
    print()
    print(render(rows))
    print(
        f"(medians of {args.runs} run(s), min-max in brackets; sync: {args.transactions:,} "
        f"single-event transactions pushed after a reconnect and pulled back; catch-up: "
        f"{args.events:,} events of one category among as many others)"
    )
    starts = [r["load_at_start"] for row in rows for runs in row["steps"].values() for r in runs]
    print(load_line(before, after, starts, f"; {total:.0f} s in all"))
    pg_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pg_version = subprocess.run(
            ["psql", "-At", "-c", "show server_version", args.pg_url.split("?", 1)[0]],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(before, after),
        "versions": versions(pg_version or None),
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "transactions": args.transactions,
            "events": args.events,
        },
        "total_seconds": round(total, 1),
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
