"""The eventsourcing library's own application path on its persistence modules and on
``tidings.contrib.eventsourcing``, side by side.

Usage::

    python bench/es_module.py [--runs N] [--quick] [--backend sqlite|postgres ...]
                              [--workload save_1|save_100|read_log|get ...] [--writers N]
                              [--pg-url URL] [--sqlite-dir DIR] [--output PATH]

Both sides are the same ``Application`` (``peer_eventsourcing.BenchApp``, log sections
of 1,000) with the same ``Order`` aggregate; only ``PERSISTENCE_MODULE`` differs:

* SQLite: ``eventsourcing.sqlite`` (``SQLITE_DBNAME``, WAL and synchronous=FULL, checked)
  vs ``tidings.contrib.eventsourcing`` with ``TIDINGS_URL=sqlite:///<file>`` (tidings'
  default settings: WAL, synchronous=FULL; the file is checked to be in WAL after);
* PostgreSQL: ``eventsourcing.postgres`` (the ``POSTGRES_*`` settings of
  ``peer_eventsourcing.environment()``: a pool of one connection per writer thread, the
  table lock on insert left on) vs ``tidings.contrib.eventsourcing`` with
  ``TIDINGS_URL=postgresql://.../<db>`` (tidings' default pool).

Every measurement is a child process of this script on a fresh store: a new SQLite file
in a new temporary directory, or a new PostgreSQL database ``tidings_bench_<pid>_<n>``
made by this script and dropped after (``run.py``'s scratch databases). The sides take
turns run by run (the library first in odd runs, tidings first in even ones).

``save_1``
    ``--writers`` threads sharing the application, each with its own ``Order``
    (created and saved before timing), adding one line at a time
    (``order.add_line(...)``, then ``app.save(order)``): 5,000 events in all.
``save_100``
    The same with 100 ``add_line`` calls per ``save``: 100,000 events.
``read_log``
    A log pre-loaded (untimed) with 50,000 events, one ``save`` of a 100-event ``Order``
    at a time, by the writer threads; then one thread reads it whole:
    ``app.notification_log.select(start, 1000)`` page after page, each notification
    mapped with ``app.mapper.to_domain_event``.
``get``
    2,000 ``Order`` aggregates of 10 events each pre-loaded (one ``save`` each), then
    one thread loads each back with ``app.repository.get(id)`` (no aggregate cache).

``--quick`` divides every count by ten. After every write (timed or pre-load) the child
counts the notification log (``app.recorder.select_notifications`` pages, ids rising)
and checks each aggregate's last version; ``get`` checks every aggregate it loads and
``read_log`` the count read. A mismatch fails the measurement, and the script exits
with status 1. Figures are medians of ``--runs`` runs with the min-max; the ratio is
tidings' median over the library's. The load average before and after the run, and at
the start of each measurement, goes in the table's footer and in the JSON
(``bench/results/es_module.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import cell, fixed_width, load_line, machine, med, versions

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
WORKLOADS = ("save_1", "save_100", "read_log", "get")
SIDES = ("library", "tidings")
LIBRARY_MODULES = {"sqlite": "eventsourcing.sqlite", "postgres": "eventsourcing.postgres"}
TIDINGS_MODULE = "tidings.contrib.eventsourcing"
CHILD_TIMEOUT = 600.0  # seconds one measurement may take
READ_PAGE = 1000  # notifications per select (BenchApp's log section size)
PRELOAD_BATCH = 100  # events per save when pre-loading read_log
GET_EVENTS = 10  # events of each aggregate loaded by ``get``


@dataclass(frozen=True)
class Sizes:
    """How many events (or gets) each workload makes, full or ``--quick``."""

    save_1: int
    save_100: int
    read_log: int
    get: int  # aggregates loaded (each of GET_EVENTS events)


FULL = Sizes(save_1=5_000, save_100=100_000, read_log=50_000, get=2_000)
QUICK = Sizes(save_1=500, save_100=10_000, read_log=5_000, get=200)
UNITS = {"save_1": "ev/s", "save_100": "ev/s", "read_log": "ev/s", "get": "gets/s"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each series (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tenth of every count")
    parser.add_argument(
        "--backend", choices=BACKENDS, action="append", help="backends (default both; repeatable)"
    )
    parser.add_argument(
        "--workload", choices=WORKLOADS, action="append", help="only these (repeatable)"
    )
    parser.add_argument("--writers", type=int, default=8, help="writer threads (default 8)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "es_module.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a measurement's request (JSON)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.writers < 1:
        parser.error("--writers must be at least 1")
    args.sizes = QUICK if args.quick else FULL
    args.backend = args.backend or list(BACKENDS)
    args.workload = args.workload or list(WORKLOADS)
    return args


# --- the child: one measurement ----------------------------------------------------------


def environment(request: dict[str, Any]) -> dict[str, str]:
    """The application's environment: the library's own module, or tidings'."""
    import peer_eventsourcing
    from workloads import Spec

    backend, target, pg = request["backend"], request["target"], request["pg"]
    if request["side"] == "library":
        spec = Spec("eventsourcing", backend, request["workload"], 0, request["writers"], 1, target)
        return peer_eventsourcing.environment(spec, pg)
    if backend == "sqlite":
        url = f"sqlite:///{target}"
    else:
        from run import database_url

        url = database_url(pg, target)
    return {"PERSISTENCE_MODULE": TIDINGS_MODULE, "TIDINGS_URL": url}


