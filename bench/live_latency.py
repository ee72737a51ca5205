"""End-to-end latency of a live read: a writer and a reader in separate processes.

Usage::

    python bench/live_latency.py [--runs N] [--quick] [--rate R] [--seconds S]
                                 [--warmup S] [--backend sqlite-nats|sqlite-poll|postgres ...]
                                 [--pg-url URL] [--nats-url URL] [--output PATH]

A reader process follows ``store.read_all(from_position=head, follow=True)`` and
notes ``time.perf_counter()`` (CLOCK_MONOTONIC, shared by processes on Linux) when
each position arrives; a writer process appends single ~210-byte events at ``--rate``
per second, on absolute deadlines (open loop), and notes the time each ``append`` returned. The
latency of an event is reader time - writer time (slightly negative when the
notification beats the writer's own acknowledgement). Warm-up events are not counted.

Backends: ``sqlite-nats`` (a SQLite file, heads shared over NATS), ``sqlite-poll``
(the same with ``notify=None``: the reader only polls, every second) and ``postgres``
(a fresh schema ``bench_<pid>_<n>``, LISTEN/NOTIFY on the same database, dropped after).
Each run starts a fresh reader and writer process (this script with ``--role``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))  # benchmark the working tree's tidings

from report import fixed_width, machine_info  # noqa: E402
from workloads import EVENT_TYPE, event_data  # noqa: E402

import tidings  # noqa: E402

DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
BACKENDS = ("sqlite-nats", "sqlite-poll", "postgres")
GOALS = {"postgres": {"p50": 2.0, "p99": 10.0}}  # milliseconds
CATCH_UP = 10.0  # seconds the reader may take to see the writer's last event
READY_TIMEOUT = 60.0
LABELS = {"sqlite-poll": "none (poll 1 s)", "postgres": "LISTEN/NOTIFY"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per backend (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 s measured after 0.5 s warm-up")
    parser.add_argument("--rate", type=float, default=1000.0, help="appends/s (default 1000)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, help="uncounted seconds first (default 1)")
    parser.add_argument("--backend", choices=BACKENDS, action="append", help="repeatable")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL, help="(default %(default)s)")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "live_latency.json")
    # A child process's role (internal): reader or writer of one run.
    parser.add_argument("--role", choices=("reader", "writer"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--notify", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rate <= 0:
        parser.error("--runs and --rate must be positive")
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.backend = args.backend or list(BACKENDS)
    return args


def notify_option(text: str) -> str | None:
    """The ``notify`` argument of ``tidings.connect`` from its command-line form."""
    return None if text == "none" else text


# --- the child processes ----------------------------------------------------------------


async def reader(args: argparse.Namespace) -> dict[str, Any]:
    """Follow the log and time each position until the writer's last one (read from stdin)."""
    store = await tidings.connect(args.url, notify=notify_option(args.notify))
    async with store:
        head = await store.head()
        times: dict[int, float] = {}
        goal: float = math.inf
        done = asyncio.Event()

        async def follow() -> None:
            async for event in store.read_all(from_position=head, follow=True):
                times[event.position] = time.perf_counter()
                if event.position >= goal:
                    done.set()

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)  # the first (empty) page is read; the follower now waits
        print("ready", flush=True)
        goal = int(await asyncio.to_thread(sys.stdin.readline))
        if max(times, default=head) >= goal:
            done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), CATCH_UP)
        task.cancel()
    return {"times": list(times.items())}


async def writer(args: argparse.Namespace) -> dict[str, Any]:
    """Start one append every 1/``--rate`` s (open loop: an append does not wait for the
    one before, as independent clients would not); note when each append returned."""
    store = await tidings.connect(args.url, notify=notify_option(args.notify))
    async with store:
        warm = round(args.warmup * args.rate)
        records: list[tuple[int, float]] = []
        lag = 0.0  # the furthest behind schedule an append started, in the measured part
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            result = await store.append("latency", [tidings.NewEvent(EVENT_TYPE, event_data(i))])
            if i >= warm:
                records.append((result.position, time.perf_counter()))

        start = time.perf_counter() + 0.01
        for i in range(warm + round(args.seconds * args.rate)):
            delay = start + i / args.rate - time.perf_counter()  # absolute deadlines: no drift
            if delay > 0:
                await asyncio.sleep(delay)
            elif i >= warm:
                lag = max(lag, -delay)
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    records.sort()
    times = sorted(t for _, t in records)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {"records": records, "lag_ms": lag * 1000, "rate": rate}


# --- one run: start the reader, run the writer, join by position ------------------------


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"the reader did not get ready in {timeout:g} s")
    return proc.stdout.readline().strip()


