"""The soak: appends at a steady rate for minutes, with live followers (issue 14).

Usage::

    python bench/soak.py [--quick] [--minutes M] [--rate R] [--streams N] [--followers F]
                         [--sample S] [--warmup S] [--max-in-flight N]
                         [--backend sqlite|postgres ...] [--pg-url URL] [--sqlite-dir DIR]
                         [--output PATH] [--plot PATH]

The goal of issue 14: "10 minutes of 2,000 appends/s with 100 live followers: memory
sampled every 30 s stays flat; no follower falls more than a second behind."

For each backend (default both) one child process of this script (so that its memory is
the appending process's) opens a fresh store with ``tidings.connect(url)``: a SQLite
file ``soak.db`` in a new temp dir (durable defaults), or a fresh PostgreSQL database
``tidings_bench_<pid>_<n>`` (LISTEN/NOTIFY wakes, as ``connect`` wires it), removed
afterwards. In that process, for ``--minutes`` (default 10):

writers
    Open-loop appends at ``--rate`` per second (default 2,000): a pacer that every 10 ms
    starts, as asyncio tasks, the appends due by then, whatever the earlier ones are
    doing. Each is one ``LineAdded`` event (``workloads.event_data``, ~210 bytes) to
    stream ``order-<n mod --streams>`` (default 1,000 streams), ``expected_version=ANY``.
    An append's latency runs from the pacer starting its task to ``append`` returning.
    When ``--max-in-flight`` (default 5,000) appends are already outstanding, the due
    ones are not started but counted as ``shed``: the writer fell behind.
followers
    ``--followers`` (default 100) tasks, each ``async for event in
    store.read_all(from_position=<head at the start>, follow=True)``. Each notes, per
    event, its delay ``time.time() - event.time`` (the commit's clock, in ms: up to 1 ms
    too much), and checks that positions come one by one: the log's positions are
    contiguous on both backends, so after ``p`` a follower must see ``p + 1``. A gap or
    a repeat is a FAILURE.

Every ``--sample`` seconds (default 30) a sample records: the elapsed time, the process's
RSS (``VmRSS``), the events in the store (head), the appends done in the interval (and
appends/s, shed, errors, outstanding), append latency p50/p99/max in the interval, the
worst follower delay in the interval (max over the followers of their max), the largest
follower lag in positions at that moment (head - the lowest follower position), the
process's CPU use (% of one core), how late the pacer's ticks ran (event-loop lag),
``gc.get_count()`` and ``len(gc.get_objects())``, what SQLite holds on its heap
(``sqlite3_memory_used()``, every connection's page cache among it) and Python's
allocated blocks (``sys.getallocatedblocks()``), to tell a cache filling from a leak.
``--quick``: 1 minute, a sample every 10 s, 20 followers, 500 appends/s (each unless
given).

At the end the pacer stops, the outstanding appends finish, and every follower must reach
the final head within 30 s (else a FAILURE); then the store is closed. The table shows
one row per sample and backend; the samples, options, versions and load averages go to
``bench/results/soak.json``, and with matplotlib installed a plot (RSS and the worst
follower delay against time, a line per backend) to ``bench/results/soak.png``.

Verdicts, per backend, under the table:

memory flat
    RSS at the last sample at most 10 % and at most 20 MiB above RSS at the baseline:
    the first sample at or after ``--warmup`` seconds (default 60, so the second of 30 s
    samples; ``--quick``: 20, the second of 10 s samples).
followers
    The worst delay of any event at any follower over the whole run, the final
    catch-up included, at most 1.0 s.
rate
    The appends done, over the sampled time, at least 98 % of ``--rate``, none shed.

A missed verdict is a MISS (exit status 0 if nothing failed); a gap, a repeat, an append
error, a follower not reaching the final head, a crashed child or an unavailable backend
is a FAILURE (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import fixed_width, load_line, machine, versions
from workloads import EVENT_TYPE, event_data

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
TICK = 0.010  # seconds between the pacer's rounds
DRAIN_TIMEOUT = 60.0  # seconds the outstanding appends may take to finish at the end
CATCH_UP_TIMEOUT = 30.0  # seconds the followers may take to reach the final head
MAX_DELAY = 1.0  # seconds: the followers' verdict
RSS_GROWTH = 0.10  # the memory verdict: at most 10 % ...
RSS_GROWTH_MIB = 20.0  # ... and 20 MiB of growth from the baseline to the last sample
RATE_SHARE = 0.98  # the rate verdict: at least 98 % of --rate
MAX_FAILURES_KEPT = 20  # failure messages a follower keeps (it counts them all)

# name: default, --quick default
DEFAULTS = {
    "minutes": (10.0, 1.0),
    "rate": (2000.0, 500.0),
    "followers": (100, 20),
    "sample": (30.0, 10.0),
    "warmup": (60.0, 20.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 minute, samples every 10 s, 20 followers, 500 appends/s (each unless given)",
    )
    parser.add_argument("--minutes", type=float, help="duration (default 10; --quick 1)")
    parser.add_argument("--rate", type=float, help="appends a second (default 2000; --quick 500)")
    parser.add_argument("--streams", type=int, default=1000, help="streams (default 1000)")
    parser.add_argument("--followers", type=int, help="live followers (default 100; --quick 20)")
    parser.add_argument(
        "--sample", type=float, help="seconds between samples (default 30; --quick 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="the memory baseline is the first sample at or after this many seconds "
        "(default 60; --quick 20)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=5000,
        help="outstanding appends beyond which due ones are shed (default 5000)",
    )
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "soak.json")
    parser.add_argument("--plot", type=Path, default=BENCH / "results" / "soak.png")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend's request (JSON)
    args = parser.parse_args(argv)
    for name, (default, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    for name in ("minutes", "rate", "sample"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be above 0")
    if args.streams < 1 or args.followers < 0 or args.max_in_flight < 1 or args.warmup < 0:
        parser.error(
            "--streams and --max-in-flight must be at least 1, --followers and --warmup at least 0"
        )
    if args.sample > 60 * args.minutes:
        parser.error("--sample is longer than the run")
    args.backend = args.backend or list(BACKENDS)
    return args


# --- the child: one backend's soak -----------------------------------------------------------


def rss_mib() -> float:
    """The process's resident memory now, in MiB (``VmRSS`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _sqlite_library() -> Any:
    """The SQLite library the ``sqlite3`` module runs on, for ``sqlite3_memory_used``."""
    import ctypes
    import ctypes.util
    import sqlite3  # noqa: F401 (loads the library into the process first)

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, AttributeError):
        return None
    return lib


