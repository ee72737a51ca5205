"""Benchmark tidings against the eventsourcing library on SQLite and PostgreSQL (``make bench``).

Usage::

    python bench/run.py [--backend sqlite|postgres|all] [--only tidings|eventsourcing]
                        [--runs N] [--quick] [--workload NAME ...] [--max-seconds S]
                        [--es-api recorder|application] [--pg-url URL]
                        [--sqlite-dir DIR] [--output PATH] [--no-extras]

For every backend and workload (see ``workloads.py``) each library runs in a child
process (``measure.py``) on a scratch database made for it and removed afterwards: a
fresh SQLite file in a temporary directory, or a fresh PostgreSQL database named
``tidings_bench_<pid>_<n>``. Append workloads get a fresh database for every run, and
the libraries take turns run by run; ``read_all`` pre-loads one database per library and
times ``--runs`` reads of it. The results are printed as a table and written as JSON to
``bench/results/latest.json``.

Then, unless ``--no-extras``, it runs ``subscriptions.py`` (catch-up and live delay), ``notify_throughput.py`` (each notifier beside its
raw client library), ``live_latency.py`` (writer-to-live-reader latency across
processes), ``http.py`` (the server: HTTP appends, SSE fan-out, remote reads) and
``ws.py`` (the WebSocket gateway: fan-out latency, saturation, memory per connection) and
``eventstreams.py`` (managed event streams delivering to webhooks) and
``es_module.py`` (the eventsourcing library's application on its own persistence
modules and on ``tidings.contrib.eventsourcing``) and ``backup.py`` (tidings' backup and
restore beside SQLite's backup API, ``VACUUM INTO``, ``pg_dump`` and ``pg_restore``) and
``ceilings.py`` (each append workload beside plain sqlite3 and asyncpg writing the same
rows into tidings' schema) with
the same ``--runs``/``--quick``, each printing its own table and writing its JSON next
to ``latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from report import Row, Series, render_table, versions, write_json
from workloads import (
    BACKENDS,
    DEFAULT_MAX_SECONDS,
    ES_APIS,
    LIBRARIES,
    SHAPES,
    WORKLOADS,
    Measurement,
    Spec,
    make_spec,
)

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH_PREFIX = "tidings_bench_"
CHILD_TIMEOUT = 600.0  # seconds one measurement (child process) may take
EXTRAS = (
    "notify_throughput.py",
    "live_latency.py",
    "subscriptions.py",
    "http.py",
    "ws.py",
    "eventstreams.py",
    "es_module.py",
    "backup.py",
    "ceilings.py",
    "satellite.py",
)  # run after the tables, each alone
EXTRAS_TIMEOUT = 1800.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--only", choices=LIBRARIES, help="run one library only")
    parser.add_argument("--runs", type=int, default=3, help="runs per workload (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the events")
    parser.add_argument(
        "--workload", choices=WORKLOADS, action="append", help="only these (repeatable)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"time cap of one append run (default {DEFAULT_MAX_SECONDS:g})",
    )
    parser.add_argument(
        "--es-api",
        choices=ES_APIS,
        default=ES_APIS[0],
        help="eventsourcing path: its recorder (fastest) or Application/Aggregate "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TIDINGS_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL server to make scratch databases on "
        "(default $TIDINGS_BENCH_PG_URL or %(default)s)",
    )
    parser.add_argument(
        "--sqlite-dir", default=tempfile.gettempdir(), help="where scratch SQLite files go"
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the extra benchmarks (notifier throughput, live-read latency, subscriptions, HTTP server, WebSocket gateway, event streams, eventsourcing persistence modules, backup and restore, append ceilings)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


# --- scratch databases --------------------------------------------------------------------


def database_url(pg: dict[str, str], database: str) -> str:
    """A ``postgresql://`` URL for ``database`` with connection settings ``pg``."""
    auth = quote(pg["user"], safe="")
    if pg["password"]:
        auth += ":" + quote(pg["password"], safe="")
    return f"postgresql://{auth}@{pg['host']}:{pg['port']}/{quote(database, safe='')}"


