"""Managed event streams delivering to webhooks: one stream beside a raw aiohttp client,
100 streams at once, and the latency from an append to the receiver.

Usage::

    python bench/eventstreams.py [--runs N] [--quick] [--part one|many|latency ...]
                                 [--backend sqlite|postgres ...] [--pg-url URL]
                                 [--sqlite-dir DIR] [--output PATH] [--profile]

Every part runs on a fresh SQLite file (in a temporary directory) and on a fresh
PostgreSQL schema (``postgresql://postgres@127.0.0.1:5432/postgres?schema=bench_es_...``,
dropped afterwards), one after the other in the same run. The receiver
(``webhook_receiver.py``: aiohttp on uvloop) is a process of its own, so it does not share
the sender's event loop; every measurement is a child process of this script, on uvloop
when it is installed (as under ``tidings serve``), that opens the store with
``tidings.connect``, creates its streams through ``EventStreams(store, defaults,
allow=(127.0.0.0/8,))`` and runs them with a ``Dispatcher``:

``one``
    One webhook stream (no filter) delivers a preloaded log (100,000 events of ~210 bytes
    of data; 20,000 with ``--quick``) in batches of 50 and of 500. Beside it the raw
    ceiling: a plain ``aiohttp.ClientSession`` loop, in a child process as tidings', that
    POSTs the very bodies tidings sends (built beforehand from the same log with tidings'
    encoder, with the same four headers, signed beforehand) one after another, one in
    flight. events/s = events / (the receiver's last arrival - the start: just before
    ``Dispatcher.start()``, or the raw loop's first POST). The two take turns, and the
    ratio is the median of each run's tidings / raw. Goal >= 0.80.
``many``
    100 webhook streams, each with its own category filter (``categories: [tNNN]``), over
    a log of 100 categories interleaved in chunks of 50 (1,000 events each; 200 with
    ``--quick``), batches of 50, to one receiver: total events/s, and the completion
    time of the fastest and the slowest stream (from ``Dispatcher.start()``).
``latency``
    One stream (``initial_position: end``, batch_size 50, batch_timeout 5 ms) while the
    same process appends single events open-loop at 1,000 events/s (absolute deadlines;
    10 s after 2 s of warm-up, 3 s after 1 s with ``--quick``). Each event's data holds
    the ``time.time()`` taken just before its append; the receiver takes its own on
    arrival: p50, p99 and max of the difference (goal: p99 <= 50 ms), beside the append
    call's own p50/p99.

The receiver checks every path's positions come in increasing order; an event missing,
repeated or out of order fails the benchmark (exit status 1). Figures are medians of
``--runs`` runs (min-max beside them). ``--profile`` runs only the ``one`` part's
tidings series, once per batch size and backend, under cProfile, and prints where the
time went (the ``.prof`` files are written next to ``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from report import cell, fixed_width, med
from stores import Stores
from workloads import EVENT_TYPE, event_data

BENCH = Path(__file__).resolve().parent
DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PARTS = ("one", "many", "latency")
BACKENDS = ("sqlite", "postgres")
CHILD_TIMEOUT = 600.0  # seconds one measurement may take
START_TIMEOUT = 30.0  # seconds the receiver may take to listen
GOALS = {
    "one_vs_raw": 0.80,  # one stream's events/s / the raw aiohttp loop's
    "latency_p99_ms": 50.0,
}
PRELOAD_CHUNK = 1000  # events per append when preloading the one-stream log
FAN_CHUNK = 50  # events per append (one category) when preloading the many-streams log


@dataclass(frozen=True)
class Sizes:
    """How big each part is (full or ``--quick``)."""

    events: int  # the one-stream log
    batches: tuple[int, ...]  # batch sizes of the one-stream part
    streams: int  # streams of the many-streams part
    per_stream: int  # events of each of their categories
    many_batch: int
    rate: float  # appends/s of the latency part
    seconds: float  # its measured seconds
    warmup: float
    latency_batch: int
    batch_timeout: float  # seconds


FULL = Sizes(100_000, (50, 500), 100, 1000, 50, 1000.0, 10.0, 2.0, 50, 0.005)
QUICK = Sizes(20_000, (50, 500), 100, 200, 50, 1000.0, 3.0, 1.0, 50, 0.005)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each series (default 3)")
    parser.add_argument("--quick", action="store_true", help="20,000-event logs, 3-s latency runs")
    parser.add_argument("--part", choices=PARTS, action="append", help="only these (repeatable)")
    parser.add_argument(
        "--backend", choices=BACKENDS, action="append", help="stores (default both; repeatable)"
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "eventstreams.json")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile the one-stream part's tidings series (cProfile)",
    )
    # A child process's role (internal), and its arguments.
    roles = ("raw", "fair", "one", "many", "latency")
    parser.add_argument("--role", choices=roles, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--batch-timeout", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.sizes = QUICK if args.quick else FULL
    args.part = args.part or list(PARTS)
    args.backend = args.backend or list(BACKENDS)
    return args


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop when installed (as uvicorn does), else asyncio's loop."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# --- children: the measurements ------------------------------------------------------------


LOOPBACK_NETWORKS = ("127.0.0.0/8",)


class Control:
    """This child's requests to the receiver (reset, wait), on a session of their own."""

    def __init__(self, base: str) -> None:
        import aiohttp

        self.base = base
        self.session = aiohttp.ClientSession()

    async def reset(self, latency: bool = False) -> float:
        """Forget what came; the receiver's CPU seconds so far."""
        async with self.session.post(f"{self.base}/reset?latency={int(latency)}") as answer:
            return float((await answer.json())["cpu_seconds"])

    async def wait(self, events: int, timeout: float, latencies: bool = False) -> dict[str, Any]:  # noqa: ASYNC109
        """What came, once ``events`` have (or after ``timeout`` seconds)."""
        import aiohttp

        query = f"events={events}&timeout={timeout}&latencies={int(latencies)}"
        async with self.session.get(
            f"{self.base}/wait?{query}", timeout=aiohttp.ClientTimeout(total=timeout + 30)
        ) as answer:
            found: dict[str, Any] = await answer.json()
            return found

    async def close(self) -> None:
        await self.session.close()