_SQLITE = _sqlite_library()


def sqlite_mib() -> float | None:
    """What SQLite holds on its heap now (every connection's page cache, statements,
    schema), in MiB; None when its library cannot be reached."""
    return None if _SQLITE is None else _SQLITE.sqlite3_memory_used() / (1 << 20)


def percentile(ordered: list[float], share: float) -> float | None:
    """The ``share`` quantile (nearest rank) of sorted values, None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Follower:
    """A live ``read_all`` that notes each event's delay and checks positions come in order."""

    def __init__(self, index: int, start: int) -> None:
        self.index = index
        self.position = start  # the last position seen
        self.events = 0
        self.max_delay = 0.0  # in the current sample interval
        self.worst = 0.0  # over the whole run
        self.failures = 0
        self.messages: list[str] = []
        self.ended = False  # its read ended and that was reported
        self.reported = 0  # messages reported so far

    def take_max_delay(self) -> float:
        """The worst delay since the last call, and start a new interval."""
        found, self.max_delay = self.max_delay, 0.0
        return found

    async def run(self, store: Any) -> None:
        clock = time.time
        async for event in store.read_all(from_position=self.position, follow=True):
            delay = clock() - event.time.timestamp()
            if delay > self.max_delay:
                self.max_delay = delay
                if delay > self.worst:
                    self.worst = delay
            position = event.position
            if position != self.position + 1:
                self.failures += 1
                if len(self.messages) < MAX_FAILURES_KEPT:
                    kind = "a gap" if position > self.position + 1 else "a repeat"
                    self.messages.append(
                        f"follower {self.index}: {kind}: position {position} after {self.position}"
                    )
                if position < self.position:
                    continue  # a repeat: keep the highest position seen
            self.position = position
            self.events += 1


