"""The tidings server over HTTP: appends, SSE fan-out and remote reads, each beside its ceiling.

Usage::

    python bench/http.py [--runs N] [--quick] [--part appends|sse|read ...]
                         [--loader auto|wrk|aiohttp] [--clients N] [--sse-rate R]
                         [--pg-url URL] [--sqlite-dir DIR] [--output PATH]

Every server (``tidings serve``, or this script's raw FastAPI/Starlette app under uvicorn
with the settings ``tidings serve`` uses) runs in a process of its own, and every load
generator in another:

``appends``
    64 keep-alive clients (wrk with a Lua script, or this script's aiohttp load process
    when wrk is not installed) POST 1-event and 100-event bodies to ``tidings serve`` on a
    fresh SQLite file and on a fresh PostgreSQL schema; beside them the same appends made
    in process (64 asyncio tasks on ``tidings.connect(url)``, the same store) and a
    trivial POST endpoint on the same stack (the HTTP ceiling).
``sse``
    ``--clients`` (1,000) clients in a few processes follow ``/events/live`` while a
    writer process appends ``--sse-rate`` (200) events/s; the append time is in each
    event's data, so each client times every delivery. Then the writer rate is raised
    step by step until latency or drops break. The same clients and writer run against a
    raw Starlette streaming endpoint that fans the same frames out.
``read``
    The remote store's ``read_all`` of a pre-loaded log (100,000 events) beside the
    in-process ``read_all`` of the same store, in decoded events/s.

The name of this file is the standard library's ``http`` package's: a script in this
directory finds it first on ``sys.path``, so when it is imported as ``http`` it puts the
real package in its place (see the first lines).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _become_stdlib_http() -> None:
    """Load the standard library's ``http`` as the module being imported (this one)."""
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    spec = importlib.machinery.PathFinder.find_spec("http", path)
    if spec is None or spec.loader is None:
        raise ImportError("the standard library's http package was not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["http"] = module  # what the import statement hands back
    spec.loader.exec_module(module)


if __name__ == "http":  # a script in bench/ imported the stdlib's http and found this file
    _become_stdlib_http()
elif __name__ == "__main__":  # and in this script, keep this directory from shadowing it
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]

# Only the standard library here: third-party imports (aiohttp, uvicorn, fastapi...) are
# made in the functions that need them, so that the lines above stay enough.
import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from report import cell, fixed_width, machine_info, med  # noqa: E402
from stores import Stores  # noqa: E402
from workloads import EVENT_TYPE, event_data  # noqa: E402