def event_streams(store: Any) -> Any:
    import ipaddress

    from tidings.delivery.definitions import Defaults
    from tidings.delivery.streams import EventStreams

    allow = tuple(ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS)
    return EventStreams(store, Defaults(), allow=allow)


def definition(name: str, receiver: str, **settings: Any) -> Any:
    import msgspec

    from tidings.delivery.definitions import Definition

    hook = {"url": f"{receiver}/hook/{name}"}
    return msgspec.convert(
        {"name": name, "type": "webhook", "webhook": hook, **settings}, Definition
    )


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile around the block when ``path`` is given (dumped there)."""
    if path is None:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


def hook_result(hook: dict[str, Any] | None, t0: float, want: int, cpu: float) -> dict[str, Any]:
    """One path's delivery as a result: events/s from ``t0`` to its last arrival."""
    if hook is None:
        return {"events": 0, "complete": False, "disordered": 0, "rate": math.nan}
    seconds = hook["last_at"] - t0
    return {
        "events": hook["events"],
        "batches": hook["batches"],
        "seconds": round(seconds, 4),
        "rate": round(hook["events"] / seconds, 1) if seconds > 0 else math.nan,
        "startup_ms": round((hook["first_at"] - t0) * 1000, 1),
        "disordered": hook["disordered"],
        "complete": hook["events"] == want and hook["disordered"] == 0,
        "cpu_pct": round(100 * cpu / seconds, 1) if seconds > 0 else math.nan,
    }