class Writer:
    """Open-loop single-event appends at ``rate`` a second, started by a pacer every 10 ms."""

    def __init__(self, store: Any, rate: float, streams: int, max_in_flight: int) -> None:
        import tidings

        self.new_event = tidings.NewEvent
        self.any_version = tidings.ANY
        self.store = store
        self.rate = rate
        self.streams = streams
        self.max_in_flight = max_in_flight
        self.in_flight: set[asyncio.Task[None]] = set()
        self.issued = 0  # appends due so far (started or shed)
        self.shed_total = 0
        self.errors_total = 0
        self.done_total = 0
        self.error_messages: list[str] = []
        self._reset_interval()

    def _reset_interval(self) -> None:
        self.latencies: list[float] = []
        self.shed = 0
        self.errors = 0
        self.late = 0.0  # the latest a tick ran after its time, in seconds

    def take_interval(self) -> dict[str, Any]:
        """The interval's figures since the last call, and start a new interval."""
        ordered = sorted(self.latencies)
        p50, p99 = percentile(ordered, 0.50), percentile(ordered, 0.99)
        out = {
            "appends": len(ordered),
            "shed": self.shed,
            "errors": self.errors,
            "in_flight": len(self.in_flight),
            "p50_ms": None if p50 is None else 1e3 * p50,
            "p99_ms": None if p99 is None else 1e3 * p99,
            "max_ms": 1e3 * ordered[-1] if ordered else None,
            "pacer_late_ms": 1e3 * self.late,
        }
        self._reset_interval()
        return out

    async def _append(self, n: int) -> None:
        began = time.perf_counter()
        try:
            await self.store.append(
                f"order-{n % self.streams}",
                [self.new_event(EVENT_TYPE, event_data(n))],
                expected_version=self.any_version,
            )
        except Exception as exc:
            self.errors += 1
            self.errors_total += 1
            if len(self.error_messages) < MAX_FAILURES_KEPT:
                self.error_messages.append(f"append {n}: {type(exc).__name__}: {exc}")
        else:
            self.latencies.append(time.perf_counter() - began)
            self.done_total += 1

    async def pace(self, seconds: float) -> None:
        """Start the appends due every 10 ms for ``seconds``."""
        began = time.perf_counter()
        tick = 0
        while True:
            now = time.perf_counter()
            elapsed = now - began
            if elapsed >= seconds:
                break
            self.late = max(self.late, elapsed - tick * TICK)
            due = int(elapsed * self.rate) - self.issued
            for _ in range(due):
                n = self.issued
                self.issued += 1
                if len(self.in_flight) >= self.max_in_flight:
                    self.shed += 1
                    self.shed_total += 1
                    continue
                task = asyncio.create_task(self._append(n))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            tick = int(elapsed / TICK) + 1
            await asyncio.sleep(max(0.0, began + tick * TICK - time.perf_counter()))

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109
        """Wait for the outstanding appends; return how many did not finish in time."""
        if not self.in_flight:
            return 0
        _, pending = await asyncio.wait(set(self.in_flight), timeout=timeout)
        return len(pending)