@contextlib.contextmanager
def open_app(request: dict[str, Any]) -> Iterator[Any]:
    """The application on the measurement's fresh store, its connections open."""
    from peer_eventsourcing import BenchApp, check_sqlite_durability

    app = BenchApp(env=environment(request))
    try:
        if request["side"] == "library":
            datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
            if request["backend"] == "sqlite":
                check_sqlite_durability(datastore)
            else:
                datastore.pool.wait(timeout=60)
        app.recorder.max_notification_id()  # a first query: tables made, a connection open
        yield app
    finally:
        app.close()
    if request["side"] == "tidings" and request["backend"] == "sqlite":
        with sqlite3.connect(request["target"]) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"tidings left the SQLite file in journal_mode={mode}, not WAL")


def in_threads(writers: int, prepare: Callable[[int], Callable[[], None]]) -> float:
    """``writers`` threads, each running what ``prepare(w)`` returns once all are
    prepared; the seconds from their release to the last one's end."""
    start = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def thread_main(w: int) -> None:
        try:
            work = prepare(w)
            start.wait()
            work()
        except BaseException as exc:  # re-raised by the main thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=thread_main, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return seconds


def share(total: int, parts: int, w: int) -> int:
    base, extra = divmod(total, parts)
    return base + (w < extra)


def save_orders(app: Any, writers: int, saves: int, batch: int, fresh: bool) -> tuple[float, list]:
    """``saves`` saves of ``batch`` new events in ``writers`` threads: each thread saves
    a new ``Order`` first and then adds to it (``fresh=False``), or makes a new
    ``Order`` of ``batch`` events per save (``fresh=True``, the pre-loads). The
    seconds, and every ``Order`` saved."""
    from peer_eventsourcing import Order, order_line

    orders: list[list[Any]] = [[] for _ in range(writers)]

    def prepare(w: int) -> Callable[[], None]:
        mine = share(saves, writers, w)
        if fresh:

            def work() -> None:
                for _ in range(mine):
                    order = Order(**order_line(0))
                    for n in range(1, batch):
                        order.add_line(**order_line(n))
                    app.save(order)
                    orders[w].append(order)

            return work
        order = Order(**order_line(0))
        app.save(order)  # before timing: the aggregate exists, the writer is warm
        orders[w].append(order)

        def work() -> None:
            n = 1
            for _ in range(mine):
                for _ in range(batch):
                    order.add_line(**order_line(n))
                    n += 1
                app.save(order)

        return work

    seconds = in_threads(writers, prepare)
    return seconds, [order for mine in orders for order in mine]