async def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One stream over the preloaded log, batches of ``--batch``."""
    import tidings
    from tidings.delivery.dispatcher import Dispatcher

    store = await tidings.connect(args.store)
    control = Control(args.receiver)
    try:
        streams = event_streams(store)
        await streams.create(definition(args.name, args.receiver, batch_size=args.batch))
        receiver_cpu = await control.reset()
        dispatcher = Dispatcher(streams)
        with profiled(args.profile_out):
            cpu, t0 = time.process_time(), time.time()
            await dispatcher.start()
            found = await control.wait(args.events, timeout=CHILD_TIMEOUT / 2)
            cpu = time.process_time() - cpu
        await dispatcher.close()
        await streams.delete(args.name)
    finally:
        await control.close()
        await store.close()
    result = hook_result(found["hooks"].get(args.name), t0, args.events, cpu)
    if "seconds" in result:
        receiver = found["cpu_seconds"] - receiver_cpu
        result["receiver_cpu_pct"] = round(100 * receiver / result["seconds"], 1)
    return result


async def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The raw ceiling: tidings' bodies for the same log, POSTed by a plain aiohttp loop."""
    import aiohttp

    import tidings
    from tidings.delivery.runner import batch_id
    from tidings.delivery.signing import SigningKeys, headers, new_secret
    from tidings.delivery.webhook import Batch, _encode

    store = await tidings.connect(args.store)
    try:
        events = [e async for e in store.read_all(0, limit=args.events)]
    finally:
        await store.close()
    keys = SigningKeys.of(new_secret())
    stream_id = str(uuid.uuid4())
    requests = []
    for number, start in enumerate(range(0, len(events), args.batch), 1):
        chunk = events[start : start + args.batch]
        batch = Batch(args.name, batch_id(stream_id, number), number, chunk)
        body = _encode(batch)
        sent = {**headers(keys, batch.batch_id, body), "content-type": "application/json"}
        requests.append((body, sent))
    del events
    url = f"{args.receiver}/hook/{args.name}"
    control = Control(args.receiver)
    try:
        receiver_cpu = await control.reset()
        async with aiohttp.ClientSession() as session:
            cpu, t0 = time.process_time(), time.time()
            for body, sent in requests:
                async with session.post(
                    url, data=body, headers=sent, allow_redirects=False
                ) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"the receiver answered {answer.status}")
            cpu = time.process_time() - cpu
        found = await control.wait(args.events, timeout=60)
    finally:
        await control.close()
    result = hook_result(found["hooks"].get(args.name), t0, args.events, cpu)
    if "seconds" in result:
        receiver = found["cpu_seconds"] - receiver_cpu
        result["receiver_cpu_pct"] = round(100 * receiver / result["seconds"], 1)
    return result


async def run_fair(args: argparse.Namespace) -> dict[str, Any]:
    """A fair ceiling: what a careful hand-written Python sender does with the same log,
    one step after another: a page of rows read with the plain driver (sqlite3, asyncpg),
    each batch's body built with msgspec (the events as tidings sends them), signed
    (Standard Webhooks), POSTed (one in flight), then a checkpoint row updated (its own
    commit, as tidings moves its checkpoint per batch)."""
    from datetime import timedelta

    import aiohttp
    import msgspec

    from tidings.delivery.runner import batch_id
    from tidings.delivery.signing import SigningKeys, headers, new_secret

    class Event(msgspec.Struct):
        id: uuid.UUID
        stream: str
        type: str
        data: msgspec.Raw
        metadata: msgspec.Raw
        version: int
        position: int
        time: datetime

    class Body(msgspec.Struct):
        stream: str
        batch_id: str
        batch_number: int
        events: list[Event]

    encode = msgspec.json.Encoder().encode
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    keys = SigningKeys.of(new_secret())
    stream_id = str(uuid.uuid4())
    url = f"{args.receiver}/hook/{args.name}"
    sqlite = args.store.startswith("sqlite:")
    if sqlite:
        import sqlite3

        conn = sqlite3.connect(args.store.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")  # tidings' side writes (checkpoints)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_fair (name TEXT PRIMARY KEY, at INTEGER)")
        conn.execute("INSERT OR REPLACE INTO bench_fair VALUES (?, 0)", (args.name,))
        select = (
            "SELECT id, stream, type, data, metadata, version, position, time_ms "
            "FROM tidings_events WHERE position > ? ORDER BY position LIMIT ?"
        )

        async def page(after: int) -> list[Event]:
            return [
                Event(
                    uuid.UUID(bytes=r[0]), r[1], r[2], msgspec.Raw(r[3].encode()),
                    msgspec.Raw(r[4].encode()), r[5], r[6], epoch + timedelta(milliseconds=r[7]),
                )
                for r in conn.execute(select, (after, args.batch))
            ]  # fmt: skip

        async def moved(position: int) -> None:
            conn.execute("UPDATE bench_fair SET at = ? WHERE name = ?", (position, args.name))

        async def close() -> None:
            conn.close()
    else:
        import asyncpg

        base, _, query = args.store.partition("?")
        schema = dict(part.split("=", 1) for part in query.split("&") if part)["schema"]
        pg = await asyncpg.connect(base)
        await pg.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".bench_fair (name text PRIMARY KEY, at bigint)'
        )
        await pg.execute(
            f'INSERT INTO "{schema}".bench_fair VALUES ($1, 0) ON CONFLICT (name) DO NOTHING',
            args.name,
        )
        fetch = await pg.prepare(
            f"SELECT id, stream, type, data, metadata, version, position, time "
            f'FROM "{schema}".events WHERE position > $1 ORDER BY position LIMIT $2'
        )
        update = await pg.prepare(f'UPDATE "{schema}".bench_fair SET at = $1 WHERE name = $2')

        async def page(after: int) -> list[Event]:
            return [
                Event(r[0], r[1], r[2], msgspec.Raw(r[3].encode()), msgspec.Raw(r[4].encode()),
                      r[5], r[6], r[7])
                for r in await fetch.fetch(after, args.batch)
            ]  # fmt: skip

        async def moved(position: int) -> None:
            await update.fetch(position, args.name)

        async def close() -> None:
            await pg.close()

    control = Control(args.receiver)
    try:
        receiver_cpu = await control.reset()
        async with aiohttp.ClientSession() as session:
            cpu, t0 = time.process_time(), time.time()
            after, number = 0, 0
            while after < args.events:
                events = await page(after)
                if not events:
                    break
                number += 1
                body = encode(Body(args.name, batch_id(stream_id, number), number, events))
                msg = batch_id(stream_id, number)
                sent = {**headers(keys, msg, body), "content-type": "application/json"}
                async with session.post(
                    url, data=body, headers=sent, allow_redirects=False
                ) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"the receiver answered {answer.status}")
                after = events[-1].position
                await moved(after)
            cpu = time.process_time() - cpu
        found = await control.wait(args.events, timeout=60)
    finally:
        await control.close()
        await close()
    result = hook_result(found["hooks"].get(args.name), t0, args.events, cpu)
    if "seconds" in result:
        receiver = found["cpu_seconds"] - receiver_cpu
        result["receiver_cpu_pct"] = round(100 * receiver / result["seconds"], 1)
    return result