def one_run(args: argparse.Namespace, url: str, notify: str) -> dict[str, Any]:
    child = [sys.executable, __file__, "--url", url, "--notify", notify]
    with tempfile.TemporaryDirectory(prefix="tidings_latency_") as tmp:
        reader_out, writer_out = os.path.join(tmp, "reader.json"), os.path.join(tmp, "writer.json")
        reader = subprocess.Popen(
            [*child, "--role", "reader", "--out", reader_out],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if read_line(reader, READY_TIMEOUT) != "ready":
                raise RuntimeError(f"the reader failed (exit status {reader.wait()})")
            timing = [f"--rate={args.rate}", f"--seconds={args.seconds}", f"--warmup={args.warmup}"]
            budget = 60 + 2 * (args.seconds + args.warmup)
            written = subprocess.run(
                [*child, "--role", "writer", "--out", writer_out, *timing],
                stdout=subprocess.PIPE,
                text=True,
                timeout=budget,
                check=True,
            )
            assert reader.stdin is not None
            reader.stdin.write(written.stdout.strip().splitlines()[-1] + "\n")
            reader.stdin.close()
            if reader.wait(timeout=CATCH_UP + 30) != 0:
                raise RuntimeError(f"the reader failed (exit status {reader.returncode})")
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        seen = dict(json.loads(Path(reader_out).read_text())["times"])
        wrote = json.loads(Path(writer_out).read_text())
    seen = {int(k): v for k, v in seen.items()}
    latencies = sorted((seen[p] - t) * 1000 for p, t in wrote["records"] if p in seen)
    if not latencies:
        raise RuntimeError("the reader saw none of the measured events")
    return {
        "count": len(latencies),
        "missing": len(wrote["records"]) - len(latencies),
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)],
        "max": latencies[-1],
        "min": latencies[0],
        "write_rate": wrote["rate"],
        "lag_ms": wrote["lag_ms"],
    }


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    return parts._replace(query=urlencode([*parse_qsl(parts.query), ("schema", schema)])).geturl()


async def drop_schema(pg_url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(urlsplit(pg_url)._replace(query="").geturl(), timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def run_backend(args: argparse.Namespace, backend: str, number: int) -> dict[str, Any]:
    if backend == "postgres":
        schema = f"bench_{os.getpid()}_{number}"
        try:
            return one_run(args, with_schema(args.pg_url, schema), "auto")
        finally:
            asyncio.run(drop_schema(args.pg_url, schema))
    with tempfile.TemporaryDirectory(prefix="tidings_latency_") as tmp:
        notify = args.nats_url if backend == "sqlite-nats" else "none"
        return one_run(args, f"sqlite:///{tmp}/events.db", notify)


# --- the report -------------------------------------------------------------------------

STATS = ("p50", "p99", "max")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (*STATS, "count", "missing", "write_rate", "lag_ms")
    return {k: statistics.median(r[k] for r in runs) for k in keys} if runs else {}


def render(results: dict[str, dict[str, Any]]) -> str:
    header = ("backend", "notify", *(f"{k} ms" for k in STATS), "count", "missing", "writes/s")
    header += ("goal", "")
    lines = [header]
    errors = []
    for backend, result in results.items():
        runs, med = result["runs"], result["median"]

        def cell(key: str, runs: list[dict[str, Any]] = runs, med: dict[str, Any] = med) -> str:
            values = [r[key] for r in runs]
            return f"{med[key]:.2f} ({min(values):.2f}-{max(values):.2f})" if runs else "-"

        goals = GOALS.get(backend)
        goal = ", ".join(f"{k} <= {v:g}" for k, v in goals.items()) if goals else "-"
        passed = all(med[k] <= v for k, v in goals.items()) if goals and runs else None
        lines.append(
            (
                backend,
                result["notify"],
                *(cell(k) for k in STATS),
                f"{med['count']:,.0f}" if runs else "-",
                f"{med['missing']:,.0f}" if runs else "-",
                f"{med['write_rate']:,.0f}" if runs else "-",
                goal,
                {True: "pass", False: "MISS", None: "error" if result["error"] else "-"}[passed],
            )
        )
        if result["error"]:
            errors.append(f"ERROR ({backend}): {result['error']}")
    text = fixed_width(lines)
    text += [
        "",
        "ms: reader's receipt - writer's append return, median over runs (min-max of the runs).",
        "count / missing: measured events seen / not seen by the reader; writes/s: pace achieved",
        "(below --rate when appends take longer than the interval; max lag behind schedule in the JSON).",
        *errors,
    ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:  # a child process
        data = asyncio.run(reader(args) if args.role == "reader" else writer(args))
        Path(args.out).write_text(json.dumps(data))
        if args.role == "writer":
            print(data["records"][-1][0] if data["records"] else 0, flush=True)
        return 0
    load = os.getloadavg()[0]
    began = time.perf_counter()
    print(
        f"live read latency: {args.rate:,.0f} appends/s for {args.seconds:g} s after {args.warmup:g} s warm-up",
        flush=True,
    )
    numbers = itertools.count(1)
    results: dict[str, dict[str, Any]] = {}
    for backend in args.backend:
        notify = LABELS.get(backend, args.nats_url)
        result: dict[str, Any] = {"notify": notify, "runs": [], "error": None}
        results[backend] = result
        for run in range(1, args.runs + 1):
            try:
                measured = run_backend(args, backend, next(numbers))
            except Exception as exc:
                result["error"] = f"{type(exc).__name__}: {exc}".strip()
                print(f"{backend:11} run {run}/{args.runs}  ERROR {result['error']}", flush=True)
                break
            result["runs"].append(measured)
            print(
                f"{backend:11} run {run}/{args.runs}  p50 {measured['p50']:.2f} ms  p99 {measured['p99']:.2f} ms  "
                f"max {measured['max']:.2f} ms  ({measured['count']} events, {measured['missing']} missing)",
                flush=True,
            )
        result["median"] = summarise(result["runs"])
    print()
    print(render(results))
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load),
        "options": {k: getattr(args, k) for k in ("runs", "rate", "seconds", "warmup", "backend")},
        "goals_ms": GOALS,
        "total_seconds": round(time.perf_counter() - began, 1),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 1 if any(r["error"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
