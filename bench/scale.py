"""The scale curve: what appends and reads cost as a store fills up.

Usage::

    python bench/scale.py [--runs N] [--quick] [--full] [--backend sqlite|postgres ...]
                          [--pg-url URL] [--sqlite-dir DIR] [--output PATH] [--plot PATH]

For each backend one store is filled, in one process (a child of this script, so that
its memory is the appending process's), to 100,000 and then 1,000,000 events (``--full``:
also 10,000,000; ``--quick``: 10,000 and 100,000). The fill is untimed for the curve
(its rate is recorded): 100-event appends (``workloads.event_data``, ~210 bytes each)
round robin over 10,000 streams ``order-<n>``, 50 appends a transaction. A SQLite store is
a file in a new temp dir (WAL, ``synchronous=FULL``); a PostgreSQL store a fresh database
``tidings_bench_<pid>_<n>``, with autovacuum as the server has it (nothing is vacuumed or
analysed by hand). After each fill the store is settled (``--no-settle``: not): a
checkpoint (PostgreSQL ``CHECKPOINT``, SQLite ``PRAGMA wal_checkpoint(TRUNCATE)``) and
``sync()``, so that the writeback of what the fill left dirty (~380 MB of page cache
after filling to 1,000,000 here) does not land on the measurements: right after a bulk
fill every commit's fsync queues behind it. Then, at each size, ``--runs`` times
(median):

``append_1``
    64 writers appending single events, each to a fresh stream of its own (10,000
    events; ``--quick`` 2,000): events/s.
``append_100``
    8 writers appending 100-event batches to fresh streams (20,000 events; ``--quick``
    4,000): events/s.
``read_stream``
    ``read_stream`` of a whole stream in the middle of the filled ones (10 streams, the
    mean ms per stream, and µs per event: streams hold 100 events up to 1,000,000 and
    1,000 at 10,000,000).
``read_all``
    ``read_all(from_position=head - 1,000)``, the last 1,000 events (10 reads, ms each).
``list_streams``
    The first page (1,000 streams) of ``list_streams()`` (ms).
``stream_version``
    ``stream_version`` of middle streams (200 calls, µs each).
``catch_up``
    A new subscription starting at ``head - 100,000`` (``--quick`` 10,000), timed until
    its position reaches the head: events/s.

The measurements' own appends stay in the store (30,000 events a run at 100,000 is 30 %
more: each row's ``events`` is the head when its measurements started). Also recorded
per size: the process's resident memory, and on PostgreSQL the tables' live and dead
rows, autovacuum and autoanalyze counts and relation sizes (``pg_stat_user_tables``).
The table shows each figure at each size and the change from the first size; the
curve goes to ``bench/results/scale.png`` (if matplotlib is installed) and the data to
``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import fixed_width, load_line, machine, versions

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
SIZES = (100_000, 1_000_000)
FULL_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
STREAMS = 10_000
APPEND_EVENTS = 100
FILL_APPENDS = 50  # appends a transaction while filling
BYTES_PER_EVENT = 1024  # disk estimate per event and store (with indexes and WAL)
CHILD_TIMEOUT = 4 * 3600.0

# metric: (label, unit, higher is better)
METRICS = {
    "append_1": ("append_1 (64 x 1)", "ev/s", True),
    "append_100": ("append_100 (8 x 100)", "ev/s", True),
    "read_stream": ("read_stream (middle stream)", "ms", False),
    "read_stream_event": ("read_stream per event", "µs", False),
    "read_all": ("read_all (last 1,000)", "ms", False),
    "list_streams": ("list_streams (first 1,000)", "ms", False),
    "stream_version": ("stream_version", "µs", False),
    "catch_up": ("subscription catch-up", "ev/s", True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs at each size (default 3)")
    parser.add_argument("--quick", action="store_true", help="sizes 10,000 and 100,000")
    parser.add_argument("--full", action="store_true", help="also 10,000,000 events (slow)")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="measure right after each fill, without the checkpoint and sync()",
    )
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "scale.json")
    parser.add_argument("--plot", type=Path, default=BENCH / "results" / "scale.png")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend's request (JSON)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.quick and args.full:
        parser.error("--quick and --full do not go together")
    args.backend = args.backend or list(BACKENDS)
    args.sizes = QUICK_SIZES if args.quick else FULL_SIZES if args.full else SIZES
    return args


# --- the child: one backend's curve ----------------------------------------------------------


def dirty_mb() -> float:
    """The machine's dirty and under-writeback page cache, in MB (``/proc/meminfo``)."""
    found: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, value = line.split(":", 1)
            found[key] = int(value.split()[0])
    return (found.get("Dirty", 0) + found.get("Writeback", 0)) / 1e3