async def run_many(args: argparse.Namespace) -> dict[str, Any]:
    """``--streams`` streams, stream i filtering category ``tNNN``, each ``--events``."""
    import tidings
    from tidings.delivery.dispatcher import Dispatcher

    store = await tidings.connect(args.store)
    control = Control(args.receiver)
    names = [f"{args.name}-{i:03d}" for i in range(args.streams)]
    total = args.streams * args.events
    try:
        streams = event_streams(store)
        for i, name in enumerate(names):
            await streams.create(
                definition(
                    name, args.receiver, batch_size=args.batch, filter={"categories": [f"t{i:03d}"]}
                )
            )
        receiver_cpu = await control.reset()
        dispatcher = Dispatcher(streams)
        cpu, t0 = time.process_time(), time.time()
        await dispatcher.start()
        found = await control.wait(total, timeout=CHILD_TIMEOUT / 2)
        cpu = time.process_time() - cpu
        await dispatcher.close()
        for name in names:
            await streams.delete(name)
    finally:
        await control.close()
        await store.close()
    hooks = found["hooks"]
    per = [hook_result(hooks.get(name), t0, args.events, 0.0) for name in names]
    done = [p["seconds"] for p in per if "seconds" in p]
    last = max((h["last_at"] for h in hooks.values()), default=t0)
    seconds = last - t0
    return {
        "streams": args.streams,
        "events": found["total"],
        "seconds": round(seconds, 4),
        "rate": round(found["total"] / seconds, 1) if seconds > 0 else math.nan,
        "fastest_s": round(min(done), 4) if done else math.nan,
        "slowest_s": round(max(done), 4) if done else math.nan,
        "spread_s": round(max(done) - min(done), 4) if done else math.nan,
        "first_batch_s": {
            "min": round(min(p["startup_ms"] for p in per if "startup_ms" in p) / 1000, 4),
            "max": round(max(p["startup_ms"] for p in per if "startup_ms" in p) / 1000, 4),
        }
        if done
        else None,
        "incomplete_streams": sum(not p["complete"] for p in per),
        "disordered": sum(p["disordered"] for p in per),
        "complete": all(p["complete"] for p in per),
        "cpu_pct": round(100 * cpu / seconds, 1) if seconds > 0 else math.nan,
        "receiver_cpu_pct": round(100 * (found["cpu_seconds"] - receiver_cpu) / seconds, 1)
        if seconds > 0
        else math.nan,
    }