def check_log(app: Any, orders: list[Any]) -> int:
    """Fail unless the notification log holds exactly the orders' events, and each
    order's last recorded version is its version. The count."""
    expected = sum(order.version for order in orders)
    count = 0
    last_id = 0
    while page := app.recorder.select_notifications(start=last_id + 1, limit=READ_PAGE):
        for notification in page:
            if notification.id <= last_id:
                raise RuntimeError(f"notification id {notification.id} after {last_id}")
            last_id = notification.id
        count += len(page)
    if count != expected:
        raise RuntimeError(f"saved {expected} events but the notification log holds {count}")
    for order in orders:
        [last] = app.recorder.select_events(order.id, desc=True, limit=1)
        if last.originator_version != order.version:
            raise RuntimeError(
                f"order {order.id}: last recorded version {last.originator_version}, "
                f"saved {order.version}"
            )
    return count


def measure_save(app: Any, request: dict[str, Any], batch: int) -> dict[str, Any]:
    events, writers = request["count"], request["writers"]
    cpu = time.process_time()
    seconds, orders = save_orders(app, writers, events // batch, batch, fresh=False)
    cpu = time.process_time() - cpu
    done = (events // batch) * batch
    logged = check_log(app, orders)
    return {
        "count": done,
        "seconds": seconds,
        "in_log": logged,
        "cpu_pct": 100 * cpu / seconds,
        "note": f"{writers} threads, {batch} add_line per app.save",
    }


def measure_read_log(app: Any, request: dict[str, Any]) -> dict[str, Any]:
    events = request["count"]
    _, orders = save_orders(
        app, request["writers"], events // PRELOAD_BATCH, PRELOAD_BATCH, fresh=True
    )
    expected = check_log(app, orders)
    select, to_domain_event = app.notification_log.select, app.mapper.to_domain_event
    count = 0
    last_id = 0
    cpu = time.process_time()
    began = time.perf_counter()
    while page := select(last_id + 1, READ_PAGE):
        for notification in page:
            to_domain_event(notification)
        count += len(page)
        last_id = page[-1].id
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    if count != expected:
        raise RuntimeError(f"expected to read {expected} events, read {count}")
    return {
        "count": count,
        "seconds": seconds,
        "cpu_pct": 100 * cpu / seconds,
        "note": f"notification_log.select pages of {READ_PAGE} + mapper.to_domain_event",
    }


def measure_get(app: Any, request: dict[str, Any]) -> dict[str, Any]:
    gets = request["count"]
    _, orders = save_orders(app, request["writers"], gets, GET_EVENTS, fresh=True)
    check_log(app, orders)
    ids = [order.id for order in orders]
    get = app.repository.get
    cpu = time.process_time()
    began = time.perf_counter()
    found = [get(i) for i in ids]
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    for order in found:
        if order.version != GET_EVENTS or order.lines != GET_EVENTS:
            raise RuntimeError(f"order {order.id}: version {order.version}, {order.lines} lines")
    return {
        "count": len(found),
        "seconds": seconds,
        "cpu_pct": 100 * cpu / seconds,
        "note": f"app.repository.get of {GET_EVENTS}-event aggregates, one thread",
    }


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    if request["backend"] == "postgres" and request["side"] == "library":
        import eventsourcing.postgres  # noqa: F401  (fail plainly if psycopg_pool is missing)

    load = os.getloadavg()[0]
    workload = request["workload"]
    with open_app(request) as app:
        if workload == "save_1":
            result = measure_save(app, request, 1)
        elif workload == "save_100":
            result = measure_save(app, request, 100)
        elif workload == "read_log":
            result = measure_read_log(app, request)
        else:
            result = measure_get(app, request)
    result["rate"] = result["count"] / result["seconds"]
    result["load_at_start"] = load
    return result


# --- the runner ----------------------------------------------------------------------------


def module_of(side: str, backend: str) -> str:
    return LIBRARY_MODULES[backend] if side == "library" else TIDINGS_MODULE


class Bench:
    """Runs every workload on every backend, the sides taking turns, one child each."""

    def __init__(self, args: argparse.Namespace) -> None:
        from run import Postgres

        self.args = args
        self.postgres = Postgres(args.pg_url)
        self.errors: list[str] = []

    def check_postgres(self) -> str | None:
        try:
            self.postgres.drop_stale()
        except Exception as exc:
            return f"PostgreSQL unavailable at {self.args.pg_url}: {type(exc).__name__}: {exc}"
        return None

    @contextlib.contextmanager
    def scratch(self, backend: str) -> Iterator[str]:
        from run import sqlite_scratch

        if backend == "sqlite":
            with sqlite_scratch(self.args.sqlite_dir) as path:
                yield path
        else:
            with self.postgres.scratch() as name:
                yield name

    def row(self, backend: str, workload: str) -> dict[str, Any]:
        count = getattr(self.args.sizes, workload)
        row: dict[str, Any] = {
            "backend": backend,
            "workload": workload,
            "count": count,
            "unit": UNITS[workload],
            "library_module": LIBRARY_MODULES[backend],
            "tidings_module": TIDINGS_MODULE,
            "library": [],
            "tidings": [],
            "errors": {},
        }
        for run in range(1, self.args.runs + 1):
            order = SIDES if run % 2 else SIDES[::-1]
            for side in order:
                if side in row["errors"]:
                    continue  # a failed series stops
                where = (
                    f"{backend:8} {workload:8} {module_of(side, backend):30} {run}/{self.args.runs}"
                )
                began = time.perf_counter()
                try:
                    result = self.measure(side, backend, workload, count)
                except Exception as exc:
                    message = str(exc) or type(exc).__name__
                    row["errors"][side] = message
                    self.errors.append(f"{backend} {workload} {side}: {message}")
                    status = f"ERROR {message}"
                else:
                    row[side].append(result)
                    status = (
                        f"{result['rate']:,.0f} {UNITS[workload]} ({result['count']:,} in "
                        f"{result['seconds']:.2f} s, CPU {result['cpu_pct']:.0f} %, "
                        f"load {result['load_at_start']:.1f})"
                    )
                print(f"{where} {status}  [{time.perf_counter() - began:.0f} s]", flush=True)
        return row

    def measure(self, side: str, backend: str, workload: str, count: int) -> dict[str, Any]:
        with self.scratch(backend) as target:
            request = {
                "side": side,
                "backend": backend,
                "workload": workload,
                "count": count,
                "writers": self.args.writers,
                "target": target,
                "pg": self.postgres.settings,
            }
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


# --- the table --------------------------------------------------------------------------------


BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "backend", "workload", "count", "unit", "library module", "library",
            "tidings.contrib.eventsourcing", "tidings/library", "CPU % l/t",
        )
    ]  # fmt: skip
    for row in rows:
        lib, tid = row["library"], row["tidings"]
        lib_rates, tid_rates = [r["rate"] for r in lib], [r["rate"] for r in tid]
        lm, tm = med(lib_rates), med(tid_rates)
        ratio = f"{tm / lm:.2f}" if lm and tm else "-"
        errors = row["errors"]
        lines.append(
            (
                BACKEND_NAMES[row["backend"]], row["workload"], f"{row['count']:,}", row["unit"],
                row["library_module"],
                "ERROR" if "library" in errors else cell(lib_rates),
                "ERROR" if "tidings" in errors else cell(tid_rates),
                ratio,
                f"{med([r['cpu_pct'] for r in lib]) or 0:.0f} / "
                f"{med([r['cpu_pct'] for r in tid]) or 0:.0f}",
            )
        )  # fmt: skip
    return "\n".join(fixed_width(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    load_before = os.getloadavg()
    began = time.perf_counter()
    bench = Bench(args)
    rows: list[dict[str, Any]] = []
    pg_version = None
    for backend in args.backend:
        if backend == "postgres":
            problem = bench.check_postgres()
            if problem is not None:
                print(problem, file=sys.stderr)
                bench.errors.append(problem)
                continue
            with contextlib.suppress(Exception):
                pg_version = bench.postgres.server_version()
        for workload in args.workload:
            rows.append(bench.row(backend, workload))
    load_after = os.getloadavg()
    total = time.perf_counter() - began

    starts = [r["load_at_start"] for row in rows for s in SIDES for r in row[s]]
    print()
    print(render(rows))
    print(
        f"(medians of {args.runs} run(s), min-max in brackets; tidings/library: the ratio of "
        f"medians; {args.writers} writer threads; one reader thread)"
    )
    print(load_line(load_before, load_after, starts))
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
            "writers": args.writers,
            "sizes": asdict(args.sizes),
            "get_events": GET_EVENTS,
            "read_page": READ_PAGE,
        },
        "total_seconds": round(total, 1),
        "errors": bench.errors,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output} ({total:.0f} s in all)")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