def rss_mb() -> float:
    """The process's resident memory now, in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class Curve:
    def __init__(self, request: dict[str, Any]) -> None:
        self.url: str = request["url"]
        self.backend: str = request["backend"]
        self.runs: int = request["runs"]
        self.quick: bool = request["quick"]
        self.settle: bool = request["settle"]
        self.appends = 0  # fill appends made (append j goes to stream j % STREAMS)
        self.fresh = 0  # fresh streams made by the append measurements

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    async def fill(self, store: Any, target: int) -> dict[str, Any]:
        """Fill appends until the head reaches ``target`` (at most one append past)."""
        from workloads import EVENT_TYPE, event_data

        import tidings

        head = await store.head()
        began, start = time.perf_counter(), head
        while head < target:
            async with store.transaction() as tx:
                for _ in range(FILL_APPENDS):
                    if head >= target:
                        break
                    j = self.appends
                    stream, k = j % STREAMS, j // STREAMS
                    n = k * APPEND_EVENTS
                    batch = [
                        tidings.NewEvent(EVENT_TYPE, event_data(n + i))
                        for i in range(APPEND_EVENTS)
                    ]
                    expected = tidings.NO_STREAM if k == 0 else n - 1
                    tx.append(f"order-{stream}", batch, expected_version=expected)
                    self.appends += 1
                    head += APPEND_EVENTS
            head = await store.head()
        seconds = time.perf_counter() - began
        return {"events": head - start, "seconds": seconds}

    async def appends_rate(self, store: Any, writers: int, batch: int, events: int) -> float:
        from workloads import EVENT_TYPE, event_data

        import tidings

        self.fresh += 1
        prefix = f"fresh{self.fresh}"
        per_writer = events // batch // writers
        prebuilt = [
            [tidings.NewEvent(EVENT_TYPE, event_data(k * batch + i)) for i in range(batch)]
            for k in range(per_writer)
        ]

        async def writer(w: int) -> None:
            expected: tidings.Expected = tidings.NO_STREAM
            for events_ in prebuilt:
                result = await store.append(f"{prefix}-{w}", events_, expected_version=expected)
                expected = result.last_version

        began = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return per_writer * batch * writers / (time.perf_counter() - began)

    def middle_streams(self, count: int) -> list[str]:
        used = min(self.appends, STREAMS)
        return [f"order-{(used // 2 + i) % used}" for i in range(count)]

    async def measure(self, store: Any) -> dict[str, float]:
        import tidings

        out: dict[str, float] = {}
        out["append_1"] = await self.appends_rate(store, 64, 1, 2_000 if self.quick else 10_000)
        out["append_100"] = await self.appends_rate(store, 8, 100, 4_000 if self.quick else 20_000)

        streams = self.middle_streams(10)
        began, n = time.perf_counter(), 0
        for stream in streams:
            async for _ in store.read_stream(stream):
                n += 1
        elapsed = time.perf_counter() - began
        out["read_stream"] = 1e3 * elapsed / len(streams)
        out["read_stream_event"] = 1e6 * elapsed / max(n, 1)
        if n < len(streams):
            raise RuntimeError(f"read {n} events from {len(streams)} middle streams")

        head = await store.head()
        times = []
        for k in range(10):
            began, n = time.perf_counter(), 0
            async for _ in store.read_all(from_position=head - 1_000 * (k + 1), limit=1_000):
                n += 1
            times.append(time.perf_counter() - began)
            if n != 1_000:
                raise RuntimeError(f"read_all near the end read {n} events")
        out["read_all"] = 1e3 * statistics.mean(times)

        began, n = time.perf_counter(), 0
        async for _ in store.list_streams(limit=1_000):
            n += 1
        out["list_streams"] = 1e3 * (time.perf_counter() - began)

        names = self.middle_streams(200)
        began = time.perf_counter()
        for name in names:
            if await store.stream_version(name) is None:
                raise RuntimeError(f"stream {name} not found")
        out["stream_version"] = 1e6 * (time.perf_counter() - began) / len(names)

        behind = 10_000 if self.quick else 100_000
        head = await store.head()
        start = max(head - behind, 0)

        async def noop(events: list[tidings.RecordedEvent]) -> None:
            return None

        name = f"scale-{time.time_ns()}"
        began = time.perf_counter()
        async with store.subscribe(name, noop, start=start, batch_size=1000) as sub:
            while (sub.position or 0) < head:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        out["catch_up"] = (head - start) / (time.perf_counter() - began)
        return out

    async def settle_store(self) -> dict[str, float]:
        """Write back what the fill left dirty: a checkpoint of the database (PostgreSQL
        ``CHECKPOINT``, SQLite ``wal_checkpoint(TRUNCATE)``), then ``sync()``."""
        before = dirty_mb()
        began = time.perf_counter()
        if self.backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()
        else:
            import sqlite3
            from urllib.parse import urlsplit

            with contextlib.closing(sqlite3.connect(urlsplit(self.url).path[1:])) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.sync()
        return {"seconds": time.perf_counter() - began, "dirty_mb_before": before}

    async def pg_tables(self) -> list[dict[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT relname, n_live_tup, n_dead_tup, n_tup_hot_upd, n_tup_upd,"
                " autovacuum_count, autoanalyze_count, pg_total_relation_size(relid) AS bytes"
                " FROM pg_stat_user_tables WHERE schemaname = 'tidings'"
                " AND relname IN ('events', 'streams', 'head')"
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    async def run(self, sizes: list[int]) -> None:
        import tidings

        store = await tidings.connect(self.url, notify=None)
        async with store:
            for size in sizes:
                filled = await self.fill(store, size)
                filled["dirty_mb_after"] = dirty_mb()
                if self.settle:
                    filled["settle"] = await self.settle_store()
                head = await store.head()
                record: dict[str, Any] = {
                    "size": size,
                    "events": head,
                    "fill": filled,
                    "runs": [],
                    "load_at_start": os.getloadavg()[0],
                }
                for _ in range(self.runs):
                    record["runs"].append(await self.measure(store))
                record["events_after"] = await store.head()
                record["rss_mb"] = rss_mb()
                if self.backend == "postgres":
                    record["tables"] = await self.pg_tables()
                self.emit(record)


def run_child(request: dict[str, Any]) -> None:
    curve = Curve(request)
    asyncio.run(curve.run(request["sizes"]))


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
    def fresh(self, backend: str) -> Iterator[str]:
        if backend == "sqlite":
            path = tempfile.mkdtemp(prefix="tidings_bench_scale_", dir=self.args.sqlite_dir)
            try:
                yield f"sqlite:///{path}/events.db?synchronous=full"
            finally:
                shutil.rmtree(path, ignore_errors=True)
        else:
            with self.postgres.scratch() as name:
                yield self.pg_url(name)

    def check_disk(self) -> str | None:
        need = max(self.args.sizes) * BYTES_PER_EVENT
        free = shutil.disk_usage(self.args.sqlite_dir).free
        if free < 2 * need:
            return f"{free / 1e9:.1f} GB free, ~{2 * need / 1e9:.1f} GB needed"
        return None

    def run_backend(self, backend: str) -> dict[str, Any]:
        row: dict[str, Any] = {"backend": backend, "sizes": [], "error": None}
        with self.fresh(backend) as url:
            request = {
                "url": url,
                "backend": backend,
                "runs": self.args.runs,
                "quick": self.args.quick,
                "settle": not self.args.no_settle,
                "sizes": list(self.args.sizes),
            }
            command = [sys.executable, str(Path(__file__).resolve()), "--child"]
            proc = subprocess.Popen(
                [*command, json.dumps(request)], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            began = time.perf_counter()
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                row["sizes"].append(record)
                fill = record["fill"]
                medians = {k: statistics.median(r[k] for r in record["runs"]) for k in METRICS}
                print(
                    f"{NAMES[backend]:10} {record['events']:>11,} events (filled "
                    f"{fill['events']:,} at {fill['events'] / max(fill['seconds'], 1e-9):,.0f}"
                    f" ev/s; RSS {record['rss_mb']:.0f} MB): "
                    + ", ".join(f"{k} {v:,.1f}" for k, v in medians.items())
                    + f"  [{time.perf_counter() - began:.0f} s]",
                    flush=True,
                )
            status = proc.wait(timeout=CHILD_TIMEOUT)
            if status != 0:
                row["error"] = f"the child exited with status {status}"
                self.errors.append(f"{backend}: {row['error']}")
        return row


def render(rows: list[dict[str, Any]]) -> str:
    lines = [("backend", "figure", "unit", *(f"{s:,}" for s in rows[0]["sizes_wanted"]), "change")]
    for row in rows:
        for i, (metric, (name, unit, _)) in enumerate(METRICS.items()):
            values = [statistics.median(r[metric] for r in size["runs"]) for size in row["sizes"]]
            change = f"{100 * (values[-1] / values[0] - 1):+.0f} %" if len(values) > 1 else "-"
            digits = 0 if unit in ("ev/s", "µs") else 2
            cells = [f"{v:,.{digits}f}" for v in values]
            cells += ["-"] * (len(row["sizes_wanted"]) - len(cells))
            lines.append((NAMES[row["backend"]] if i == 0 else "", name, unit, *cells, change))
        rss = [f"{size['rss_mb']:.0f}" for size in row["sizes"]]
        rss += ["-"] * (len(row["sizes_wanted"]) - len(rss))
        lines.append(("", "process RSS", "MB", *rss, ""))
        heads = [f"{size['events']:,}" for size in row["sizes"]]
        heads += ["-"] * (len(row["sizes_wanted"]) - len(heads))
        lines.append(("", "events at the start", "", *heads, ""))
    return "\n".join(fixed_width(lines))


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(3, 3, figsize=(14, 10))
    for ax, (metric, (name, unit, higher)) in zip(axes.flat, METRICS.items(), strict=False):
        for row in rows:
            xs = [size["events"] for size in row["sizes"]]
            ys = [statistics.median(r[metric] for r in size["runs"]) for size in row["sizes"]]
            ax.plot(xs, ys, marker="o", label=NAMES[row["backend"]])
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(f"{unit} ({'higher' if higher else 'lower'} is better)", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes.flat[-1]
    for row in rows:
        xs = [size["events"] for size in row["sizes"]]
        ax.plot(
            xs, [size["rss_mb"] for size in row["sizes"]], marker="o", label=NAMES[row["backend"]]
        )
    ax.set_xscale("log")
    ax.set_title("appending process RSS", fontsize=10)
    ax.set_ylabel("MB", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("events in the store", fontsize=8)
    fig.suptitle("tidings: cost against store size (medians)", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0
    load_before = os.getloadavg()
    began = time.perf_counter()
    bench = Bench(args)
    problem = bench.check_disk()
    if problem is not None:
        print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
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
        row = bench.run_backend(backend)
        row["sizes_wanted"] = list(args.sizes)
        rows.append(row)
    load_after = os.getloadavg()
    total = time.perf_counter() - began

    if rows:
        print()
        print(render(rows))
    print(
        f"(medians of {args.runs} run(s) at each size; change: the last size against the "
        "first; sizes are the fill targets, 'events at the start' the head when that size's "
        "measurements began)"
    )
    starts = [size["load_at_start"] for row in rows for size in row["sizes"]]
    print(load_line(load_before, load_after, starts, f"; {total:.0f} s in all"))
    if rows and plot(rows, args.plot):
        print(f"wrote {args.plot}")
    for message in bench.errors:
        print(f"ERROR {message}", file=sys.stderr)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, load_after),
        "versions": versions(pg_version),
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "full": args.full,
            "sizes": list(args.sizes),
            "streams": STREAMS,
            "append_events": APPEND_EVENTS,
            "fill_appends_per_transaction": FILL_APPENDS,
            "settle": not args.no_settle,
        },
        "total_seconds": round(total, 1),
        "errors": bench.errors,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