async def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Single events appended open-loop at ``--rate`` while one stream delivers them."""
    import tidings
    from tidings import NewEvent
    from tidings.delivery.dispatcher import Dispatcher

    store = await tidings.connect(args.store)
    control = Control(args.receiver)
    loop = asyncio.get_running_loop()
    appended: list[float] = []  # append call durations (ms) of measured events
    in_flight: set[asyncio.Task[None]] = set()
    most_in_flight = 0

    async def append(n: int, measured: bool) -> None:
        t = time.time()
        await store.append(f"lat-{n % 8}", [NewEvent(EVENT_TYPE, {"t": t, "n": n})])
        if measured:
            appended.append((time.time() - t) * 1000)

    try:
        streams = event_streams(store)
        await streams.create(
            definition(
                args.name,
                args.receiver,
                batch_size=args.batch,
                batch_timeout=args.batch_timeout,
                initial_position="end",
                filter={"categories": ["lat"]},
            )
        )
        await control.reset(latency=True)
        dispatcher = Dispatcher(streams)
        await dispatcher.start()
        while not dispatcher.runners:  # noqa: ASYNC110 (the first round claims it at once)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # its feed is following the log
        count = round(args.rate * (args.warmup + args.seconds))
        warm = round(args.rate * args.warmup)
        cpu = time.process_time()
        start = loop.time() + 0.01
        measure_from = 0.0
        for n in range(count):
            delay = start + n / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if n == warm:
                measure_from, cpu = time.time(), time.process_time()
            task = loop.create_task(append(n, n >= warm))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            most_in_flight = max(most_in_flight, len(in_flight))
        wrote_until = time.time()
        if in_flight:
            await asyncio.gather(*in_flight)
        found = await control.wait(count, timeout=10, latencies=True)
        cpu = time.process_time() - cpu
        await dispatcher.close()
        await streams.delete(args.name)
    finally:
        await control.close()
        await store.close()
    measured = sorted(ms for t, ms in found["latencies"] if t >= measure_from)
    hook = found["hooks"].get(args.name, {"events": 0, "batches": 0, "disordered": 0})
    appended.sort()
    seconds = wrote_until - measure_from
    return {
        "appended": count,
        "measured": len(measured),
        "delivered": hook["events"],
        "missing": count - hook["events"],
        "disordered": hook["disordered"],
        "complete": hook["events"] == count and hook["disordered"] == 0,
        "write_rate": round((count - warm) / seconds, 1) if seconds > 0 else math.nan,
        "p50_ms": round(percentile(measured, 50), 2),
        "p99_ms": round(percentile(measured, 99), 2),
        "max_ms": round(measured[-1], 2) if measured else math.nan,
        "append_p50_ms": round(percentile(appended, 50), 2),
        "append_p99_ms": round(percentile(appended, 99), 2),
        "most_appends_in_flight": most_in_flight,
        "events_per_batch": round(hook["events"] / hook["batches"], 2) if hook["batches"] else 0,
        "cpu_pct": round(100 * cpu / seconds, 1) if seconds > 0 else math.nan,
    }


ROLES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
    "one": run_one,
    "raw": run_raw,
    "fair": run_fair,
    "many": run_many,
    "latency": run_latency,
}


def run_role(args: argparse.Namespace) -> int:
    result = run_loop(ROLES[args.role](args))
    print(json.dumps(result), flush=True)
    return 0


# --- the runner: the receiver, stores, children -----------------------------------------------


def child(*options: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *options]


def run_child(options: list[str]) -> dict[str, Any]:
    """Run this script in a role; its last JSON line."""
    done = subprocess.run(
        child(*options), capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-5:]
        raise RuntimeError(f"{options[1]} failed: {' | '.join(tail)}")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result from the child: {done.stdout.strip()[-300:]!r}")
    found: dict[str, Any] = json.loads(lines[-1])
    return found


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """``webhook_receiver.py`` in a process of its own; its base URL once it listens."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "webhook_receiver.py")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while not line.startswith("listening on "):
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = proc.stdout.readline() if ready else ""
            if not ready or (not line and proc.poll() is not None):
                log.seek(0)
                raise RuntimeError(f"the receiver did not start: {log.read().strip()[-300:]}")
        yield line.split()[-1]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


async def preload(url: str, appends: list[tuple[str, int]]) -> int:
    """Append ``(stream, count)`` batches of ``event_data`` events, in order; the head."""
    import tidings
    from tidings import NewEvent

    store = await tidings.connect(url)
    try:
        n = 0
        for stream, count in appends:
            events = [NewEvent(EVENT_TYPE, event_data(n + i)) for i in range(count)]
            await store.append(stream, events)
            n += count
        return await store.head()
    finally:
        await store.close()


def one_log(events: int) -> list[tuple[str, int]]:
    """The one-stream log: ``events`` in appends of ``PRELOAD_CHUNK`` to ``order-<k>``."""
    chunks = range(0, events, PRELOAD_CHUNK)
    return [(f"order-{k}", min(PRELOAD_CHUNK, events - s)) for k, s in enumerate(chunks)]


