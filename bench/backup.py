"""Backup and restore: tidings' own beside each backend's raw tools, on one big store.

Usage::

    python bench/backup.py [--runs N] [--quick] [--events N] [--backend sqlite|postgres ...]
                           [--pg-url URL] [--sqlite-dir DIR] [--output PATH]

For each source backend, one store of 1,000,000 events (``--quick``: 100,000) is
pre-loaded once (untimed, and timed for the record): ~210-byte ``workloads.event_data``
events, 100-event appends to 10,000 streams (``--quick``: 1,000), committed with
tidings' own transactions of ``PRELOAD_APPENDS`` appends (5,000 events) each. A SQLite
source is a file in a new temporary directory; a PostgreSQL source is a fresh database
``tidings_bench_<pid>_<n>`` (schema ``tidings``, tidings' default), ``VACUUM ANALYZE``d
after the load so that autovacuum does not start in the middle of a measurement. Then,
``--runs`` times, on that same store:

``backup``
    ``await store.backup(file)`` on a store opened in a child process (the call only):
    events/s, MB/s (the file's size over the seconds) and the file's size.
``restore``
    ``await tidings.restore(file, url)`` of that run's file (the whole call: the target
    opened and migrated, checked, written, committed) into an empty store of the same
    backend, and of the other one: a new SQLite file, or a fresh PostgreSQL database.
``sqlite3 backup()`` / ``VACUUM INTO`` (SQLite sources)
    Python's ``sqlite3.Connection.backup`` of the source file into a new file (all pages
    in one step), and ``VACUUM INTO`` a new file, each followed by one ``fsync`` of the
    result (tidings fsyncs its file; ``VACUUM INTO`` does not by itself).
``pg_dump`` / ``pg_restore`` (PostgreSQL sources)
    ``pg_dump -Fc -n tidings`` of the source database into a file, then ``pg_restore
    --single-transaction --no-owner`` of that file into a fresh database (one
    transaction, as tidings' restore).

Raw tools' rates are the store's events over their seconds; ``tidings/raw`` is tidings'
median over the raw tool's (the backup for the raw copies and ``pg_dump``, the
PostgreSQL-to-PostgreSQL restore for ``pg_restore``). Every measurement is a child
process (tidings' and the SQLite copies: this script with ``--child``; ``pg_dump`` and
``pg_restore`` themselves); tidings and the raw tools take turns run by run (tidings
first in odd runs). After every restore and every raw copy the result is opened with
tidings and must hold the source's event count (``count(*)`` of the events table), its
head and its last event (id, stream, version); a backup must report the source's head
and count. Any mismatch fails loudly (the script exits with status 1). Every file and
database made is removed after use. The free disk space is checked first (~1 KB per
event per copy). Figures are medians of ``--runs`` with the min-max; the load average
before and after goes in the footer and, with every run, in the JSON
(``bench/results/backup.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from report import cell, fixed_width, load_line, machine, med, versions

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
PG_SCHEMA = "tidings"  # tidings' default schema: what pg_dump -n dumps
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 100_000
APPEND_EVENTS = 100  # events per append (one stream each)
PRELOAD_APPENDS = 50  # appends per preload transaction (5,000 events a commit)
CHILD_TIMEOUT = 1800.0  # seconds one measurement may take
BYTES_PER_EVENT_COPY = 1024  # the disk estimate: ~1 KB per event per copy
SQLITE_DIR_COPIES = 3  # source file, tidings' backup file, a restored (or copied) file
PG_COPIES = 3  # source database, a restored database, the WAL written meanwhile

# The steps measured, in the table's order, per source backend.
STEPS = {
    "sqlite": ("backup", "sqlite_backup", "vacuum_into", "restore_same", "restore_other"),
    "postgres": ("backup", "pg_dump", "restore_same", "pg_restore", "restore_other"),
}
LABELS = {
    "backup": "tidings backup",
    "restore_same": "tidings restore",
    "restore_other": "tidings restore",
    "sqlite_backup": "sqlite3 Connection.backup()",
    "vacuum_into": "VACUUM INTO",
    "pg_dump": f"pg_dump -Fc -n {PG_SCHEMA}",
    "pg_restore": "pg_restore --single-transaction",
}
COMPARED = {  # raw step: the tidings step it is compared with
    "sqlite_backup": "backup",
    "vacuum_into": "backup",
    "pg_dump": "backup",
    "pg_restore": "restore_same",
}
TIDINGS_STEPS = ("backup", "restore_same", "restore_other")


def other(backend: str) -> str:
    return "postgres" if backend == "sqlite" else "sqlite"


def into(backend: str, step: str) -> str:
    """Where a step of a ``backend`` source writes."""
    if step in ("restore_same", "pg_restore"):
        return NAMES[backend]
    if step == "restore_other":
        return NAMES[other(backend)]
    return "file"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each series (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EVENTS:,} events instead of {FULL_EVENTS:,}"
    )
    parser.add_argument(
        "--events", type=int, help="another store size (a multiple of 100; for smoke tests)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        action="append",
        help="source backends (default both; repeatable)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "backup.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a measurement's request (JSON)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.events is None:
        args.events = QUICK_EVENTS if args.quick else FULL_EVENTS
    elif args.events < APPEND_EVENTS or args.events % APPEND_EVENTS:
        parser.error(f"--events must be a positive multiple of {APPEND_EVENTS}")
    args.backend = args.backend or list(BACKENDS)
    return args


# --- the child: one measurement ----------------------------------------------------------


async def preload(url: str, events: int) -> dict[str, Any]:
    """``events`` events in ``APPEND_EVENTS``-event appends to streams of their own,
    ``PRELOAD_APPENDS`` appends per transaction."""
    from workloads import EVENT_TYPE, event_data

    import tidings

    store = await tidings.connect(url, notify=None)
    async with store:
        began = time.perf_counter()
        streams = events // APPEND_EVENTS
        for first in range(0, streams, PRELOAD_APPENDS):
            async with store.transaction() as tx:
                for s in range(first, min(first + PRELOAD_APPENDS, streams)):
                    n = s * APPEND_EVENTS
                    batch = [
                        tidings.NewEvent(EVENT_TYPE, event_data(n + i))
                        for i in range(APPEND_EVENTS)
                    ]
                    tx.append(f"order-{s}", batch, expected_version=tidings.NO_STREAM)
        seconds = time.perf_counter() - began
        head = await store.head()
    if head != streams * APPEND_EVENTS:
        raise RuntimeError(f"pre-loaded {streams * APPEND_EVENTS} events but the head is {head}")
    return {"seconds": seconds, "head": head, "streams": streams}


async def inspect(url: str) -> dict[str, Any]:
    """What a restored store must match: its event count, head and last event."""
    import tidings

    store = await tidings.connect(url, notify=None)
    async with store:
        head = await store.head()
        tail = [e async for e in store.read_all(from_position=max(head - 1, 0), limit=1)]
    if urlsplit(url).scheme == "sqlite":
        path = urlsplit(url).path[1:]
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            count = conn.execute("SELECT count(*) FROM tidings_events").fetchone()[0]
    else:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=30)
        try:
            count = await conn.fetchval(f"SELECT count(*) FROM {PG_SCHEMA}.events")
        finally:
            await conn.close()
    return {
        "count": count,
        "head": head,
        "last": [str(tail[0].id), tail[0].stream, tail[0].version, tail[0].position]
        if tail
        else None,
    }


async def run_backup(url: str, file: str) -> dict[str, Any]:
    import tidings

    store = await tidings.connect(url, notify=None)
    async with store:
        head = await store.head()
        cpu = time.process_time()
        began = time.perf_counter()
        info = await store.backup(file)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_pct": 100 * cpu / seconds,
        "bytes": info.bytes,
        "events": info.events,
        "position": info.position,
        "head_before": head,
        "info_seconds": info.seconds,
    }


async def run_restore(file: str, url: str) -> dict[str, Any]:
    import tidings

    cpu = time.process_time()
    began = time.perf_counter()
    info = await tidings.restore(file, url)
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_pct": 100 * cpu / seconds,
        "events": info.events,
        "position": info.position,
        "info_seconds": info.seconds,
        "found": await inspect(url),
    }


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sqlite_copy(source: str, copy: str, how: str) -> dict[str, Any]:
    """The raw SQLite copy of the source file: the online backup API or VACUUM INTO,
    then one fsync of the result."""
    cpu = time.process_time()
    began = time.perf_counter()
    with contextlib.closing(sqlite3.connect(source)) as src:
        if how == "sqlite_backup":
            with contextlib.closing(sqlite3.connect(copy)) as dst:
                src.backup(dst)
        else:
            src.execute("VACUUM INTO ?", (copy,))
    fsync_file(copy)
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_pct": 100 * cpu / seconds,
        "bytes": os.path.getsize(copy),
        "found": asyncio.run(inspect(f"sqlite:///{copy}")),
    }


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    op = request["op"]
    if op == "preload":
        result = asyncio.run(preload(request["url"], request["events"]))
    elif op == "inspect":
        result = asyncio.run(inspect(request["url"]))
    elif op == "backup":
        result = asyncio.run(run_backup(request["url"], request["file"]))
    elif op == "restore":
        result = asyncio.run(run_restore(request["file"], request["url"]))
    elif op in ("sqlite_backup", "vacuum_into"):
        result = sqlite_copy(request["source"], request["copy"], op)
    else:
        raise ValueError(f"unknown op {op!r}")
    result["load_at_start"] = load
    return result


# --- the runner ----------------------------------------------------------------------------


def visible(path: Path) -> bool:
    """Whether ``path`` can be looked at (statvfs'd) by this user."""
    try:
        return path.is_dir() and os.access(path, os.X_OK)
    except OSError:
        return False


class Bench:
    """Pre-loads one store per source backend, then runs every step ``--runs`` times."""

    def __init__(self, args: argparse.Namespace) -> None:
        from run import Postgres

        self.args = args
        self.postgres = Postgres(args.pg_url)
        self.pg_problem: str | None = None
        self.errors: list[str] = []
        self.preloads: dict[str, dict[str, Any]] = {}
        self.expected: dict[str, dict[str, Any]] = {}

    # -- where things go

    def check_postgres(self) -> str | None:
        try:
            self.postgres.drop_stale()
            return None
        except Exception as exc:
            return f"PostgreSQL unavailable at {self.args.pg_url}: {type(exc).__name__}: {exc}"

    def pg_url(self, database: str) -> str:
        return self.postgres.url(database)

    def pg_env(self) -> dict[str, str]:
        pg = self.postgres.settings
        env = {**os.environ, "PGHOST": pg["host"], "PGPORT": pg["port"], "PGUSER": pg["user"]}
        if pg["password"]:
            env["PGPASSWORD"] = pg["password"]
        return env

    @contextlib.contextmanager
    def tempdir(self) -> Iterator[str]:
        path = tempfile.mkdtemp(prefix="tidings_bench_backup_", dir=self.args.sqlite_dir)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def fresh_store(self, backend: str) -> Iterator[tuple[str, str]]:
        """An empty place for a store: (tidings URL, SQLite path or PostgreSQL database)."""
        if backend == "sqlite":
            with self.tempdir() as path:
                file = os.path.join(path, "events.db")
                yield f"sqlite:///{file}", file
        else:
            with self.postgres.scratch() as name:
                yield self.pg_url(name), name

    def pg_data_directory(self) -> str | None:
        """The server's data directory, if it is on this machine and can be seen."""
        if self.postgres.settings["host"] not in ("127.0.0.1", "localhost", "::1", ""):
            return None
        try:
            with self.postgres._admin() as conn:
                return str(conn.execute("SHOW data_directory").fetchone()[0])
        except Exception:
            return None

    def check_disk(self) -> tuple[str | None, list[dict[str, Any]]]:
        """None if the disk can take the copies (~1 KB per event each), else why not."""
        per_copy = self.args.events * BYTES_PER_EVENT_COPY
        places: dict[int, dict[str, Any]] = {}

        def need(path: str, copies: int) -> None:
            probe = Path(path)
            while not visible(probe):
                probe = probe.parent
            dev = os.stat(probe).st_dev
            place = places.setdefault(
                dev, {"paths": [], "needed": 0, "free": shutil.disk_usage(probe).free}
            )
            place["paths"].append(path)
            place["needed"] += copies * per_copy

        need(self.args.sqlite_dir, SQLITE_DIR_COPIES)
        if self.pg_problem is None:
            data = self.pg_data_directory()
            if data is not None:
                need(data, PG_COPIES)
        found = list(places.values())
        for place in found:
            if place["free"] < place["needed"]:
                return (
                    f"not enough free disk space for {self.args.events:,} events: "
                    f"{place['free'] / 1e9:.1f} GB free on the filesystem of "
                    f"{', '.join(place['paths'])}, ~{place['needed'] / 1e9:.1f} GB needed "
                    f"(~{BYTES_PER_EVENT_COPY} bytes per event per copy)",
                    found,
                )
        return None, found

    # -- running children

    def child(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"timed out after {CHILD_TIMEOUT:g} s") from exc
        if done.returncode != 0:
            tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
            sys.stderr.write("".join(f"    | {line}\n" for line in tail[-15:]))
            raise RuntimeError(tail[-1] if tail else f"exit status {done.returncode}")
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"no result from the child: {done.stdout.strip()[-300:]!r}")
        found: dict[str, Any] = json.loads(lines[-1])
        return found

    def tool(self, command: list[str]) -> dict[str, Any]:
        """Run a PostgreSQL tool; its wall seconds and CPU %."""
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
                env=self.pg_env(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{command[0]} timed out after {CHILD_TIMEOUT:g} s") from exc
        seconds = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(
                f"{command[0]} exit status {done.returncode}: {done.stderr.strip()[-500:]}"
            )
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"seconds": seconds, "cpu_pct": 100 * cpu / seconds, "load_at_start": load}

    def verify(self, where: str, found: dict[str, Any], source: str) -> None:
        """Fail loudly unless ``found`` (an ``inspect``) matches the source store's."""
        expected = self.expected[source]
        for key in ("count", "head", "last"):
            if found[key] != expected[key]:
                raise RuntimeError(
                    f"{where}: {key} is {found[key]!r}, the source store's is {expected[key]!r}"
                )

    # -- the steps

    def run_backend(self, backend: str) -> dict[str, Any]:
        events = self.args.events
        row: dict[str, Any] = {
            "backend": backend,
            "events": events,
            "preload": None,
            "steps": {step: [] for step in STEPS[backend]},
            "errors": {},
        }
        print(f"\n{NAMES[backend]}: pre-loading {events:,} events ...", flush=True)
        with self.fresh_store(backend) as (url, where):
            try:
                began = time.perf_counter()
                loaded = self.child({"op": "preload", "url": url, "events": events})
                if backend == "postgres":
                    with self.pg_connect(where) as conn:
                        conn.execute("VACUUM ANALYZE")
                took = time.perf_counter() - began
                self.expected[backend] = self.child({"op": "inspect", "url": url})
                if self.expected[backend]["count"] != events:
                    raise RuntimeError(
                        f"the pre-loaded store holds {self.expected[backend]['count']:,} events"
                    )
            except Exception as exc:
                message = f"{backend} pre-load: {exc}"
                self.errors.append(message)
                row["errors"]["preload"] = message
                print(f"ERROR {message}", flush=True)
                return row
            loaded["total_seconds"] = took
            row["preload"] = loaded
            row["expected"] = self.expected[backend]
            size = os.path.getsize(where) if backend == "sqlite" else self.pg_size(where)
            row["source_bytes"] = size
            print(
                f"{NAMES[backend]}: pre-loaded {events:,} events ({loaded['streams']:,} streams) "
                f"in {loaded['seconds']:.1f} s ({events / loaded['seconds']:,.0f} ev/s; "
                f"{took:.1f} s with the process start"
                + (" and VACUUM ANALYZE" if backend == "postgres" else "")
                + f"); the store is {size / 1e6:,.0f} MB",
                flush=True,
            )
            for run in range(1, self.args.runs + 1):
                sides = [self.tidings_steps, self.raw_steps]
                for side in sides if run % 2 else sides[::-1]:
                    side(row, backend, url, where, run)
        return row

    def record(self, row: dict[str, Any], step: str, run: int, work: Any) -> dict[str, Any] | None:
        """Run one step; print and keep its result, or its error (the series then stops)."""
        if step in row["errors"]:
            return None
        backend = row["backend"]
        label = f"{NAMES[backend]:10} {LABELS[step]:32} -> {into(backend, step):10} {run}/{self.args.runs}"
        began = time.perf_counter()
        try:
            result: dict[str, Any] = work()
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            row["errors"][step] = message
            self.errors.append(f"{backend} {step}: {message}")
            print(f"{label} ERROR {message}", flush=True)
            return None
        result["rate"] = row["events"] / result["seconds"]
        row["steps"][step].append(result)
        extra = f", {result['bytes'] / 1e6:,.0f} MB" if "bytes" in result else ""
        print(
            f"{label} {result['rate']:,.0f} ev/s ({result['seconds']:.2f} s{extra}, "
            f"CPU {result['cpu_pct']:.0f} %, load {result['load_at_start']:.1f})  "
            f"[{time.perf_counter() - began:.0f} s]",
            flush=True,
        )
        return result

    def tidings_steps(
        self, row: dict[str, Any], backend: str, url: str, where: str, run: int
    ) -> None:
        events = row["events"]
        with self.tempdir() as directory:
            file = os.path.join(directory, "store.backup")

            def backup() -> dict[str, Any]:
                result = self.child({"op": "backup", "url": url, "file": file})
                if os.path.getsize(file) != result["bytes"]:
                    raise RuntimeError(
                        f"the backup says {result['bytes']:,} bytes, the file has "
                        f"{os.path.getsize(file):,}"
                    )
                if result["events"] != events or result["position"] != events:
                    raise RuntimeError(
                        f"the backup holds {result['events']:,} events up to "
                        f"{result['position']:,}, the store {events:,}"
                    )
                return result

            if self.record(row, "backup", run, backup) is None:
                if "backup" in row["errors"]:
                    for step in ("restore_same", "restore_other"):
                        row["errors"].setdefault(step, "no backup file (the backup failed)")
                return

            def restore(target: str) -> dict[str, Any]:
                if target == "postgres" and self.pg_problem is not None:
                    raise RuntimeError(self.pg_problem)
                with self.fresh_store(target) as (into, _):
                    result = self.child({"op": "restore", "file": file, "url": into})
                self.verify(f"tidings restore into {NAMES[target]}", result["found"], backend)
                if result["events"] != events or result["position"] != events:
                    raise RuntimeError(f"the restore reports {result['events']:,} events")
                return result

            self.record(row, "restore_same", run, lambda: restore(backend))
            self.record(row, "restore_other", run, lambda: restore(other(backend)))

    def raw_steps(self, row: dict[str, Any], backend: str, url: str, where: str, run: int) -> None:
        if backend == "sqlite":
            for how in ("sqlite_backup", "vacuum_into"):

                def copy(how: str = how) -> dict[str, Any]:
                    with self.tempdir() as directory:
                        target = os.path.join(directory, "copy.db")
                        result = self.child(
                            {"op": how, "source": where, "copy": target}
                        )  # fmt: skip
                    self.verify(LABELS[how], result["found"], backend)
                    return result

                self.record(row, how, run, copy)
            return
        with self.tempdir() as directory:
            dump = os.path.join(directory, "store.dump")

            def pg_dump() -> dict[str, Any]:
                result = self.tool(["pg_dump", "-Fc", "-n", PG_SCHEMA, "-d", where, "-f", dump])
                result["bytes"] = os.path.getsize(dump)
                return result

            if self.record(row, "pg_dump", run, pg_dump) is None:
                row["errors"].setdefault("pg_restore", "no dump (pg_dump failed)")
                return

            def pg_restore() -> dict[str, Any]:
                with self.postgres.scratch() as name:
                    result = self.tool(
                        ["pg_restore", "--single-transaction", "--no-owner", "-d", name, dump]
                    )
                    found = self.child({"op": "inspect", "url": self.pg_url(name)})
                self.verify("pg_restore", found, backend)
                return result

            self.record(row, "pg_restore", run, pg_restore)

    @contextlib.contextmanager
    def pg_connect(self, database: str) -> Iterator[Any]:
        import psycopg

        options: dict[str, Any] = {**self.postgres.settings, "dbname": database}
        with psycopg.connect(autocommit=True, connect_timeout=10, **options) as conn:
            yield conn

    def pg_size(self, database: str) -> int:
        """The bytes of the store's schema: its tables, indexes and TOAST."""
        with self.pg_connect(database) as conn:
            found = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                (PG_SCHEMA,),
            ).fetchone()
            return int(found[0])