class Postgres:
    """The PostgreSQL server: connection settings and scratch database management."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.settings = {
            "host": parts.hostname or "127.0.0.1",
            "port": str(parts.port or 5432),
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or ""),
        }
        self.admin_db = parts.path.lstrip("/") or "postgres"
        self._names = itertools.count(1)

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server, for tidings."""
        return database_url(self.settings, database)

    def _admin(self) -> Any:
        import psycopg

        options: dict[str, Any] = {**self.settings, "dbname": self.admin_db}
        return psycopg.connect(autocommit=True, connect_timeout=10, **options)

    def server_version(self) -> str:
        with self._admin() as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])

    @contextlib.contextmanager
    def scratch(self) -> Iterator[str]:
        """A fresh, empty database, dropped afterwards."""
        name = f"{SCRATCH_PREFIX}{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_stale(self) -> None:
        """Drop scratch databases left behind by benchmark processes no longer running."""
        with self._admin() as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s",
                    (SCRATCH_PREFIX + "%",),
                )
            ]
            for name in names:
                pid = name.removeprefix(SCRATCH_PREFIX).split("_")[0]
                if pid.isdigit() and not _process_alive(int(pid)):
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def sqlite_scratch(directory: str) -> Iterator[str]:
    """A path for a fresh SQLite file in a new temporary directory, removed afterwards."""
    path = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=directory)
    try:
        yield os.path.join(path, "events.db")
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- running measurements -----------------------------------------------------------------


class ChildFailed(Exception):
    """A measurement's child process failed; the message is the end of its stderr."""


def measure(spec: Spec, pg: dict[str, str], runs: int) -> list[Measurement]:
    """Run one measurement in a child process and return its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    request = json.dumps({"spec": spec.to_json(), "pg": pg, "runs": runs})
    try:
        proc = subprocess.run(
            [sys.executable, str(BENCH / "measure.py"), request, result_path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            sys.stderr.write("".join(f"    | {line}\n" for line in lines[-20:]))
            raise ChildFailed(lines[-1] if lines else f"exit status {proc.returncode}")
        return [Measurement(**m) for m in json.loads(Path(result_path).read_text())]
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"timed out after {CHILD_TIMEOUT:g} s") from exc
    finally:
        os.unlink(result_path)


class Bench:
    """Runs the selected workloads and collects their rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.libraries = [args.only] if args.only else list(LIBRARIES)
        self.workloads = args.workload or list(WORKLOADS)
        self.postgres = Postgres(args.pg_url)
        self.rows: list[Row] = []

    def run(self, backends: list[str]) -> list[Row]:
        for backend in backends:
            unavailable = self._check_backend(backend)
            for workload in self.workloads:
                row = Row(backend, workload, SHAPES[backend, workload].goal)
                self.rows.append(row)
                for library in self.libraries:
                    target_events = self._spec(library, backend, workload, "").events
                    row.series[library] = Series(target_events, error=unavailable)
                if unavailable is None:
                    self._run_row(row)
        return self.rows

    def _check_backend(self, backend: str) -> str | None:
        """None if the backend can be used, else why not."""
        if backend != "postgres":
            return None
        try:
            self.postgres.drop_stale()
        except Exception as exc:  # no server, bad URL, no psycopg...
            message = f"PostgreSQL unavailable at {self.args.pg_url}: {exc}".strip()
            print(message, file=sys.stderr)
            return message
        return None

    def _spec(self, library: str, backend: str, workload: str, target: str) -> Spec:
        return make_spec(
            library,
            backend,
            workload,
            target,
            quick=self.args.quick,
            max_seconds=self.args.max_seconds,
            es_api=self.args.es_api,
        )

    def _run_row(self, row: Row) -> None:
        if row.workload == "read_all":
            # One pre-load per library, then --runs timed reads of it.
            for library in self.libraries:
                self._measure(row, library, self.args.runs, label="runs")
        else:
            # A fresh database per run; the libraries take turns.
            for run in range(1, self.args.runs + 1):
                for library in self.libraries:
                    self._measure(row, library, 1, label=f"run {run}/{self.args.runs}")

    def _measure(self, row: Row, library: str, runs: int, label: str) -> None:
        series = row.series[library]
        if series.error is not None:
            return  # an earlier run failed: skip the rest of this series
        began = time.perf_counter()
        try:
            with self._scratch(row.backend) as target:
                spec = self._spec(library, row.backend, row.workload, target)
                measurements = measure(spec, self.postgres.settings, runs)
        except Exception as exc:
            series.error = str(exc) or type(exc).__name__
            status = f"ERROR {series.error}"
        else:
            series.runs.extend(measurements)
            status = ", ".join(
                f"{m.rate:,.0f} ev/s ({m.events:,} in {m.seconds:.2f} s)" for m in measurements
            )
        took = time.perf_counter() - began
        print(
            f"{row.backend:8} {row.workload:10} {library:13} {label:8} {status}  [{took:.0f} s]",
            flush=True,
        )

    def _scratch(self, backend: str) -> contextlib.AbstractContextManager[str]:
        if backend == "sqlite":
            return sqlite_scratch(self.args.sqlite_dir)
        return self.postgres.scratch()