def many_log(streams: int, per_stream: int) -> list[tuple[str, int]]:
    """The many-streams log: categories ``t000``... interleaved in chunks of ``FAN_CHUNK``."""
    rounds = range(0, per_stream, FAN_CHUNK)
    return [(f"t{i:03d}-1", min(FAN_CHUNK, per_stream - r)) for r in rounds for i in range(streams)]


BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


class Bench:
    """Runs the parts on each backend and collects their results."""

    def __init__(self, args: argparse.Namespace, receiver: str) -> None:
        self.args = args
        self.sizes: Sizes = args.sizes
        self.receiver = receiver
        self.stores = Stores(args, "es")
        self.failures: list[str] = []
        self.errors: list[str] = []

    def _child(self, role: str, store: str, name: str, **options: Any) -> dict[str, Any]:
        command = ["--role", role, "--store", store, "--receiver", self.receiver, "--name", name]
        for key, value in options.items():
            if value is not None:
                command += [f"--{key.replace('_', '-')}", str(value)]
        return run_child(command)

    def _check(self, where: str, result: dict[str, Any]) -> None:
        if not result.get("complete", False):
            self.failures.append(f"{where}: {json.dumps(result)}")

    def _log(self, where: str, began: float, text: str) -> None:
        print(f"{where:40} {text}  [{time.perf_counter() - began:.0f} s]", flush=True)

    # part one: one stream beside the raw loop

    def one(self, backend: str) -> list[dict[str, Any]]:
        rows = [
            {
                "backend": backend,
                "batch": b,
                "events": self.sizes.events,
                "tidings": [],
                "raw": [],
                "fair": [],
            }
            for b in self.sizes.batches
        ]
        with self.stores.fresh(backend) as url:
            began = time.perf_counter()
            head = asyncio.run(preload(url, one_log(self.sizes.events)))
            self._log(f"{backend} one: preload", began, f"{head:,} events")
            for run in range(1, self.args.runs + 1):
                for row in rows:
                    order = ("raw", "fair", "tidings") if run % 2 else ("tidings", "fair", "raw")
                    for series in order:
                        where = f"{backend} one b{row['batch']} {series} {run}/{self.args.runs}"
                        began = time.perf_counter()
                        role = series if series in ("raw", "fair") else "one"
                        name = f"{series}-b{row['batch']}-r{run}"
                        result = self._child(
                            role, url, name, batch=row["batch"], events=self.sizes.events
                        )
                        row[series].append(result)
                        self._check(where, result)
                        self._log(where, began, f"{result['rate']:,.0f} ev/s")
        for row in rows:
            pairs = zip(row["tidings"], row["raw"], strict=True)
            row["ratios"] = [round(t["rate"] / r["rate"], 3) for t, r in pairs]
            row["ratio"] = med(row["ratios"])
            fair = zip(row["tidings"], row["fair"], strict=True)
            row["fair_ratios"] = [round(t["rate"] / f["rate"], 3) for t, f in fair]
            row["fair_ratio"] = med(row["fair_ratios"])
            row["goal"] = GOALS["one_vs_raw"]
        return rows

    def profile(self, backend: str) -> list[str]:
        """The one-stream tidings series under cProfile, once per batch size."""
        paths = []
        with self.stores.fresh(backend) as url:
            asyncio.run(preload(url, one_log(self.sizes.events)))
            for batch in self.sizes.batches:
                path = self.args.output.parent / f"eventstreams-{backend}-b{batch}.prof"
                path.parent.mkdir(parents=True, exist_ok=True)
                began = time.perf_counter()
                result = self._child(
                    "one", url, f"prof-b{batch}", batch=batch, events=self.sizes.events,
                    profile_out=str(path),
                )  # fmt: skip
                self._log(
                    f"{backend} one b{batch} (profiled)", began, f"{result['rate']:,.0f} ev/s"
                )
                paths.append(str(path))
        return paths

    # part two: 100 streams

    def many(self, backend: str) -> dict[str, Any]:
        s = self.sizes
        row: dict[str, Any] = {
            "backend": backend,
            "streams": s.streams,
            "filter": "each its own category",
            "per_stream": s.per_stream,
            "batch": s.many_batch,
            "runs": [],
        }
        with self.stores.fresh(backend) as url:
            began = time.perf_counter()
            head = asyncio.run(preload(url, many_log(s.streams, s.per_stream)))
            self._log(f"{backend} many: preload", began, f"{head:,} events")
            for run in range(1, self.args.runs + 1):
                where = f"{backend} many {run}/{self.args.runs}"
                began = time.perf_counter()
                result = self._child(
                    "many", url, f"r{run}", batch=s.many_batch, events=s.per_stream,
                    streams=s.streams,
                )  # fmt: skip
                row["runs"].append(result)
                self._check(where, result)
                self._log(
                    where,
                    began,
                    f"{result['rate']:,.0f} ev/s, streams done in "
                    f"{result['fastest_s']:.2f}-{result['slowest_s']:.2f} s",
                )
        return row

    # part three: latency

    def latency(self, backend: str) -> dict[str, Any]:
        s = self.sizes
        row: dict[str, Any] = {
            "backend": backend,
            "rate": s.rate,
            "batch": s.latency_batch,
            "batch_timeout": s.batch_timeout,
            "seconds": s.seconds,
            "warmup": s.warmup,
            "goal_p99_ms": GOALS["latency_p99_ms"],
            "runs": [],
        }
        with self.stores.fresh(backend) as url:
            for run in range(1, self.args.runs + 1):
                where = f"{backend} latency {run}/{self.args.runs}"
                began = time.perf_counter()
                result = self._child(
                    "latency", url, f"lat-r{run}", batch=s.latency_batch, rate=s.rate,
                    seconds=s.seconds, warmup=s.warmup, batch_timeout=s.batch_timeout,
                )  # fmt: skip
                row["runs"].append(result)
                self._check(where, result)
                self._log(
                    where,
                    began,
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                    f"{result['write_rate']:,.0f} appends/s",
                )
        return row