# --- the table --------------------------------------------------------------------------------


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        ("source", "step", "into", "events", "ev/s", "seconds", "MB/s", "size MB", "tidings/raw", "CPU %")
    ]  # fmt: skip
    for row in rows:
        backend = row["backend"]
        for step in STEPS[backend]:
            runs = row["steps"][step]
            rates = [r["rate"] for r in runs]
            sizes = [r["bytes"] for r in runs if "bytes" in r]
            ratio = "-"
            if step in COMPARED:
                ours = med([r["rate"] for r in row["steps"][COMPARED[step]]])
                theirs = med(rates)
                ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
            lines.append(
                (
                    NAMES[backend],
                    LABELS[step],
                    into(backend, step),
                    f"{row['events']:,}",
                    "ERROR" if step in row["errors"] and not runs else cell(rates),
                    cell([r["seconds"] for r in runs], 2),
                    cell([r["bytes"] / 1e6 / r["seconds"] for r in runs if "bytes" in r], 1)
                    if sizes
                    else "-",
                    f"{med(sizes) / 1e6:,.1f}" if sizes else "-",
                    ratio,
                    f"{med([r['cpu_pct'] for r in runs]):.0f}" if runs else "-",
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
    bench.pg_problem = bench.check_postgres()
    if bench.pg_problem is not None:
        print(bench.pg_problem, file=sys.stderr)
    problem, disk = bench.check_disk()
    for place in disk:
        print(
            f"disk: {place['free'] / 1e9:.1f} GB free for {', '.join(place['paths'])}, "
            f"~{place['needed'] / 1e9:.1f} GB needed",
            flush=True,
        )
    if problem is not None:
        print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    pg_version = None
    if bench.pg_problem is None:
        with contextlib.suppress(Exception):
            pg_version = bench.postgres.server_version()
    rows: list[dict[str, Any]] = []
    for backend in args.backend:
        if backend == "postgres" and bench.pg_problem is not None:
            bench.errors.append(bench.pg_problem)
            continue
        rows.append(bench.run_backend(backend))
    load_after = os.getloadavg()
    total = time.perf_counter() - began

    print()
    print(render(rows))
    print(
        f"(medians of {args.runs} run(s), min-max in brackets; ev/s: the store's events over "
        "the seconds; MB/s and size: the file written, 10^6 bytes; tidings/raw: tidings' "
        "median over the raw tool's (the backup, or for pg_restore the PostgreSQL restore); "
        "CPU %: the client process (the PostgreSQL server's not counted))"
    )
    for row in rows:
        if row.get("preload"):
            p = row["preload"]
            print(
                f"(pre-load {NAMES[row['backend']]}: {row['events']:,} events in "
                f"{p['seconds']:.1f} s, {row['events'] / p['seconds']:,.0f} ev/s, "
                f"transactions of {PRELOAD_APPENDS} x {APPEND_EVENTS}-event appends; "
                f"store {row['source_bytes'] / 1e6:,.0f} MB)"
            )
    starts = [
        r["load_at_start"] for row in rows for runs in row["steps"].values() for r in runs
    ]  # fmt: skip
    print(load_line(load_before, load_after, starts, f"; {total:.0f} s in all"))
    for message in bench.errors:
        print(f"ERROR {message}", file=sys.stderr)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, load_after, disk=disk),
        "versions": {**versions(pg_version), "pg_dump": tool_version("pg_dump")},
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "backends": args.backend,
            "events": args.events,
            "append_events": APPEND_EVENTS,
            "preload_appends_per_transaction": PRELOAD_APPENDS,
            "pg_schema": PG_SCHEMA,
        },
        "total_seconds": round(total, 1),
        "errors": bench.errors,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 1 if bench.errors else 0


def tool_version(name: str) -> str | None:
    with contextlib.suppress(Exception):
        return subprocess.run([name, "--version"], capture_output=True, text=True).stdout.strip()
    return None


if __name__ == "__main__":
    sys.exit(main())