# --- metadata and main ----------------------------------------------------------------


def describe(
    args: argparse.Namespace, bench: Bench, backends: list[str], load: float
) -> dict[str, Any]:
    """Where, when and how the benchmark ran, for the JSON output."""
    pg_version = None
    if "postgres" in backends:
        with contextlib.suppress(Exception):
            pg_version = bench.postgres.server_version()
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load,
        },
        "versions": versions(pg_version),
        "options": {
            "backends": backends,
            "libraries": bench.libraries,
            "workloads": bench.workloads,
            "runs": args.runs,
            "quick": args.quick,
            "max_seconds": args.max_seconds,
            "es_api": args.es_api,
            "sqlite": "WAL, synchronous=FULL",
        },
    }


def warn_if_busy(load: float) -> None:
    """Say so when something else is already using the CPUs: the figures will be low."""
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        print(
            f"warning: load average {load:.1f} on {cpus} CPUs before starting; "
            "other work will depress and scatter the figures",
            file=sys.stderr,
        )


def run_extras(args: argparse.Namespace) -> bool:
    """Run the extra benchmarks (``EXTRAS``) as child processes; True if all succeeded."""
    ok = True
    for script in EXTRAS:
        output = args.output.parent / (Path(script).stem + ".json")
        command = [sys.executable, str(BENCH / script), "--runs", str(args.runs)]
        command += ["--pg-url", args.pg_url, "--output", str(output)]
        command += ["--quick"] if args.quick else []
        print(f"\n== {script} ==\n", flush=True)
        try:
            status = subprocess.run(command, timeout=EXTRAS_TIMEOUT, check=False).returncode
        except subprocess.TimeoutExpired:
            print(f"{script} timed out after {EXTRAS_TIMEOUT:g} s", file=sys.stderr)
            status = 1
        ok = ok and status == 0
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    warn_if_busy(load)
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    bench = Bench(args)
    began = time.perf_counter()
    rows = bench.run(backends)
    meta = describe(args, bench, backends, load)
    meta["total_seconds"] = round(time.perf_counter() - began, 1)

    print()
    print(render_table(rows))
    write_json(args.output, rows, meta)
    print(f"\nwrote {args.output} ({meta['total_seconds']:.0f} s in all)")
    failed = any(s.error for row in rows for s in row.series.values())
    if not args.no_extras and not run_extras(args):
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