# --- tables ---------------------------------------------------------------------------------


def _mark(value: float | None, ok: Callable[[float], bool]) -> str:
    return "-" if value is None else "pass" if ok(value) else "MISS"


def render_one(rows: list[dict[str, Any]]) -> str:
    goal = GOALS["one_vs_raw"]
    lines = [
        (
            "backend", "batch", "events", "tidings ev/s", "raw ev/s", "tidings/raw", "goal",
            "", "fair ev/s", "tidings/fair", "CPU sender % t/r/f", "CPU receiver % t/r/f",
        )
    ]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append((BACKEND_NAMES[row["backend"]], "-", "-", "ERROR", row["error"][:60]))
            lines[-1] += ("",) * (len(lines[0]) - len(lines[-1]))
            continue
        t, r, f = row["tidings"], row["raw"], row.get("fair", [])

        def both(key: str, t: list[Any] = t, r: list[Any] = r, f: list[Any] = f) -> str:
            tm, rm, fm = (med([x[key] for x in series]) for series in (t, r, f))
            return f"{tm or 0:.0f} / {rm or 0:.0f} / {fm or 0:.0f}"

        lines.append(
            (
                BACKEND_NAMES[row["backend"]], str(row["batch"]), f"{row['events']:,}",
                cell([x["rate"] for x in t]), cell([x["rate"] for x in r]),
                cell(row["ratios"], 2), f">= {goal:.2f}", _mark(row["ratio"], lambda v: v >= goal),
                cell([x["rate"] for x in f]), cell(row.get("fair_ratios", []), 2),
                both("cpu_pct"), both("receiver_cpu_pct"),
            )
        )  # fmt: skip
    text = fixed_width(lines)
    text.append(
        "(tidings/raw: the median of each run's ratio; raw: a plain aiohttp loop posting "
        "tidings' bodies, built and signed before the clock, one in flight; fair: a "
        "hand-written sender doing the same work as tidings in turn: plain-driver reads, "
        "msgspec bodies, signing, one POST in flight, a checkpoint commit per batch)"
    )
    return "\n".join(text)


def render_many(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "backend", "streams", "filter", "events/stream", "batch", "total ev/s",
            "fastest s", "slowest s", "spread s", "slowest/fastest", "last first batch s",
            "CPU sender/receiver %",
        )
    ]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append((BACKEND_NAMES[row["backend"]], "-", "-", "-", "-", "ERROR"))
            lines[-1] += ("",) * (len(lines[0]) - len(lines[-1]))
            continue
        runs = row["runs"]
        ratios = [x["slowest_s"] / x["fastest_s"] for x in runs if x["fastest_s"] > 0]
        lines.append(
            (
                BACKEND_NAMES[row["backend"]], str(row["streams"]), row["filter"],
                f"{row['per_stream']:,}", str(row["batch"]), cell([x["rate"] for x in runs]),
                cell([x["fastest_s"] for x in runs], 2), cell([x["slowest_s"] for x in runs], 2),
                cell([x["spread_s"] for x in runs], 2), cell(ratios, 2),
                cell([x["first_batch_s"]["max"] for x in runs if x["first_batch_s"]], 2),
                f"{med([x['cpu_pct'] for x in runs]) or 0:.0f} / "
                f"{med([x['receiver_cpu_pct'] for x in runs]) or 0:.0f}",
            )
        )  # fmt: skip
    text = fixed_width(lines)
    text.append(
        "(completion times from Dispatcher.start() to each stream's last arrival; last first "
        "batch: when the last stream's first batch arrived)"
    )
    return "\n".join(text)