class Soak:
    def __init__(self, request: dict[str, Any]) -> None:
        self.url: str = request["url"]
        self.seconds: float = 60 * request["minutes"]
        self.rate: float = request["rate"]
        self.streams: int = request["streams"]
        self.followers: int = request["followers"]
        self.sample: float = request["sample"]
        self.max_in_flight: int = request["max_in_flight"]
        self.failures: list[str] = []

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        self.emit({"kind": "failure", "message": message})

    async def run(self) -> None:
        import tidings

        store = await tidings.connect(self.url)
        try:
            await self.soak(store)
        finally:
            await store.close()

    async def soak(self, store: Any) -> None:
        start = await store.head()
        followers = [Follower(i, start) for i in range(self.followers)]
        tasks = [asyncio.create_task(f.run(store)) for f in followers]
        writer = Writer(store, self.rate, self.streams, self.max_in_flight)
        began = time.perf_counter()
        pacer = asyncio.create_task(writer.pace(self.seconds))
        cpu, wall = time.process_time(), began
        samples = int(self.seconds / self.sample + 1e-9)
        try:
            for k in range(1, samples + 1):
                await asyncio.sleep(max(0.0, began + k * self.sample - time.perf_counter()))
                now, cpu_now = time.perf_counter(), time.process_time()
                interval = writer.take_interval()
                head = await store.head()
                lowest = min((f.position for f in followers), default=head)
                sample = {
                    "kind": "sample",
                    "elapsed": now - began,
                    "rss_mib": rss_mib(),
                    "sqlite_mib": sqlite_mib(),
                    "py_blocks": sys.getallocatedblocks(),
                    "head": head,
                    **interval,
                    "appends_per_s": interval["appends"] / (now - wall),
                    "follower_delay_max_s": max(
                        (f.take_max_delay() for f in followers), default=0.0
                    ),
                    "follower_lag_max": head - lowest,
                    "follower_events": sum(f.events for f in followers),
                    "cpu_pct": 100 * (cpu_now - cpu) / (now - wall),
                    "gc_count": list(gc.get_count()),
                    "gc_objects": len(gc.get_objects()),
                    "load": os.getloadavg()[0],
                }
                self.emit(sample)
                cpu, wall = cpu_now, now
                self.report_follower_failures(followers, tasks)
            await pacer
        finally:
            pacer.cancel()
        stopped = time.perf_counter()
        left = await writer.drain(DRAIN_TIMEOUT)
        if left:
            self.fail(
                f"{left} appends still outstanding {DRAIN_TIMEOUT:g} s after the writer stopped"
            )
        for message in writer.error_messages:
            self.fail(message)
        if writer.errors_total > len(writer.error_messages):
            self.fail(f"{writer.errors_total} append errors in all")
        head = await store.head()
        if head - start != writer.done_total:
            self.fail(
                f"the head moved by {head - start:,} but {writer.done_total:,} appends returned"
            )
        # Every follower must reach the final head.
        deadline = time.perf_counter() + CATCH_UP_TIMEOUT
        while any(f.position < head for f in followers) and time.perf_counter() < deadline:
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        caught_up = time.perf_counter() - stopped
        behind = [f for f in followers if f.position < head]
        for f in behind:
            self.fail(
                f"follower {f.index} at position {f.position:,}, not the final head {head:,}, after {CATCH_UP_TIMEOUT:g} s"
            )
        drain_delay = max((f.take_max_delay() for f in followers), default=0.0)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self.report_follower_failures(followers, tasks, results)
        self.emit(
            {
                "kind": "done",
                "start_head": start,
                "final_head": head,
                "appends": writer.done_total,
                "issued": writer.issued,
                "shed": writer.shed_total,
                "errors": writer.errors_total,
                "seconds": stopped - began,
                "catch_up_seconds": caught_up,
                "final_follower_delay_max_s": drain_delay,
                "worst_follower_delay_s": max((f.worst for f in followers), default=0.0),
                "follower_events": sum(f.events for f in followers),
                "follower_failures": sum(f.failures for f in followers),
                "rss_mib": rss_mib(),
            }
        )

    def report_follower_failures(
        self,
        followers: list[Follower],
        tasks: list[asyncio.Task[None]],
        results: list[Any] | None = None,
    ) -> None:
        """Emit the follower failures not yet reported, and any follower whose read ended
        (``results``: the tasks' outcomes once cancelled at the end)."""
        for f in followers:
            for message in f.messages[f.reported :]:
                self.fail(message)
            f.reported = len(f.messages)
        if results is None:
            for f, task in zip(followers, tasks, strict=True):
                if task.done() and not f.ended:
                    f.ended = True
                    exc = None if task.cancelled() else task.exception()
                    self.fail(f"follower {f.index} ended early: {exc!r}")
            return
        unkept = sum(f.failures - len(f.messages) for f in followers)
        if unkept:
            self.fail(f"{unkept} more follower gaps or repeats, not kept one by one")
        for f, result in zip(followers, results, strict=True):
            failed = isinstance(result, BaseException)
            if failed and not isinstance(result, asyncio.CancelledError) and not f.ended:
                self.fail(f"follower {f.index} ended: {result!r}")