DEFAULT_PG_URL = os.environ.get(
    "TIDINGS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PARTS = ("appends", "sse", "read")
BACKENDS = ("sqlite", "postgres")
CONNS = 64  # concurrent keep-alive clients (and in-process tasks) of the append part
STREAMS = 64  # streams the appends rotate over (one per in-process task)
START_TIMEOUT = 60.0  # seconds a server may take to listen
GOALS = {
    "append_1_vs_trivial": 0.60,  # HTTP 1-event requests/s / trivial endpoint requests/s
    "append_100_vs_inprocess": 0.70,  # HTTP 100-event events/s / in-process events/s
    "sse_p99_ms": 50.0,
    "sse_dropped": 0,
    "read_vs_inprocess": 0.50,
}


@dataclass(frozen=True)
class Sizes:
    """How long and how big each part is (full or ``--quick``)."""

    seconds: int  # measured seconds of one append run (wrk takes whole seconds)
    warmup: int  # seconds of uncounted appends before it
    clients: int  # SSE clients
    client_procs: int  # processes they are spread over
    sse_seconds: float  # one measured SSE run at --sse-rate
    sse_warmup: float
    step_seconds: float  # one step of the saturation ladder
    steps: int  # the most steps it takes
    read_events: int  # events pre-loaded for the read part
    drain_idle: float  # seconds without a frame after which a phase's stragglers are late
    drain_cap: float  # seconds the writer waits for its last appends, then the clients for the rest


FULL = Sizes(3, 1, 1000, 4, 10.0, 1.0, 3.0, 4, 100_000, 2.0, 5.0)
QUICK = Sizes(1, 0, 200, 2, 2.0, 0.5, 1.0, 1, 10_000, 1.0, 2.0)
LADDER_UP = 2.0  # each saturation step multiplies the rate by this
LADDER_DOWN = 0.25  # ... or by this, when --sse-rate itself does not hold
WARM_RATE = 20.0  # events/s of the SSE warm-up (the clients join; no backlog is built)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each series (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="one run, 1-s appends, 200 SSE clients (~1 minute)"
    )
    parser.add_argument("--part", choices=PARTS, action="append", help="only these (repeatable)")
    parser.add_argument(
        "--backend", choices=BACKENDS, action="append", help="stores (default both; repeatable)"
    )
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="HTTP load generator (default: wrk if installed, else aiohttp)",
    )
    parser.add_argument("--clients", type=int, help="SSE clients (default 1000; quick 200)")
    parser.add_argument("--sse-rate", type=float, default=200.0, help="appends/s (default 200)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="(default %(default)s)")
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "http.json")
    # A child process's role (internal), and its arguments.
    roles = ("raw-server", "load", "inprocess", "sse-clients", "writer", "reader")
    parser.add_argument("--role", choices=roles, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--phase", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.sse_rate <= 0:
        parser.error("--runs and --sse-rate must be positive")
    args.sizes = QUICK if args.quick else FULL
    if args.quick:
        args.runs = 1
    args.clients = args.clients or args.sizes.clients
    args.part = args.part or list(PARTS)
    args.backend = args.backend or list(BACKENDS)
    return args


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def append_body(batch: int, start: int = 0) -> bytes:
    """The JSON body of a ``batch``-event append (~210-byte events, ``workloads.event_data``)."""
    events = [{"type": EVENT_TYPE, "data": event_data(start + i)} for i in range(batch)]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


# --- child: the raw app (a trivial endpoint and raw SSE fan-out) ------------------------------


def raw_app() -> Any:
    """A FastAPI app with nothing of tidings in it: the ceiling of the stack.

    ``POST /ping/starlette`` and ``POST /ping/fastapi`` read the body and answer a small
    JSON body (the first a plain Starlette route, the second a FastAPI route, as tidings'
    are); ``GET /events/live`` streams with Starlette's ``StreamingResponse`` what
    ``POST /publish`` (an append body) fans out: each event framed as tidings frames it
    (``id:`` the position, ``data:`` the recorded event's JSON with the same fields).
    """
    import uuid

    import msgspec
    from fastapi import FastAPI, Request
    from starlette.responses import Response, StreamingResponse

    # defstruct: this module's annotations are postponed strings, not resolvable here.
    RawEvent = msgspec.defstruct("RawEvent", [("type", str), ("data", msgspec.Raw)])
    RawBody = msgspec.defstruct("RawBody", [("events", list[RawEvent])])  # type: ignore[valid-type]

    decode = msgspec.json.Decoder(RawBody).decode
    encode = msgspec.json.Encoder().encode
    clients: set[RawClient] = set()
    position = 0

    class RawClient:
        def __init__(self) -> None:
            self.queue: list[bytes] = []
            self.wake = asyncio.Event()

    async def ping(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', 201, media_type="application/json")

    async def publish(request: Request) -> Response:
        nonlocal position
        body = decode(await request.body())
        for event in body.events:
            position += 1
            recorded = {
                "id": str(uuid.uuid4()),
                "stream": "fanout",
                "type": event.type,
                "data": event.data,
                "metadata": {},
                "version": position - 1,
                "position": position,
                "time": datetime.now(UTC),
            }
            frame = b"id: %d\ndata: %s\n\n" % (position, encode(recorded))
            for client in clients:
                client.queue.append(frame)
                client.wake.set()
        return Response(b'{"position":%d}' % position, 201, media_type="application/json")

    async def live(request: Request) -> Response:
        client = RawClient()

        async def frames() -> Any:
            clients.add(client)
            try:
                yield b"retry: 1000\n\n"
                while True:
                    await client.wake.wait()
                    client.wake.clear()
                    data = b"".join(client.queue)
                    client.queue.clear()
                    yield data
            finally:
                clients.discard(client)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    # Real classes, not this module's postponed strings, for FastAPI's signature reading.
    fastapi_ping = _typed(ping, Request, Response)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_route("/ping/starlette", ping, methods=["POST"])
    app.add_api_route("/ping/fastapi", fastapi_ping, methods=["POST"], status_code=201)
    app.add_route("/publish", publish, methods=["POST"])
    app.add_route("/events/live", live, methods=["GET"])
    return app


def _typed(function: Any, request: type, response: type) -> Any:
    async def endpoint(request: Any) -> Any:
        return await function(request)

    endpoint.__annotations__ = {"request": request, "return": response}
    return endpoint


def serve_raw() -> None:
    """Serve ``raw_app`` as ``tidings serve`` serves its app (see tidings.server.run)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.servers:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"raw: listening on http://{host}:{port}", flush=True)

    config = uvicorn.Config(
        raw_app(),
        host="127.0.0.1",
        port=0,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=10,
        log_level="info",
    )
    Server(config).run()


# --- child: the aiohttp load generator and the in-process appends ------------------------------


async def _timed_loop(
    tasks: int, warmup: float, seconds: float, one: Any
) -> tuple[list[float], int, float]:
    """Run ``tasks`` loops of ``await one(task, n)`` (True: it succeeded) for ``warmup`` +
    ``seconds``; return the latencies and errors of the calls that ended in the measured
    part, and its length."""
    start = time.perf_counter()
    t0, t1 = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    errors = 0

    async def loop(task: int) -> None:
        nonlocal errors
        for n in itertools.count():
            began = time.perf_counter()
            if began >= t1:
                return
            ok = await one(task, n)
            ended = time.perf_counter()
            if t0 <= ended <= t1:
                if ok:
                    latencies.append(ended - began)
                else:
                    errors += 1

    await asyncio.gather(*(loop(i) for i in range(tasks)))
    return latencies, errors, seconds


def _load_result(
    latencies: list[float], errors: int, seconds: float, batch: int, **extra: Any
) -> dict[str, Any]:
    latencies.sort()
    return {
        "requests": len(latencies),
        "events": len(latencies) * batch,
        "seconds": seconds,
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else math.nan,
        **extra,
    }


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """POST append bodies from ``CONNS`` tasks over one keep-alive session."""
    import aiohttp

    batch = args.batch[0]
    body = append_body(batch)
    connector = aiohttp.TCPConnector(limit=CONNS)
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:

        async def one(task: int, n: int) -> bool:
            path = args.path % (task, n % STREAMS) if "%" in args.path else args.path
            try:
                async with s.post(args.url + path, data=body) as response:
                    await response.read()
                    return response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                return False

        latencies, errors, seconds = await _timed_loop(CONNS, args.warmup, args.seconds, one)
    return _load_result(latencies, errors, seconds, batch)


async def inprocess(args: argparse.Namespace) -> dict[str, Any]:
    """The same appends made in this process: ``CONNS`` tasks on ``tidings.connect(url)``."""
    import tidings

    results: dict[str, Any] = {}
    store = await tidings.connect(args.url)
    async with store:
        for batch in args.batch:
            events = [tidings.NewEvent(EVENT_TYPE, event_data(i)) for i in range(batch)]
            prefix = f"inprocess{batch}-{os.getpid()}"

            async def one(task: int, n: int, events: Any = events, prefix: str = prefix) -> bool:
                await store.append(f"{prefix}-{task}", events)
                return True

            latencies, errors, seconds = await _timed_loop(CONNS, args.warmup, args.seconds, one)
            results[str(batch)] = _load_result(latencies, errors, seconds, batch)
    return results


# --- child: SSE clients and the writer ---------------------------------------------------------


class SSEClients:
    """``--count`` connections following one live URL, each parsing its frames.

    Every frame's ``data`` is decoded for the writer's ``phase`` and ``sent`` time
    (perf_counter, CLOCK_MONOTONIC: comparable across processes). Commands on stdin:
    ``report <phase> <events> <cap>`` waits until every open connection has that
    phase's events, none came for ``drain_idle`` s, or ``cap`` s have passed, and prints
    the phase's figures as JSON (what has not come by then is late); ``stop`` ends it.
    """

    def __init__(self, url: str, count: int, drain_idle: float) -> None:
        import msgspec

        # Only what is timed; msgspec skips the other fields without building them.
        # gc=False: this load generator should not pause for its own garbage collector.
        Payload = msgspec.defstruct("Payload", [("phase", int), ("sent", float)], gc=False)
        Frame = msgspec.defstruct("Frame", [("data", Payload)], gc=False)

        self.decode = msgspec.json.Decoder(Frame).decode
        self.url = url
        self.count = count
        self.drain_idle = drain_idle
        self.ready = 0
        self.failed: list[str] = []
        self.dropped: list[str] = []
        self.all_ready = asyncio.Event()
        self.stopping = False
        self.hist: dict[int, Counter[int]] = {}  # phase -> latency in 0.1 ms -> count
        self.first_sent: dict[int, float] = {}
        self.last_recv: dict[int, float] = {}
        self.last_at: dict[int, float] = {}  # monotonic time of the phase's last frame
        self.frame_bytes = 0
        self.frames = 0
        self.counts: list[dict[int, int]] = [{} for _ in range(count)]
        self.open = [False] * count

    def _settle(self) -> None:
        if self.ready + len(self.failed) >= self.count:
            self.all_ready.set()

    async def follow(self, session: Any, index: int) -> None:
        import aiohttp

        counts = self.counts[index]
        headers = {"Accept": "text/event-stream"}
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
            async with session.get(self.url, headers=headers, timeout=timeout) as response:
                if response.status != 200:
                    self.failed.append(f"HTTP {response.status}")
                    self._settle()
                    return
                buffer = b""
                async for chunk in response.content.iter_any():
                    if not self.open[index]:
                        self.open[index] = True
                        self.ready += 1
                        self._settle()
                    now = time.perf_counter()
                    *frames, buffer = (buffer + chunk).split(b"\n\n")
                    for frame in frames:
                        if frame.startswith(b"event:"):  # tidings' overflow: it closes next
                            self.dropped.append(frame.split(b"\n")[0].decode())
                            self.open[index] = False
                            return
                        at = frame.find(b"data: ")
                        if at < 0:
                            continue  # retry:, id-only, ping
                        payload = self.decode(frame[at + 6 :]).data
                        phase = payload.phase
                        counts[phase] = counts.get(phase, 0) + 1
                        hist = self.hist.get(phase)
                        if hist is None:
                            hist = self.hist[phase] = Counter()
                            self.first_sent[phase] = payload.sent
                        hist[int((now - payload.sent) * 10_000)] += 1
                        self.first_sent[phase] = min(self.first_sent[phase], payload.sent)
                        self.last_recv[phase] = now
                        self.last_at[phase] = time.monotonic()
                        self.frame_bytes += len(frame) + 2
                        self.frames += 1
            if not self.stopping:
                self.dropped.append("the server ended the stream")
        except Exception as exc:
            if not self.stopping:
                if self.open[index]:
                    self.dropped.append(f"{type(exc).__name__}: {exc}")
                else:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
                    self._settle()
        finally:
            self.open[index] = False

    async def report(self, phase: int, events: int, cap: float) -> dict[str, Any]:
        began = time.monotonic()
        while time.monotonic() - began < cap:
            connections = [c for c, is_open in zip(self.counts, self.open, strict=True) if is_open]
            if all(c.get(phase, 0) >= events for c in connections):
                break
            if time.monotonic() - self.last_at.get(phase, began) > self.drain_idle and (
                time.monotonic() - began > self.drain_idle
            ):
                break
            await asyncio.sleep(0.02)
        hist = self.hist.get(phase, Counter())
        return {
            "phase": phase,
            "deliveries": sum(hist.values()),
            "hist": sorted(hist.items()),
            "first_sent": self.first_sent.get(phase),
            "last_recv": self.last_recv.get(phase),
            "open": sum(self.open),
            "complete": sum(1 for c in self.counts if c.get(phase, 0) >= events),
            "dropped": list(self.dropped),
            "failed": list(self.failed),
            "frame_bytes": self.frame_bytes / self.frames if self.frames else 0,
        }

    async def run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(self.follow(session, i)) for i in range(self.count)]
            await self.all_ready.wait()
            gc.collect()
            gc.freeze()  # the connections' objects: out of every later collection
            print(json.dumps({"ready": self.ready, "failed": self.failed}), flush=True)
            while True:
                line = (await asyncio.to_thread(sys.stdin.readline)).split()
                if not line or line[0] == "stop":
                    break
                if line[0] == "report":
                    found = await self.report(int(line[1]), int(line[2]), float(line[3]))
                    print(json.dumps(found), flush=True)
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def writer(args: argparse.Namespace) -> dict[str, Any]:
    """Append one event every 1/``--rate`` s for ``--seconds`` (open loop, absolute
    deadlines), each carrying its phase and ``perf_counter()`` just before the POST;
    then wait at most ``--cap`` s for the appends still unanswered, and give them up."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONNS)
    headers = {"Content-Type": "application/json"}
    written = errors = 0
    lag = 0.0
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(i: int) -> None:
            nonlocal written, errors
            data = event_data(i)
            del data["note"]  # room for the timing, to stay at ~210 bytes
            data["phase"] = args.phase
            data["sent"] = time.perf_counter()
            body = json.dumps({"events": [{"type": EVENT_TYPE, "data": data}]}).encode()
            try:
                async with session.post(args.url, data=body) as response:
                    await response.read()
                    ok = response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            written += ok
            errors += not ok

        total = max(1, round(args.seconds * args.rate))
        start = time.perf_counter() + 0.01
        for i in range(total):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            _, unanswered = await asyncio.wait(set(pending), timeout=args.cap)
            for task in unanswered:
                task.cancel()
            await asyncio.gather(*unanswered, return_exceptions=True)
        else:
            unanswered = set()
        drained = time.perf_counter() - start - total / args.rate
    # rate: appends acknowledged per scheduled second (open loop: every append starts on
    # time unless this loop stalls, see lag_ms); drain_ms: how long the last ones took.
    return {
        "issued": total,
        "written": written,
        "unanswered": len(unanswered),
        "errors": errors,
        "rate": written * args.rate / total,
        "lag_ms": lag * 1000,
        "drain_ms": drained * 1000,
    }


async def reader(args: argparse.Namespace) -> dict[str, Any]:
    """One timed ``read_all`` of the whole log, every event decoded."""
    import tidings

    store = await tidings.connect(args.url)
    async with store:
        await store.head()  # connected, pools filled: outside the timing
        began = time.perf_counter()
        count = 0
        async for _ in store.read_all():
            count += 1
        took = time.perf_counter() - began
    return {"events": count, "seconds": took, "rate": count / took}


def run_role(args: argparse.Namespace) -> int:
    raise_fd_limit()
    if args.role == "raw-server":
        serve_raw()
        return 0
    if args.role == "sse-clients":
        clients = SSEClients(args.url, args.count, args.seconds)
        asyncio.run(clients.run())
        return 0
    roles = {"load": load, "inprocess": inprocess, "writer": writer, "reader": reader}
    result = asyncio.run(roles[args.role](args))
    print(json.dumps(result), flush=True)
    return 0


# --- the runner: servers, scratch stores, child processes ---------------------------------------


def child(*options: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *options]


def last_json(text: str) -> Any:
    lines = [line for line in text.strip().splitlines() if line.startswith(("{", "["))]
    if not lines:
        raise RuntimeError(f"no result from the child: {text.strip()[-300:]!r}")
    return json.loads(lines[-1])


def run_child(options: list[str], timeout: float) -> Any:
    """Run this script in a role; its last JSON line."""
    done = subprocess.run(
        child(*options), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"{options[1]} failed: {' | '.join(tail)}")
    return last_json(done.stdout)


class Process:
    """A long-running child process whose stdout lines are read on a thread."""

    def __init__(
        self, command: list[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def readline(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer in {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"the process ended: {self.stderr_tail()}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-5:])

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a server process, yield its base URL once it listens, stop it after."""
    process = Process(command, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = re.search(
                r"listening on (http://\S+)", process.readline(deadline - time.monotonic())
            )
            if found:
                break
        yield found.group(1)
    finally:
        process.stop()


def tidings_serve(store: str, **settings: Any) -> contextlib.AbstractContextManager[str]:
    """``tidings serve --store store --port 0``, with ``TIDINGS_<NAME>`` settings."""
    exe = Path(sys.executable).with_name("tidings")
    command = (
        [str(exe)] if exe.exists() else [sys.executable, "-c", "import tidings.cli as c; c.main()"]
    )
    env = {**os.environ, **{f"TIDINGS_{k.upper()}": str(v) for k, v in settings.items()}}
    return server([*command, "serve", "--store", store, "--port", "0"], env)


def raw_serve() -> contextlib.AbstractContextManager[str]:
    return server(child("--role", "raw-server"))


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def ratio_cells(ratio: float | None, goal: float | None) -> tuple[str, str, str]:
    """A ratio, its goal and pass/MISS, as cells (no goal: only the ratio)."""
    shown = "-" if ratio is None else f"{ratio:.2f}"
    if goal is None:
        return shown, "-", ""
    mark = "-" if ratio is None else "pass" if ratio >= goal else "MISS"
    return shown, f">= {goal:.2f}", mark


# --- part 1: appends ---------------------------------------------------------------------------

WRK_SCRIPT = """
local body = [==[@BODY@]==]
local path = "@PATH@"
local streams = @STREAMS@
local headers = {["Content-Type"] = "application/json"}
local counter = 0
local threads = {}
tid = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local p = path
  if streams > 0 then p = string.format(path, tid, counter % streams) end
  return wrk.format("POST", p, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class Loader:
    """Drives ``CONNS`` keep-alive clients at an endpoint: wrk, or the aiohttp child."""

    def __init__(self, kind: str, sizes: Sizes) -> None:
        self.kind = kind
        self.sizes = sizes
        self.scripts = tempfile.TemporaryDirectory(prefix="tidings_bench_wrk_")

    def describe(self) -> str:
        if self.kind == "wrk":
            return f"wrk -t1 -c{CONNS} (Lua: one body, {STREAMS} streams round robin)"
        return f"aiohttp, {CONNS} tasks over one ClientSession"

    def run(self, base: str, path: str, batch: int, warm: bool = True) -> dict[str, Any]:
        """One measured run (after a warm-up when ``warm``) of ``batch``-event POSTs."""
        if self.kind == "aiohttp":
            return run_child(
                [
                    "--role", "load", "--url", base, "--path", path, f"--batch={batch}",
                    f"--seconds={self.sizes.seconds}", f"--warmup={self.sizes.warmup if warm else 0}",
                ],
                timeout=120,
            )  # fmt: skip
        script = Path(self.scripts.name) / f"{batch}-{abs(hash(path))}.lua"
        text = WRK_SCRIPT.replace("@BODY@", append_body(batch).decode())
        text = text.replace("@PATH@", path).replace("@STREAMS@", str(STREAMS if "%" in path else 0))
        script.write_text(text)
        if warm and self.sizes.warmup:
            self._wrk(base, script, self.sizes.warmup)  # warm-up, not counted
        found = self._wrk(base, script, self.sizes.seconds)
        seconds = found["duration_us"] / 1e6
        ok = found["requests"] - found["status"]
        errors = sum(found[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {
            "requests": ok,
            "events": ok * batch,
            "seconds": seconds,
            "errors": errors,
            "p50_ms": found["p50_us"] / 1000,
            "p99_ms": found["p99_us"] / 1000,
            "max_ms": found["max_us"] / 1000,
        }

    def _wrk(self, base: str, script: Path, seconds: int) -> dict[str, Any]:
        command = ["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--timeout", "30s"]
        done = subprocess.run(
            [*command, "-s", str(script), base], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr.strip()[-300:]}")
        return dict(last_json(done.stdout))


def _head(base: str) -> int:
    import urllib.request

    with urllib.request.urlopen(base + "/head", timeout=30) as response:
        return int(json.loads(response.read())["head"])


def _rates(result: dict[str, Any]) -> dict[str, Any]:
    seconds = result["seconds"]
    return {
        **result,
        "events_per_s": result["events"] / seconds,
        "requests_per_s": result["requests"] / seconds,
    }


def run_appends(
    args: argparse.Namespace, stores: Stores, loader: Loader, pg_error: str | None
) -> dict[str, Any]:
    """Each series: a list of runs (dicts with events_per_s, requests_per_s, p50_ms, p99_ms)."""
    sizes = args.sizes
    series: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}

    def add(key: str, result: dict[str, Any]) -> None:
        series.setdefault(key, []).append(_rates(result))
        r = series[key][-1]
        print(
            f"  {key:26} {r['events_per_s']:>10,.0f} ev/s {r['requests_per_s']:>9,.0f} req/s  "
            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            + (f"  ({r['errors']} errors)" if r["errors"] else ""),
            flush=True,
        )

    print(
        f"appends: {loader.describe()}, {sizes.seconds} s after {sizes.warmup} s warm-up",
        flush=True,
    )
    try:
        with raw_serve() as base:
            for run in range(1, args.runs + 1):
                print(f" trivial endpoint, run {run}/{args.runs}", flush=True)
                add("trivial fastapi 1", loader.run(base, "/ping/fastapi", 1, run == 1))
                add("trivial starlette 1", loader.run(base, "/ping/starlette", 1, run == 1))
    except Exception as exc:
        errors["trivial"] = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR {errors['trivial']}", flush=True)

    for backend in args.backend:
        if backend == "postgres" and pg_error:
            errors[backend] = pg_error
            continue
        try:
            with stores.fresh(backend) as url, tidings_serve(url) as base:
                counted = 0
                for run in range(1, args.runs + 1):
                    print(f" {backend}, run {run}/{args.runs}", flush=True)
                    for batch in (1, 100):
                        path = f"/streams/http{batch}-%d-%d/events"
                        result = loader.run(base, path, batch, run == 1)
                        counted += result["events"]
                        add(f"{backend} http {batch}", result)
                    found = run_child(
                        [
                            "--role", "inprocess", "--url", url, "--batch=1", "--batch=100",
                            f"--seconds={sizes.seconds}", f"--warmup={sizes.warmup}",
                        ],
                        timeout=300,
                    )  # fmt: skip
                    for batch in (1, 100):
                        add(f"{backend} inprocess {batch}", found[str(batch)])
                head = _head(base)
                if head < counted:  # the log must hold at least every append acknowledged
                    raise RuntimeError(f"the log holds {head} events, {counted} were acknowledged")
        except Exception as exc:
            errors[backend] = f"{type(exc).__name__}: {exc}"
            print(f"  ERROR ({backend}) {errors[backend]}", flush=True)
    return {"loader": loader.describe(), "series": series, "errors": errors}


def render_appends(found: dict[str, Any], args: argparse.Namespace) -> str:
    series = found["series"]

    def values(key: str, field: str) -> list[float]:
        return [r[field] for r in series.get(key, [])]

    lines = [("backend", "path", "body", "events/s", "requests/s", "p50 ms", "p99 ms")]
    rows = [
        ("-", "trivial FastAPI", "trivial fastapi", 1),
        ("-", "trivial Starlette", "trivial starlette", 1),
    ]
    for backend in args.backend:
        for batch in (1, 100):
            rows.append((backend, "HTTP", f"{backend} http", batch))
            rows.append((backend, "in-process", f"{backend} inprocess", batch))
    for backend, path, key, batch in rows:
        name = f"{key} {batch}"
        if name not in series:
            continue
        body = "1 event" if batch == 1 else f"{batch} events"
        lines.append(
            (
                backend,
                path,
                body,
                cell(values(name, "events_per_s")) if not path.startswith("trivial") else "-",
                cell(values(name, "requests_per_s")),
                cell(values(name, "p50_ms"), 2),
                cell(values(name, "p99_ms"), 2),
            )
        )
    text = [
        f"HTTP appends: {CONNS} concurrent keep-alive clients ({found['loader']}), "
        f"median of {args.runs} run(s) (min-max)",
        "",
        *fixed_width(lines),
        "",
    ]
    goal_lines = [("backend", "ratio of medians", "value", "goal", "")]
    # The HTTP ceiling is the faster trivial endpoint: tidings' append routes skip
    # FastAPI's layers, so the trivial FastAPI route alone would flatter them.
    trivials = {
        name: med(values(f"trivial {name.lower()} 1", "requests_per_s"))
        for name in ("FastAPI", "Starlette")
    }
    ceiling = max((n for n in trivials if trivials[n]), key=lambda n: trivials[n] or 0, default="")
    trivial = trivials.get(ceiling)
    for backend in args.backend:
        http1 = med(values(f"{backend} http 1", "requests_per_s"))
        in1 = med(values(f"{backend} inprocess 1", "events_per_s"))
        http100 = med(values(f"{backend} http 100", "events_per_s"))
        in100 = med(values(f"{backend} inprocess 100", "events_per_s"))
        r1 = http1 / trivial if http1 and trivial else None
        r100 = http100 / in100 if http100 and in100 else None
        goal1, goal100 = GOALS["append_1_vs_trivial"], GOALS["append_100_vs_inprocess"]
        goal_lines.append(
            (backend, f"HTTP 1-event req/s / trivial {ceiling} req/s", *ratio_cells(r1, goal1))
        )
        goal_lines.append(
            (backend, "HTTP 100-event ev/s / in-process ev/s", *ratio_cells(r100, goal100))
        )
        r = http1 / in1 if http1 and in1 else None
        goal_lines.append((backend, "HTTP 1-event ev/s / in-process ev/s", *ratio_cells(r, None)))
    text += [*fixed_width(goal_lines), ""]
    text.append(
        "latency: per request (HTTP, from the load generator) or per append call (in-process)."
    )
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    return "\n".join(text)


# --- part 2: SSE fan-out -----------------------------------------------------------------------


def merge_reports(reports: list[dict[str, Any]], written: int, clients: int) -> dict[str, Any]:
    hist: Counter[int] = Counter()
    for report in reports:
        hist.update({int(k): v for k, v in report["hist"]})
    deliveries = sum(hist.values())
    ordered = sorted(hist.items())

    def pct(p: float) -> float:
        if not deliveries:
            return math.nan
        rank, seen = max(1, math.ceil(p / 100 * deliveries)), 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                return (bucket + 0.5) / 10  # ms, the middle of the 0.1 ms bucket
        return ordered[-1][0] / 10

    firsts = [r["first_sent"] for r in reports if r["first_sent"] is not None]
    lasts = [r["last_recv"] for r in reports if r["last_recv"] is not None]
    span = max(lasts) - min(firsts) if firsts and lasts else math.nan
    dropped = [d for r in reports for d in r["dropped"]] + [f for r in reports for f in r["failed"]]
    return {
        "deliveries": deliveries,
        "expected": written * clients,
        "late": written * clients - deliveries,  # not received by the cut-off
        "deliveries_per_s": deliveries / span if span and span > 0 else math.nan,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": ordered[-1][0] / 10 if ordered else math.nan,
        "dropped": len(dropped),
        "dropped_why": sorted(set(dropped))[:5],
        "open": sum(r["open"] for r in reports),
        "frame_bytes": statistics.mean(r["frame_bytes"] for r in reports),
    }


class Fanout:
    """Clients connected to one live URL, driven phase by phase by writer processes."""

    def __init__(
        self, args: argparse.Namespace, live_url: str, append_url: str, phases: Iterator[int]
    ) -> None:
        self.args = args
        self.append_url = append_url
        self.phases = phases  # shared by the client sets of a series: numbers never repeat
        sizes = args.sizes
        procs = max(1, min(sizes.client_procs, args.clients))
        shares = [args.clients // procs + (i < args.clients % procs) for i in range(procs)]
        self.processes = [
            Process(
                child(
                    "--role",
                    "sse-clients",
                    "--url",
                    live_url,
                    f"--count={n}",
                    f"--seconds={sizes.drain_idle}",
                ),
                stdin=True,
            )
            for n in shares
        ]
        self.connected = 0
        self.dropped = 0  # clients lost so far (cumulative in the clients' reports)
        self.failed: list[str] = []
        for process in self.processes:
            ready = json.loads(process.readline(120))
            self.connected += ready["ready"]
            self.failed += ready["failed"]

    def phase(self, rate: float, seconds: float, cap: float) -> dict[str, Any]:
        """Write at ``rate`` for ``seconds``; gather what the clients got, waiting at most
        ``cap`` s after the last append for the rest."""
        number = next(self.phases)
        wrote = run_child(
            [
                "--role", "writer", "--url", self.append_url, f"--rate={rate}",
                f"--seconds={seconds}", f"--phase={number}", f"--cap={cap}",
            ],
            timeout=120 + 3 * seconds,
        )  # fmt: skip
        for process in self.processes:
            process.send(f"report {number} {wrote['issued']} {cap}")
        reports = [json.loads(p.readline(300)) for p in self.processes]
        found = merge_reports(reports, wrote["issued"], self.connected)
        found.update(
            rate=rate,
            seconds=seconds,
            writes_per_s=wrote["rate"],
            write_errors=wrote["errors"] + wrote["unanswered"],
            unanswered=wrote["unanswered"],
            lag_ms=wrote["lag_ms"],
        )
        found["new_drops"] = found["dropped"] - self.dropped
        self.dropped = found["dropped"]
        found["held"] = holds(found)
        return found

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.send("stop")
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(30)
            process.stop(5)


def holds(phase: dict[str, Any]) -> bool:
    """Whether a phase met the goals: p99, no client lost, nothing late, the pace kept."""
    return bool(
        phase["p99_ms"] <= GOALS["sse_p99_ms"]
        and phase["new_drops"] == 0
        and phase["late"] == 0
        and phase["write_errors"] == 0
        and phase["lag_ms"] <= GOALS["sse_p99_ms"]  # the writer itself kept its schedule
    )


def fanout_series(
    args: argparse.Namespace, live_url: Any, append_url: str, label: str
) -> dict[str, Any]:
    """Warm up, ``--runs`` phases at ``--sse-rate``, then the saturation ladder.

    A phase that breaks leaves a backlog in the server that would spill into the next
    one: the runs stop repeating then, and the ladder connects fresh clients (the
    server drops what it queued for the old ones) before each step after a broken one.
    ``live_url()`` is where clients connect: from the log's head at that moment.
    """
    sizes = args.sizes
    phases = itertools.count(0)

    def report(what: str, found: dict[str, Any]) -> None:
        print(
            f"  {label} {what}: {found['deliveries_per_s']:,.0f} deliveries/s  "
            f"p50 {found['p50_ms']:.1f} ms  p99 {found['p99_ms']:.1f} ms  max {found['max_ms']:.1f} ms  "
            f"dropped {found['new_drops']}  late {found['late']:,}  "
            f"{'holds' if found['held'] else 'breaks'}",
            flush=True,
        )

    fan = Fanout(args, live_url(), append_url, phases)
    result: dict[str, Any] = {
        "connected": fan.connected,
        "failed": fan.failed,
        "runs": [],
        "ladder": [],
        "reconnects": 0,
    }
    try:
        print(
            f" {label}: {fan.connected} clients connected"
            + (f", {len(fan.failed)} failed" if fan.failed else ""),
            flush=True,
        )
        warm = min(args.sse_rate, WARM_RATE)
        fan.phase(warm, sizes.sse_warmup, cap=sizes.drain_cap)  # warm-up: not counted
        for run in range(1, args.runs + 1):
            found = fan.phase(args.sse_rate, sizes.sse_seconds, cap=sizes.drain_cap)
            result["runs"].append(found)
            report(f"{args.sse_rate:,.0f} ev/s run {run}/{args.runs}", found)
            if not found["held"]:
                if run < args.runs:
                    print("   (saturated: more runs would measure its backlog; not repeated)")
                break
        # The saturation ladder: up from --sse-rate while it holds, or down until it does.
        going_up = all(r["held"] for r in result["runs"])
        rate, last_held = args.sse_rate, going_up
        for _ in range(sizes.steps):
            rate = round(rate * (LADDER_UP if going_up else LADDER_DOWN))
            if rate < 1:
                break
            if not last_held:
                fan.close()
                fan = Fanout(args, live_url(), append_url, phases)
                result["reconnects"] += 1
            found = fan.phase(
                rate, sizes.step_seconds, cap=min(sizes.drain_cap, sizes.step_seconds)
            )
            found["connected"] = fan.connected
            result["ladder"].append(found)
            report(f"ladder {rate:,} ev/s", found)
            last_held = found["held"]
            if going_up != found["held"]:
                break
    finally:
        fan.close()
    return result


def run_sse(args: argparse.Namespace, stores: Stores) -> dict[str, Any]:
    print(
        f"\nSSE fan-out: {args.clients:,} clients in {min(args.sizes.client_procs, args.clients)} processes, "
        f"writer {args.sse_rate:,.0f} ev/s for {args.sizes.sse_seconds:g} s",
        flush=True,
    )
    found: dict[str, Any] = {"errors": {}}
    cap = max(2000, 2 * args.clients)
    try:
        with stores.fresh("sqlite") as url, tidings_serve(url, sse_max_clients=cap) as base:
            found["tidings"] = fanout_series(
                args,
                lambda: f"{base}/events/live?from_position={_head(base)}",
                base + "/streams/fanout/events",
                "tidings",
            )
    except Exception as exc:
        found["errors"]["tidings"] = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR (tidings) {found['errors']['tidings']}", flush=True)
    try:
        with raw_serve() as base:
            live = base + "/events/live"
            found["raw"] = fanout_series(args, lambda: live, base + "/publish", "raw")
    except Exception as exc:
        found["errors"]["raw"] = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR (raw) {found['errors']['raw']}", flush=True)
    return found


def saturation(series: dict[str, Any], start: float) -> tuple[str, str]:
    """The highest rate that held, and the most deliveries/s seen, as cells."""
    runs, ladder = series["runs"], series["ladder"]
    held = [start] if runs and all(r["held"] for r in runs) else []
    held += [p["rate"] for p in ladder if p["held"]]
    peak = max([p["deliveries_per_s"] for p in runs + ladder], default=math.nan)
    if not held:
        return f"< {min([p['rate'] for p in ladder], default=start):,.0f} ev/s", f"{peak:,.0f}"
    if ladder and all(p["held"] for p in ladder):
        return f">= {max(held):,.0f} ev/s (top step)", f"{peak:,.0f}"
    return f"{max(held):,.0f} ev/s", f"{peak:,.0f}"


def render_sse(found: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        (
            "server",
            "writes/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "dropped",
            "late",
            "goal",
            "",
        )
    ]
    sat = [
        (
            "server",
            "highest rate held",
            "most deliveries/s",
            "steps (rate: p99 ms, dropped, late)",
        )
    ]
    goal = f"p99 <= {GOALS['sse_p99_ms']:g} ms, 0 dropped"
    for name, label in (("tidings", "tidings serve"), ("raw", "raw Starlette")):
        series = found.get(name)
        if not series or not series["runs"]:
            continue
        runs = series["runs"]

        def v(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [r[key] for r in runs]

        ok = (
            med(v("p99_ms")) is not None
            and med(v("p99_ms")) <= GOALS["sse_p99_ms"]
            and sum(v("new_drops")) == 0
        )
        lines.append(
            (
                label,
                cell(v("writes_per_s")),
                cell(v("deliveries_per_s")),
                cell(v("p50_ms"), 1),
                cell(v("p99_ms"), 1),
                cell(v("max_ms"), 1),
                f"{sum(v('new_drops')):,}",
                f"{max(v('late')):,}",
                goal if name == "tidings" else "-",
                ("pass" if ok else "MISS") if name == "tidings" else "",
            )
        )
        steps = ", ".join(
            f"{p['rate']:,.0f}: {p['p99_ms']:.0f}, {p['new_drops']}, {p['late']:,}"
            for p in series["ladder"]
        )
        sat.append((label, *saturation(series, args.sse_rate), steps or "-"))
    frame = [
        s["runs"][0]["frame_bytes"]
        for s in (found.get("tidings"), found.get("raw"))
        if s and s["runs"]
    ]
    text = [
        f"SSE fan-out: {args.clients:,} clients following /events/live over a SQLite store; a writer "
        f"appending {args.sse_rate:,.0f} ev/s for {args.sizes.sse_seconds:g} s; median of the runs (min-max; a run that "
        "breaks is not repeated: the next would measure its backlog)",
        "",
        *fixed_width(lines),
        "",
        f"saturation: the writer rate x{LADDER_UP:g} per {args.sizes.step_seconds:g}-s step (x{LADDER_DOWN:g} when {args.sse_rate:,.0f} ev/s "
        "does not hold, with fresh clients after a broken step) until a step misses p99, drops a client,",
        "has late deliveries or an append fails",
        "",
        *fixed_width(sat),
        "",
        "latency: the client's receipt - the writer's perf_counter() just before its POST (commit and fan-out included);",
        "deliveries/s: frames received by all clients / (last receipt - first send); dropped: clients cut off or refused;",
        f"late: appends x clients not received by the cut-off (the writer gives up on its appends {args.sizes.drain_cap:g} s after "
        f"the last one, the clients wait as long again; steps: {min(args.sizes.drain_cap, args.sizes.step_seconds):g} s). "
        "Mean frame size: " + ", ".join(f"{b:.0f} B" for b in frame) + " (tidings, raw).",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    return "\n".join(text)


# --- part 3: read_all --------------------------------------------------------------------------


async def preload(url: str, events: int) -> int:
    """Load ``events`` ~210-byte events in 100-event appends, 10 at a time; return the head."""
    import tidings

    store = await tidings.connect(url, notify=None)
    async with store:
        batch = [tidings.NewEvent(EVENT_TYPE, event_data(i)) for i in range(100)]
        streams = events // 100
        for start in range(0, streams, 10):
            await asyncio.gather(
                *(store.append(f"load-{n}", batch) for n in range(start, min(start + 10, streams)))
            )
        return await store.head()


def run_read(args: argparse.Namespace, stores: Stores, pg_error: str | None) -> dict[str, Any]:
    events = args.sizes.read_events
    print(
        f"\nread_all: {events:,} events, remote (tidings serve) and in-process on the same store",
        flush=True,
    )
    found: dict[str, Any] = {"events": events, "series": {}, "errors": {}}
    for backend in args.backend:
        if backend == "postgres" and pg_error:
            found["errors"][backend] = pg_error
            continue
        try:
            with stores.fresh(backend) as url:
                head = asyncio.run(preload(url, events))
                with tidings_serve(url) as base:
                    for run in range(1, args.runs + 1):
                        for side, target in (("remote", base), ("inprocess", url)):
                            got = run_child(["--role", "reader", "--url", target], timeout=300)
                            if got["events"] != head:
                                raise RuntimeError(f"{side} read {got['events']} events of {head}")
                            found["series"].setdefault(f"{backend} {side}", []).append(got)
                            print(
                                f"  {backend} {side:9} run {run}/{args.runs}: {got['rate']:,.0f} ev/s",
                                flush=True,
                            )
        except Exception as exc:
            found["errors"][backend] = f"{type(exc).__name__}: {exc}"
            print(f"  ERROR ({backend}) {found['errors'][backend]}", flush=True)
    return found


def render_read(found: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [("backend", "remote ev/s", "in-process ev/s", "ratio", "goal", "")]
    goal = GOALS["read_vs_inprocess"]
    for backend in args.backend:
        remote = [r["rate"] for r in found["series"].get(f"{backend} remote", [])]
        local = [r["rate"] for r in found["series"].get(f"{backend} inprocess", [])]
        if not remote:
            continue
        m_remote, m_local = med(remote), med(local)
        r = m_remote / m_local if m_remote and m_local else None
        lines.append((backend, cell(remote), cell(local), *ratio_cells(r, goal)))
    text = [
        f"read_all of {found['events']:,} events (decoded RecordedEvents/s), median of {args.runs} run(s) (min-max)",
        "",
        *fixed_width(lines),
        "",
        "remote: tidings.connect(server URL).read_all() (pages of 1,000); in-process: tidings.connect(store URL).read_all().",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    return "\n".join(text)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args)
    fds = raise_fd_limit()
    need = args.clients + 200
    if fds < need:
        print(f"warning: open-file limit {fds} < {need}: SSE clients will fail", file=sys.stderr)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load:.1f} before starting: figures will be low and scattered",
            file=sys.stderr,
        )
    kind = args.loader
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "aiohttp"
    elif kind == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed: using the aiohttp load generator", file=sys.stderr)
        kind = "aiohttp"
    began = time.perf_counter()
    stores = Stores(args, "http")
    pg_error = stores.check_postgres() if "postgres" in args.backend else None
    if pg_error:
        print(pg_error, file=sys.stderr)
    results: dict[str, Any] = {}
    loads: dict[str, float] = {"start": load}
    texts: list[str] = []
    seconds: dict[str, float] = {}
    parts = {
        "appends": (
            lambda: run_appends(args, stores, Loader(kind, args.sizes), pg_error),
            render_appends,
        ),
        "sse": (lambda: run_sse(args, stores), render_sse),
        "read": (lambda: run_read(args, stores, pg_error), render_read),
    }
    for part in PARTS:
        if part in args.part:
            started = time.perf_counter()
            run, render = parts[part]
            results[part] = run()
            seconds[part] = round(time.perf_counter() - started, 1)
            loads[f"after_{part}"] = load_now()
            texts.append(render(results[part], args))
    total = time.perf_counter() - began
    print()
    print("\n\n".join(texts))
    print(
        f"\nload average: {', '.join(f'{k} {v:.2f}' for k, v in loads.items())} ({os.cpu_count()} CPUs)"
    )
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(load), "load_averages": loads},
        "options": {
            "runs": args.runs,
            "quick": args.quick,
            "parts": args.part,
            "backends": args.backend,
            "loader": kind,
            "clients": args.clients,
            "sse_rate": args.sse_rate,
            "sizes": args.sizes.__dict__,
        },
        "goals": GOALS,
        "total_seconds": round(total, 1),
        "part_seconds": seconds,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    took = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"\nwrote {args.output} ({total:.0f} s in all: {took})")
    failed = any(part.get("errors") for part in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
