"""Durable subscriptions: catch-up throughput and live delay, beside the store's read rate.

Usage::

    python bench/subscriptions.py [--runs N] [--events N] [--backend sqlite|postgres ...]
                                  [--pg-url URL] [--members 1 3] [--output PATH]

Catch-up: the log is pre-loaded with ``--events`` ~210-byte events; a subscription
with a no-op handler reads it from the beginning (batch sizes 100 and 1,000) and is
timed until its checkpoint reaches the head; the store's own ``read_all`` of the same
log is timed beside it. Live delay: a writer appends single events at 1,000/s (open
loop) while 1 or 3 members (a consumer group, in this process) handle them; the delay
is the handler's receipt minus the append's return. Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from report import fixed_width, machine_info
from workloads import event_data

import tidings

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
RESULTS = Path(__file__).resolve().parent / "results" / "subscriptions.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--members", type=int, nargs="*", default=[1, 3])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    # A child process (internal): one member of the live subscription.
    parser.add_argument("--role", choices=("member",), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--notify", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--member", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


async def preload(store: tidings.EventStore, count: int) -> None:
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                store.append(
                    f"s-{start + j}", [tidings.NewEvent("Load", event_data(k)) for k in range(100)]
                )
                for j in range(0, min(1000, count - start), 100)
            )
        )


async def read_rate(store: tidings.EventStore) -> float:
    began, n = time.perf_counter(), 0
    async for _ in store.read_all():
        n += 1
    return n / (time.perf_counter() - began)


async def catch_up(store: Any, batch_size: int) -> float:
    head = await store.head()

    async def noop(events: list[tidings.RecordedEvent]) -> None:
        return None

    name = f"bench-{batch_size}-{time.time_ns()}"
    began = time.perf_counter()
    async with store.subscribe(name, noop, batch_size=batch_size) as sub:
        while (sub.position or 0) < head:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    return head / (time.perf_counter() - began)


async def member(args: argparse.Namespace) -> None:
    """A child process: one member (or the single runner) of the live subscription.

    Notes ``time.perf_counter()`` (CLOCK_MONOTONIC, shared by processes on Linux) when
    each position reaches the handler; on a line from stdin it stops and writes them.
    """
    store = await tidings.connect(args.url, notify=args.notify or "auto")
    received: dict[int, float] = {}

    async def handler(events: list[tidings.RecordedEvent]) -> None:
        now = time.perf_counter()
        for e in events:
            received.setdefault(e.position, now)

    group = {"member": args.member, "partitions": 12, "lease_ttl": 2.0} if args.member else {}
    sub = store.subscribe(args.name, handler, start=args.start, batch_timeout=0.0, **group)
    async with store, sub:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(list(received.items())))


def spawn_member(url: str, notify: str | None, name: str, start: int, who: str, out: Path) -> Any:
    command = [sys.executable, __file__, "--role", "member", "--url", url, "--name", name]
    command += ["--start", str(start), "--member", who, "--out", str(out)]
    if notify:
        command += ["--notify", notify]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def live_delay(
    store: Any, url: str, notify: str | None, members: int, rate: float, seconds: float
) -> dict[str, float]:
    """Append at ``rate`` (open loop) while ``members`` processes handle the events."""
    returned: dict[int, float] = {}
    name = f"live-{members}-{time.time_ns()}"
    head = await store.head()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"m{i}.json" for i in range(members)]
        procs = [
            spawn_member(url, notify, name, head, f"m{i}" if members > 1 else "", out)
            for i, out in enumerate(outs)
        ]
        try:
            for proc in procs:
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                assert line.strip() == "ready", f"member did not start: {line!r}"
            await asyncio.sleep(1.0 if members == 1 else 3.0)  # members settle their partitions
            pending: set[asyncio.Task[None]] = set()

            async def one(i: int) -> None:
                result = await store.append(
                    f"live-{i % 50}", [tidings.NewEvent("Live", event_data(i))]
                )
                returned[result.position] = time.perf_counter()

            began = time.perf_counter()
            for i in range(int(rate * seconds)):
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            last = max(returned)
            async with asyncio.timeout(60):
                while True:
                    info = {i.name: i for i in await store.subscriptions()}.get(name)
                    if info is not None and info.checkpoint >= last:
                        break
                    await asyncio.sleep(0.05)
        finally:
            for proc in procs:
                with contextlib.suppress(OSError):
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
            for proc in procs:
                await asyncio.to_thread(proc.wait, 30)
        received: dict[int, float] = {}
        for out in outs:
            for position, at in json.loads(out.read_text()):
                received[position] = min(at, received.get(position, at))
    missing = returned.keys() - received.keys()
    delays = sorted((received[p] - t) * 1000 for p, t in returned.items() if p in received)
    return {
        "p50_ms": delays[len(delays) // 2],
        "p99_ms": delays[int(len(delays) * 0.99)],
        "count": len(delays),
        "missing": len(missing),
    }


async def bench_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    out: dict[str, Any] = {"read": [], "catch_up_100": [], "catch_up_1000": [], "live": {}}
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_subs_{int(time.time())}"
        url = (
            f"sqlite:///{tmp}/subs.db" if backend == "sqlite" else f"{args.pg_url}?schema={schema}"
        )
        # Members run in other processes: SQLite shares its head over NATS.
        notify = args.nats_url if backend == "sqlite" else None
        store = await tidings.connect(url, notify=notify or "auto")
        try:
            await preload(store, args.events)
            for _ in range(args.runs):
                out["read"].append(await read_rate(store))
                out["catch_up_100"].append(await catch_up(store, 100))
                out["catch_up_1000"].append(await catch_up(store, 1000))
            for members in args.members:
                runs = [
                    await live_delay(store, url, notify, members, args.rate, args.seconds)
                    for _ in range(args.runs)
                ]
                out["live"][members] = runs
        finally:
            await store.close()
            if backend == "postgres":
                conn = await asyncpg.connect(args.pg_url)
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()
    return out


def render(results: dict[str, dict[str, Any]]) -> str:
    med = statistics.median
    rows = [["backend", "store read_all ev/s", "catch-up b=100", "catch-up b=1000", "goal"]]
    for backend, r in results.items():
        best = max(med(r["catch_up_100"]), med(r["catch_up_1000"]))
        rows.append(
            [
                backend,
                f"{med(r['read']):,.0f}",
                f"{med(r['catch_up_100']):,.0f}",
                f"{med(r['catch_up_1000']):,.0f}",
                f">= 100,000 {'pass' if best >= 100_000 else 'MISS'}",
            ]
        )
    lines = fixed_width(rows)
    live = [["backend", "members", "p50 ms", "p99 ms", "events", "missing"]]
    for backend, r in results.items():
        for members, runs in r["live"].items():
            live.append(
                [
                    backend,
                    str(members),
                    f"{med(x['p50_ms'] for x in runs):.2f}",
                    f"{med(x['p99_ms'] for x in runs):.2f}",
                    str(runs[0]["count"]),
                    str(sum(x["missing"] for x in runs)),
                ]
            )
    return "\n".join([*lines, "", *fixed_width(live)])


async def main() -> None:
    args = parse_args()
    if args.role == "member":
        await member(args)
        return
    load = os.getloadavg()[0]
    if args.quick:
        args.events, args.runs, args.seconds = 20_000, 1, 1.0
    results = {b: await bench_backend(args, b) for b in args.backend or ["sqlite", "postgres"]}
    print(f"subscriptions: {args.events:,} events, medians of {args.runs} runs, load {load:.2f}")
    print(render(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(load), "results": results}
    args.output.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