def run_child(request: dict[str, Any]) -> None:
    asyncio.run(Soak(request).run())


# --- the runner ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from run import Postgres

        self.args = args
        self.postgres = Postgres(args.pg_url)
        self.errors: list[str] = []

    @contextlib.contextmanager
    def fresh(self, backend: str) -> Iterator[str]:
        if backend == "sqlite":
            path = tempfile.mkdtemp(prefix="tidings_bench_soak_", dir=self.args.sqlite_dir)
            try:
                yield f"sqlite:///{path}/soak.db"
            finally:
                shutil.rmtree(path, ignore_errors=True)
        else:
            with self.postgres.scratch() as name:
                yield self.postgres.url(name)

    def request(self, url: str) -> dict[str, Any]:
        a = self.args
        return {
            "url": url,
            "minutes": a.minutes,
            "rate": a.rate,
            "streams": a.streams,
            "followers": a.followers,
            "sample": a.sample,
            "max_in_flight": a.max_in_flight,
        }

    def run_backend(self, backend: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "backend": backend,
            "samples": [],
            "final": None,
            "failures": [],
            "load_at_start": os.getloadavg()[0],
        }
        timeout = 60 * self.args.minutes + DRAIN_TIMEOUT + CATCH_UP_TIMEOUT + 120
        with self.fresh(backend) as url:
            command = [sys.executable, str(Path(__file__).resolve()), "--child"]
            proc = subprocess.Popen(
                [*command, json.dumps(self.request(url))], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                kind = record.pop("kind")
                if kind == "sample":
                    row["samples"].append(record)
                    print(f"{NAMES[backend]:10} {progress(record)}", flush=True)
                elif kind == "failure":
                    row["failures"].append(record["message"])
                    print(f"{NAMES[backend]:10} FAILED {record['message']}", flush=True)
                elif kind == "done":
                    row["final"] = record
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            if status != 0:
                row["failures"].append(f"the child exited with status {status}")
            elif row["final"] is None:
                row["failures"].append("the child ended without its final record")
        row["verdicts"] = verdicts(row, self.args)
        self.errors.extend(f"{NAMES[backend]}: {m}" for m in row["failures"])
        return row


def progress(s: dict[str, Any]) -> str:
    return (
        f"{s['elapsed']:5.0f} s  RSS {s['rss_mib']:6.1f} MiB  {s['head']:>9,} events  "
        f"{s['appends_per_s']:7,.0f} appends/s  p99 {fmt(s['p99_ms'], 1)} ms  "
        f"worst delay {1e3 * s['follower_delay_max_s']:,.0f} ms  lag {s['follower_lag_max']:,}  "
        f"CPU {s['cpu_pct']:.0f} %"
    )


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def verdicts(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The memory, followers and rate verdicts of one backend (``passed`` None: no data)."""
    samples, final = row["samples"], row["final"]
    out: dict[str, Any] = {}

    base = next((s for s in samples if s["elapsed"] >= args.warmup - 0.5), None)
    last = samples[-1] if samples else None
    if base is None or last is None or last is base:
        out["memory"] = {"passed": None, "why": "no sample after the warm-up and before the last"}
    else:
        growth = last["rss_mib"] - base["rss_mib"]
        share = growth / base["rss_mib"]
        out["memory"] = {
            "passed": growth <= RSS_GROWTH * base["rss_mib"] and growth <= RSS_GROWTH_MIB,
            "baseline_elapsed": base["elapsed"],
            "baseline_mib": base["rss_mib"],
            "last_mib": last["rss_mib"],
            "growth_mib": growth,
            "growth_pct": 100 * share,
        }
        # Where growth happened: a leak grows all along; a bounded cache or the memory
        # of a pile-up (appends waiting out a slow fsync) is a step, then flat.
        middle = next(s for s in samples if s["elapsed"] >= (base["elapsed"] + last["elapsed"]) / 2)
        out["memory"]["second_half_mib"] = last["rss_mib"] - middle["rss_mib"]
        out["memory"]["second_half_from"] = middle["elapsed"]
        biggest = max(itertools.pairwise(samples), key=lambda p: p[1]["rss_mib"] - p[0]["rss_mib"])
        out["memory"]["largest_step_mib"] = biggest[1]["rss_mib"] - biggest[0]["rss_mib"]
        out["memory"]["largest_step_at"] = biggest[1]["elapsed"]
        out["memory"]["largest_step_p99_ms"] = biggest[1]["p99_ms"]

    delays = [s["follower_delay_max_s"] for s in samples]
    if final is not None:
        delays += [final["worst_follower_delay_s"], final["final_follower_delay_max_s"]]
    if delays and args.followers > 0:
        worst = max(delays)
        out["followers"] = {"passed": worst <= MAX_DELAY, "worst_delay_s": worst}
    else:
        out["followers"] = {"passed": None, "why": "no follower data"}

    if samples:
        appends = sum(s["appends"] for s in samples)
        seconds = samples[-1]["elapsed"]
        shed = final["shed"] if final else sum(s["shed"] for s in samples)
        rate = appends / seconds
        out["rate"] = {
            "passed": rate >= RATE_SHARE * args.rate and shed == 0,
            "appends_per_s": rate,
            "shed": shed,
        }
    else:
        out["rate"] = {"passed": None, "why": "no samples"}
    return out


def render(rows: list[dict[str, Any]]) -> str:
    lines: list[tuple[str, ...]] = [
        (
            "backend",
            "elapsed s",
            "RSS MiB",
            "SQLite heap MiB",
            "Python blocks",
            "events",
            "appends/s",
            "shed",
            "p50 ms",
            "p99 ms",
            "worst delay ms",
            "max lag",
            "CPU %",
            "gc objects",
        )
    ]
    for row in rows:
        for i, s in enumerate(row["samples"]):
            lines.append(
                (
                    NAMES[row["backend"]] if i == 0 else "",
                    f"{s['elapsed']:.0f}",
                    f"{s['rss_mib']:.1f}",
                    fmt(s.get("sqlite_mib"), 1),
                    f"{s['py_blocks']:,}" if "py_blocks" in s else "-",
                    f"{s['head']:,}",
                    f"{s['appends_per_s']:,.0f}",
                    f"{s['shed']:,}",
                    fmt(s["p50_ms"], 2),
                    fmt(s["p99_ms"], 2),
                    f"{1e3 * s['follower_delay_max_s']:,.0f}",
                    f"{s['follower_lag_max']:,}",
                    f"{s['cpu_pct']:.0f}",
                    f"{s['gc_objects']:,}",
                )
            )
        if not row["samples"]:
            lines.append((NAMES[row["backend"]], *["-"] * 13))
    return "\n".join(fixed_width(lines))


def verdict_lines(row: dict[str, Any], args: argparse.Namespace) -> list[str]:
    name, v, final = NAMES[row["backend"]], row["verdicts"], row["final"]
    mark = {True: "pass", False: "MISS", None: "-"}
    m, f, r = v["memory"], v["followers"], v["rate"]
    lines = []
    if m["passed"] is None:
        lines.append(f"{name}: memory flat: - ({m['why']})")
    else:
        lines.append(
            f"{name}: memory flat: {mark[m['passed']]} (RSS {m['baseline_mib']:.1f} MiB at "
            f"{m['baseline_elapsed']:.0f} s, {m['last_mib']:.1f} MiB at the last sample: "
            f"{m['growth_mib']:+.1f} MiB, {m['growth_pct']:+.1f} %; allowed +10 % and +20 MiB)"
        )
        lines.append(
            f"{name}: memory, where it grew: {m['second_half_mib']:+.1f} MiB from "
            f"{m['second_half_from']:.0f} s to the end; the largest step "
            f"{m['largest_step_mib']:+.1f} MiB in the interval to {m['largest_step_at']:.0f} s "
            f"(append p99 there {fmt(m['largest_step_p99_ms'], 0)} ms)"
        )
    if f["passed"] is None:
        lines.append(f"{name}: followers <= {MAX_DELAY:g} s behind: - ({f['why']})")
    else:
        lines.append(
            f"{name}: followers <= {MAX_DELAY:g} s behind: {mark[f['passed']]} (worst delay "
            f"{1e3 * f['worst_delay_s']:,.0f} ms over {args.followers} followers"
            + (
                f", {final['follower_events']:,} events received; all at the final head "
                f"{final['final_head']:,} {final['catch_up_seconds']:.2f} s after the writer stopped)"
                if final is not None and not row["failures"]
                else ")"
            )
        )
    if r["passed"] is None:
        lines.append(f"{name}: rate {args.rate:,.0f}/s held: - ({r['why']})")
    else:
        lines.append(
            f"{name}: rate {args.rate:,.0f}/s held: {mark[r['passed']]} "
            f"({r['appends_per_s']:,.0f} appends/s done, {r['shed']:,} shed)"
        )
    for message in row["failures"]:
        lines.append(f"{name}: FAILED {message}")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for row in rows:
        xs = [s["elapsed"] for s in row["samples"]]
        top.plot(
            xs, [s["rss_mib"] for s in row["samples"]], marker="o", label=NAMES[row["backend"]]
        )
        bottom.plot(
            xs,
            [1e3 * s["follower_delay_max_s"] for s in row["samples"]],
            marker="o",
            label=NAMES[row["backend"]],
        )
    top.set_title("appending process RSS", fontsize=10)
    top.set_ylabel("MiB")
    top.set_ylim(bottom=0)
    bottom.axhline(1e3 * MAX_DELAY, color="grey", linestyle="--", linewidth=1, label="goal")
    bottom.set_title("worst follower delay in each sample interval", fontsize=10)
    bottom.set_ylabel("ms")
    bottom.set_xlabel("seconds")
    bottom.set_ylim(bottom=0)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("tidings soak", fontsize=12)
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
    pg_version = None
    rows: list[dict[str, Any]] = []
    print(
        f"soak: {args.minutes:g} min of {args.rate:,.0f} appends/s over {args.streams:,} streams, "
        f"{args.followers} followers, a sample every {args.sample:g} s",
        flush=True,
    )
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
        rows.append(bench.run_backend(backend))
    load_after = os.getloadavg()
    total = time.perf_counter() - began

    if rows:
        print()
        print(render(rows))
        print(
            "(appends/s, shed, p50/p99: in each interval; p50/p99 from the pacer starting an "
            "append to its return; worst delay: the largest time.time() - event.time at any "
            "follower in the interval; max lag: head - the lowest follower position at the "
            "sample; CPU: the child process, % of one core)"
        )
        starts = [row["load_at_start"] for row in rows]
        print(load_line(load_before, load_after, starts, f"; {total:.0f} s in all"))
        print()
        for row in rows:
            for line in verdict_lines(row, args):
                print(line)
        if plot(rows, args.plot):
            print(f"wrote {args.plot}")
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, load_after),
        "versions": versions(pg_version),
        "options": {
            "backends": args.backend,
            "quick": args.quick,
            "minutes": args.minutes,
            "rate": args.rate,
            "streams": args.streams,
            "followers": args.followers,
            "sample_seconds": args.sample,
            "warmup_seconds": args.warmup,
            "max_in_flight": args.max_in_flight,
            "tick_seconds": TICK,
            "event": "LineAdded, workloads.event_data (~210 bytes), one an append, expected_version=ANY",
            "sqlite": "tidings.connect defaults",
            "postgres_notify": "auto (LISTEN/NOTIFY)",
        },
        "goals": {
            "max_follower_delay_s": MAX_DELAY,
            "rss_growth_max": RSS_GROWTH,
            "rss_growth_max_mib": RSS_GROWTH_MIB,
            "rate_share": RATE_SHARE,
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