def render_latency(rows: list[dict[str, Any]]) -> str:
    goal = GOALS["latency_p99_ms"]
    lines = [
        (
            "backend", "appends/s", "batch", "timeout ms", "p50 ms", "p99 ms", "max ms",
            "goal", "", "append p50/p99 ms", "ev/batch", "missing", "CPU %",
        )
    ]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append((BACKEND_NAMES[row["backend"]], "-", "-", "-", "ERROR"))
            lines[-1] += ("",) * (len(lines[0]) - len(lines[-1]))
            continue
        runs = row["runs"]
        p99 = med([x["p99_ms"] for x in runs])
        lines.append(
            (
                BACKEND_NAMES[row["backend"]], cell([x["write_rate"] for x in runs]),
                str(row["batch"]), f"{row['batch_timeout'] * 1000:g}",
                cell([x["p50_ms"] for x in runs], 1), cell([x["p99_ms"] for x in runs], 1),
                cell([x["max_ms"] for x in runs], 1), f"p99 <= {goal:g}",
                _mark(p99, lambda v: v <= goal),
                f"{med([x['append_p50_ms'] for x in runs]) or 0:.1f} / "
                f"{med([x['append_p99_ms'] for x in runs]) or 0:.1f}",
                cell([x["events_per_batch"] for x in runs], 1),
                str(max(x["missing"] for x in runs)), cell([x["cpu_pct"] for x in runs]),
            )
        )  # fmt: skip
    text = fixed_width(lines)
    text.append(
        "(latency: the receiver's time.time() on arrival minus the time.time() taken just "
        "before the append, in the event's data)"
    )
    return "\n".join(text)


def print_profile(path: str, limit: int = 25) -> None:
    """The profile's top functions by own time, then tidings' by cumulative time."""
    out = io.StringIO()
    pstats.Stats(path, stream=out).sort_stats("tottime").print_stats(limit)
    pstats.Stats(path, stream=out).sort_stats("cumulative").print_stats(r"/tidings/", limit)
    print(re.sub(r"\S*/site-packages/", "", out.getvalue()))


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args)
    began = time.perf_counter()
    results: dict[str, list[Any]] = {part: [] for part in args.part}
    with receiver_process() as receiver:
        bench = Bench(args, receiver)
        backends = []
        for backend in args.backend:
            problem = bench.stores.check_postgres() if backend == "postgres" else None
            if problem is not None:
                print(problem, file=sys.stderr)
                bench.errors.append(problem)
                for part in args.part:
                    results[part].append({"backend": backend, "error": problem})
            else:
                backends.append(backend)
        if args.profile:
            for backend in backends:
                for path in bench.profile(backend):
                    print(f"\n== {path} ==\n")
                    print_profile(path)
            return 1 if bench.errors else 0
        parts = {"one": bench.one, "many": bench.many, "latency": bench.latency}
        for part in PARTS:
            if part not in args.part:
                continue
            for backend in backends:
                try:
                    found = parts[part](backend)
                except Exception as exc:
                    message = f"{backend} {part}: {type(exc).__name__}: {exc}"
                    print(f"ERROR {message}", file=sys.stderr)
                    bench.errors.append(message)
                    found = {"backend": backend, "error": message}
                if isinstance(found, list):
                    results[part].extend(found)
                else:
                    results[part].append(found)
    total = time.perf_counter() - began
    renders = {"one": render_one, "many": render_many, "latency": render_latency}
    print()
    print("\n\n".join(renders[part](results[part]) for part in PARTS if part in args.part))
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "note": "what else the machine was doing is not known: compare runs made together",
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "parts": args.part,
            "backends": args.backend,
            "loop": loop_name(),
            "sizes": asdict(args.sizes),
        },
        "goals": GOALS,
        "total_seconds": round(total, 1),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output} ({total:.0f} s in all)")
    for failure in bench.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if bench.failures or bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
