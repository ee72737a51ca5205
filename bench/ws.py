"""The WebSocket gateway (``GET /ws``, ``tidings.v1``): fan-out latency, saturation beside a
raw ``websockets`` server, memory per idle connection, and delivery across two nodes.

Usage::

    python bench/ws.py [--runs N] [--quick] [--part latency|saturation|memory|nodes ...]
                       [--compression deflate|none] [--sqlite-dir DIR] [--output PATH]
                       [--notifier nats|redis|postgres ...] [--pg-url URL] [--nats-url URL]
                       [--redis-url URL]

``tidings serve`` runs on a fresh SQLite file in a process of its own; the WebSocket
clients (the ``websockets`` library's asyncio client, uvloop when installed) run in 2-4
other processes, and a writer process appends over HTTP at a fixed open-loop rate
(``POST /streams/fanout-1/events``, each event's data carrying the writer's
``time.time()`` just before the POST, so every client times every delivery):

``latency``
    N clients subscribe with ``{"type":"subscribe","sub":"s","from":"end","ack":"auto"}``
    (and, as a second series, ``"ack":"manual"``, acking every batch as it comes; as a
    third, ``"manual"`` acked every ``ceil(max_in_flight / 2)`` batches, as tidings' own
    client does: series ``half``) and
    follow the log while the writer appends one event per request: 100 clients at 300
    events/s (goal p99 <= 25 ms) and 1,000 clients at 20 events/s (goal p99 <= 50 ms),
    ``--runs`` runs of 10 s after a warm-up. Each client checks its positions: every
    one from its ``subscribed`` position to the head, once each, in order (the SQLite
    log's positions are contiguous: one writer, ``INTEGER PRIMARY KEY``). A gap or a
    duplicate fails the benchmark (exit status 1).
``saturation``
    100 clients (``ack: auto``) on ``tidings serve`` and on a raw ``websockets`` server
    (``websockets.asyncio.server.serve`` plus an aiohttp listener for the same POSTs, in
    a process of its own) that ``broadcast``s each request's events as one ``events``
    frame shaped like tidings' (with one event per request: one event per frame, of the
    same size). The writer rate doubles step by step, one event per request, until
    deliveries/s stop rising (or a step leaves a backlog); then again with 10 events per
    request from the rate that did best. Goal: tidings' most deliveries/s >= 0.70 of
    raw's.
``memory``
    K idle connections (K = 1,000 and 10,000, each waits for its ``ready``; up to 2,500
    per client process) to one ``tidings serve``; its VmRSS (``/proc/<pid>/status``)
    before and after: KiB per connection (goal <= 50), and whether all K are still open
    after a hold. Each K twice, the clients offering permessage-deflate and not; the raw
    server at 1,000 for reference.
``nodes``
    Two ``tidings serve`` processes (nodes A and B) on one fresh PostgreSQL schema
    (``?schema=``, dropped after), both with ``--notify nats://…``, then both with
    ``--notify redis://…``, then both with no ``--notify`` (PostgreSQL LISTEN/NOTIFY).
    The writer appends to node A at 1,000 events/s, one event per request; 10 clients
    (``from: "end"``, ``ack: "auto"``) on node B time each delivery (goal p99 <= 10 ms),
    then 10 fresh clients on node A for comparison, ``--runs`` runs of 10 s after a
    warm-up each. The same position checks as the latency part (the PostgreSQL log's
    positions are contiguous too: the head row lock serializes writers); a gap, a
    duplicate or an event never received fails the benchmark.

In the latency and saturation parts the clients offer permessage-deflate (the
``websockets`` client's default, and what browsers offer) unless ``--compression none``;
tidings declines it by default (``ws.compression`` is off), and so does the raw server
(it would compress each frame once per connection, where tidings sends shared bytes). Reuses ``bench/http.py``'s helpers (child processes, fresh
stores, the latency merge), imported under another name than ``http``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import itertools
import json
import math
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent


def _load_http_bench() -> ModuleType:
    """``bench/http.py`` as the module ``bench_http`` (imported as ``http`` it would put
    the standard library's package in its own place)."""
    name = "bench_http"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / "http.py")
    if spec is None or spec.loader is None:
        raise ImportError("bench/http.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


hb = _load_http_bench()

from report import cell, fixed_width, machine_info, med  # noqa: E402
from stores import Stores  # noqa: E402
from workloads import EVENT_TYPE, event_data  # noqa: E402

PARTS = ("latency", "saturation", "memory", "nodes")
NOTIFIERS = ("nats", "redis", "postgres")  # the nodes part's series, in this order
STREAM = "fanout-1"
EVENTS_PREFIX = b'{"type":"events",'  # how tidings (and the raw server) begin a batch
GOALS = {
    "latency_100_p99_ms": 25.0,  # 100 clients at 300 events/s
    "latency_1000_p99_ms": 50.0,  # 1,000 clients at 20 events/s
    "saturation_vs_raw": 0.70,  # tidings' most deliveries/s / raw websockets'
    "memory_kib_per_connection": 50.0,
    "nodes_p99_ms": 10.0,  # node A's append to a client on node B, at 1,000 events/s
}
START_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
HANDSHAKES_IN_FLIGHT = 64  # per client process


@dataclass(frozen=True)
class Config:
    """One fan-out configuration of the latency part."""

    clients: int
    rate: float  # events/s, one per request
    procs: int  # client processes
    goal_ms: float

    @property
    def label(self) -> str:
        return f"{self.clients:,} clients, {self.rate:g} ev/s"


@dataclass(frozen=True)
class Sizes:
    """How long and how big each part is (full or ``--quick``)."""

    configs: tuple[Config, ...]
    seconds: float  # one measured latency run
    warmup: float  # uncounted appends before the runs
    drain_idle: float  # seconds without a frame after which a phase's stragglers are late
    drain_cap: float  # seconds the clients wait for a phase's last events, at most
    sat_clients: int
    sat_start: float  # the ladder's first rate, events/s
    sat_steps: int  # the most steps
    step_seconds: float
    idle: tuple[int, ...]  # idle connections of the memory part
    hold: float  # seconds the idle connections are held before they are counted again
    node_clients: int  # clients of the nodes part, on one node
    node_rate: float  # the nodes part's writer, events/s, one per request
    node_seconds: float  # one measured run of the nodes part
    node_warmup: float  # uncounted appends before each client set's runs


FULL = Sizes(
    configs=(
        Config(100, 300.0, 2, GOALS["latency_100_p99_ms"]),
        Config(1000, 20.0, 4, GOALS["latency_1000_p99_ms"]),
    ),
    seconds=10.0,
    warmup=2.0,
    drain_idle=2.0,
    drain_cap=5.0,
    sat_clients=100,
    sat_start=100.0,
    sat_steps=8,
    step_seconds=3.0,
    idle=(1000, 10_000),
    hold=5.0,
    node_clients=10,
    node_rate=1000.0,
    node_seconds=10.0,
    node_warmup=2.0,
)
QUICK = Sizes(
    configs=(
        Config(50, 300.0, 2, GOALS["latency_100_p99_ms"]),
        Config(200, 20.0, 2, GOALS["latency_1000_p99_ms"]),
    ),
    seconds=3.0,
    warmup=0.5,
    drain_idle=1.0,
    drain_cap=2.0,
    sat_clients=50,
    sat_start=200.0,
    sat_steps=6,
    step_seconds=1.0,
    idle=(1000,),
    hold=1.0,
    node_clients=10,
    node_rate=1000.0,
    node_seconds=3.0,
    node_warmup=1.0,
)
LATENCY_SERIES = ("auto", "manual", "half", "raw")  # raw: the bare websockets server, for the floor
LADDER_UP = 2.0  # each saturation step multiplies the rate by this
SAT_BATCH = 10  # events per request of the second saturation ladder
RISE = 1.05  # a step whose deliveries/s are not this much above the best so far: stopped rising


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each latency and nodes series (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="one run, small sizes (~2 minutes)")
    parser.add_argument("--part", choices=PARTS, action="append", help="only these (repeatable)")
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="what the clients offer (default deflate: the websockets client's and browsers' default)",
    )
    parser.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "ws.json")
    parser.add_argument(
        "--pg-url",
        default=hb.DEFAULT_PG_URL,
        help="the nodes part's PostgreSQL, for a fresh schema (default %(default)s)",
    )
    parser.add_argument(
        "--notifier",
        choices=NOTIFIERS,
        action="append",
        help="the nodes part's notifiers (repeatable; default all three)",
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    # A child process's role (internal), and its arguments.
    roles = ("clients", "writer", "raw-server")
    parser.add_argument("--role", choices=roles, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ack", choices=("auto", "manual", "half", "none"), help=argparse.SUPPRESS)
    parser.add_argument("--drain-idle", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.sizes = QUICK if args.quick else FULL
    if args.quick:
        args.runs = 1
    args.part = args.part or list(PARTS)
    args.notifier = [n for n in NOTIFIERS if n in (args.notifier or NOTIFIERS)]
    return args


def _run_loop(main: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (``tidings serve`` runs on it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- child: WebSocket clients -------------------------------------------------------------------


class Conn:
    """One client connection's view of its subscription: what it got, and what was wrong."""

    __slots__ = (
        "acked",
        "batch",
        "closed",
        "counts",
        "dups",
        "every",
        "gaps",
        "got",
        "last",
        "misframed",
        "open",
        "start",
    )

    def __init__(self) -> None:
        self.start = -1  # the subscribed position
        self.last = -1  # the highest position received
        self.batch = 0  # the last batch number
        self.acked = 0  # the last batch acked
        self.every = 1  # ack when this many batches are unacked
        self.got = 0  # events received
        self.gaps = 0  # positions skipped
        self.dups = 0  # positions received again (or out of order)
        self.misframed = 0  # batch numbers not consecutive, last_position not the last event's
        self.counts: dict[int, int] = {}  # phase -> events received
        self.open = False
        self.closed = ""  # why it ended, when it did


class Wire(asyncio.Protocol):
    """One client connection on the ``websockets`` library's sans-I/O protocol, driven
    from asyncio's callbacks: each message is handled in ``data_received``, timed there,
    with no task woken per message. The load generator shares the machine's two cores
    with the server it measures, so it must cost as little as it can (the library's
    asyncio client, one task switch per message, took more CPU than the server)."""

    def __init__(self, url: str, compression: str | None) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.typing import Subprotocol
        from websockets.uri import parse_uri

        extensions = enable_client_permessage_deflate(None) if compression else None
        self.proto = ClientProtocol(
            parse_uri(url),
            subprotocols=[Subprotocol("tidings.v1")],
            extensions=extensions,
            max_size=2**24,
        )
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()  # before ``stream``
        self.handler: Any = None  # (data, now) -> None, once streaming
        self.parts: list[bytes] = []  # a fragmented message's frames so far

    @classmethod
    async def open(cls, url: str, compression: str | None) -> Wire:
        """Connect and finish the handshake."""
        from websockets.uri import parse_uri

        uri = parse_uri(url)
        loop = asyncio.get_running_loop()
        _, wire = await loop.create_connection(lambda: cls(url, compression), uri.host, uri.port)
        await asyncio.wait_for(asyncio.shield(wire.opened), 120)
        return wire

    @property
    def extensions(self) -> str:
        """The negotiated extensions' names."""
        return ", ".join(type(e).__name__ for e in self.proto.extensions) or "none"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.proto.send_request(self.proto.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Opcode
        from websockets.http11 import Response

        now = time.time()
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Response):
                if self.proto.handshake_exc is not None:
                    self._end(self.proto.handshake_exc)
                elif not self.opened.done():
                    self.opened.set_result(None)
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if not event.fin:
                    self.parts.append(event.data)
                    continue
                message = event.data
                if self.parts:
                    message = b"".join([*self.parts, message])
                    self.parts.clear()
                if self.handler is None:
                    self.inbox.put_nowait(message)
                else:
                    self.handler(message, now)
            elif event.opcode == Opcode.CLOSE:
                self._end(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.ended.done():
            self.ended.set_result(self.proto.close_code or 1006)
        self.inbox.put_nowait(b"")  # wakes a ``message`` waiter

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    async def message(self) -> bytes:
        """The next message (before ``stream``)."""
        data = await asyncio.wait_for(self.inbox.get(), 120)
        if not data:
            raise ConnectionError(f"closed {self.proto.close_code or 1006}")
        return data

    def send(self, data: bytes) -> None:
        """Send a text message."""
        self.proto.send_text(data)
        self._flush()

    async def stream(self, handler: Any) -> int:
        """Hand every message to ``handler(data, now)`` as it comes; the close code."""
        while not self.inbox.empty():  # what came before (none: the server waits to be asked)
            data = self.inbox.get_nowait()
            if data:
                handler(data, time.time())
        self.handler = handler
        return await self.ended

    def close(self) -> None:
        """Close (the server's close frame answered or not: this is the load generator)."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.proto.send_close(1000)
                self._flush()
            self.transport.close()


class WsClients:
    """``--count`` connections to one WebSocket URL, each subscribed (or idle).

    Every ``events`` message is decoded for each event's position and the writer's
    ``phase``, ``n`` and ``sent`` (``time.time()``, comparable across processes).
    Commands on stdin, each answered with one JSON line: ``report <phase> <events>
    <cap>`` waits until every open connection has that phase's events, none came for
    ``--drain-idle`` s, or ``cap`` s passed, and gives the phase's latency histogram;
    ``check <head> <cap>`` waits until every open connection reached ``head``, then
    gives the gaps, duplicates and shortfalls per connection; ``status`` counts the
    open connections; ``stop`` ends it.
    """

    def __init__(self, url: str, count: int, ack: str, drain_idle: float, compression: str) -> None:
        import msgspec

        # Only what is checked or timed; gc=False: no collector pauses in the load generator.
        Payload = msgspec.defstruct(
            "Payload", [("phase", int), ("n", int), ("sent", float)], gc=False
        )
        Event = msgspec.defstruct("Event", [("position", int), ("data", Payload)], gc=False)
        Batch = msgspec.defstruct(
            "Batch",
            [("batch", int), ("events", list[Event]), ("last_position", int)],
            gc=False,  # type: ignore[valid-type]
        )
        self.decode = msgspec.json.Decoder(Batch).decode
        self.url = url
        self.count = count
        self.ack = ack
        self.compression = None if compression == "none" else "deflate"
        self.drain_idle = drain_idle
        self.conns = [Conn() for _ in range(count)]
        self.ready = 0
        self.failed: list[str] = []
        self.dropped: list[str] = []
        self.errors: list[str] = []  # error messages the server sent
        self.all_ready = asyncio.Event()
        self.stopping = False
        self.hist: dict[int, Counter[int]] = {}  # phase -> latency in 0.1 ms -> count
        self.first_sent: dict[int, float] = {}
        self.last_recv: dict[int, float] = {}
        self.last_at: dict[int, float] = {}  # monotonic time of the phase's last event
        self.framing: dict[int, list[int]] = {}  # phase -> [frames, bytes, events]
        self.extensions = ""
        self.connect_seconds = 0.0

    def _settle(self) -> None:
        if self.ready + len(self.failed) >= self.count:
            self.all_ready.set()

    async def follow(self, index: int, gate: asyncio.Semaphore) -> None:
        """Connect, wait for ``ready``, subscribe, then take batches until closed."""
        conn = self.conns[index]
        wire: Wire | None = None
        try:
            async with gate:
                wire = await Wire.open(self.url, self.compression)
                hello = json.loads(await wire.message())
                if hello.get("type") != "ready":
                    raise RuntimeError(f"expected ready, got {hello}")
                if self.ack != "none":
                    ack = "manual" if self.ack == "half" else self.ack
                    subscribe = {"type": "subscribe", "sub": "s", "from": "end", "ack": ack}
                    wire.send(json.dumps(subscribe).encode())
                    answer = json.loads(await wire.message())
                    if answer.get("type") != "subscribed":
                        raise RuntimeError(f"expected subscribed, got {answer}")
                    conn.start = conn.last = int(answer["position"])
                    if self.ack == "half":
                        conn.every = (int(answer["max_in_flight"]) + 1) // 2
                if not self.extensions:
                    self.extensions = wire.extensions
        except Exception as exc:
            self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            self._settle()
            if wire is not None:
                wire.close()
            return
        conn.open = True
        self.ready += 1
        self._settle()
        try:
            code = await wire.stream(lambda data, now: self._take(wire, conn, data, now))
            if not self.stopping:
                conn.closed = conn.closed or f"closed {code}"
                self.dropped.append(conn.closed)
        except Exception as exc:
            if not self.stopping:
                conn.closed = f"{type(exc).__name__}: {exc}"[:200]
                self.dropped.append(conn.closed)
        finally:
            conn.open = False
            wire.close()

    def _take(self, wire: Wire, conn: Conn, data: bytes, now: float) -> None:
        """One message, handled as it is read (in the protocol's callback)."""
        if not data.startswith(EVENTS_PREFIX):
            self._other(conn, data)
            return
        batch = self.decode(data)
        events = batch.events
        if events:  # a frame counts for the phase of its first event
            framing = self.framing.get(events[0].data.phase)
            if framing is None:
                framing = self.framing[events[0].data.phase] = [0, 0, 0]
            framing[0] += 1
            framing[1] += len(data)
            framing[2] += len(events)
        if batch.batch != conn.batch + 1 and conn.batch:
            conn.misframed += 1
        conn.batch = batch.batch
        if not events or events[-1].position != batch.last_position:
            conn.misframed += 1
        conn.got += len(events)
        counts = conn.counts
        phase = -1
        hist: Counter[int] = Counter()
        for event in events:
            position = event.position
            if position != conn.last + 1:
                if position <= conn.last:
                    conn.dups += 1
                else:
                    conn.gaps += position - conn.last - 1
            if position > conn.last:
                conn.last = position
            payload = event.data
            if payload.phase != phase:
                phase = payload.phase
                hist = self._phase(phase, payload.sent)
            counts[phase] = counts.get(phase, 0) + 1
            sent = payload.sent
            hist[int((now - sent) * 10_000)] += 1
            if sent < self.first_sent[phase]:
                self.first_sent[phase] = sent
            self.last_recv[phase] = now
        if phase >= 0:
            self.last_at[phase] = time.monotonic()
        if self.ack in ("manual", "half") and batch.batch - conn.acked >= conn.every:
            wire.send(b'{"type":"ack","sub":"s","batch":%d}' % batch.batch)
            conn.acked = batch.batch

    def _phase(self, phase: int, sent: float) -> Counter[int]:
        hist = self.hist.get(phase)
        if hist is None:
            hist = self.hist[phase] = Counter()
            self.first_sent[phase] = sent
        return hist

    def _other(self, conn: Conn, data: bytes) -> None:
        """A message other than ``events``: a ``closing`` notice or an ``error``."""
        message = json.loads(data)
        kind = message.get("type")
        if kind == "closing":
            conn.closed = f"closing {message.get('code')}: {message.get('reason')}"
        elif kind == "error":
            self.errors.append(f"{message.get('error')}: {message.get('message')}"[:200])

    async def report(self, phase: int, events: int, cap: float) -> dict[str, Any]:
        """The phase's figures, once every open connection has ``events`` of it (or cut off)."""
        began = time.monotonic()
        while time.monotonic() - began < cap:
            if all(c.counts.get(phase, 0) >= events for c in self.conns if c.open):
                break
            idle_since = self.last_at.get(phase, began)
            if time.monotonic() - max(idle_since, began) > self.drain_idle:
                break
            await asyncio.sleep(0.02)
        hist = self.hist.get(phase, Counter())
        framing = self.framing.get(phase, [0, 0, 0])
        short = [max(0, events - c.counts.get(phase, 0)) for c in self.conns if c.open]
        return {
            "phase": phase,
            "deliveries": sum(hist.values()),
            "hist": sorted(hist.items()),
            "first_sent": self.first_sent.get(phase),
            "last_recv": self.last_recv.get(phase),
            "open": sum(c.open for c in self.conns),
            "incomplete": sum(1 for s in short if s),
            "dropped": list(self.dropped),
            "failed": list(self.failed),
            "errors": self.errors[:5],
            "frame_bytes": framing[1] / framing[0] if framing[0] else 0,
            "frames": framing[0],
            "bytes": framing[1],
            "events": framing[2],
        }

    async def check(self, head: int, cap: float) -> dict[str, Any]:
        """Gaps, duplicates and shortfalls per connection, once all open ones reach ``head``."""
        began = time.monotonic()
        while time.monotonic() - began < cap:
            if all(c.last >= head for c in self.conns if c.open):
                break
            await asyncio.sleep(0.05)
        subscribed = [c for c in self.conns if c.start >= 0]
        # Missing: positions skipped, and (open connections) those not received by the cut-off.
        missing = [c.gaps + (max(0, head - c.last) if c.open else 0) for c in subscribed]
        return {
            "clients": len(subscribed),
            "open": sum(c.open for c in self.conns),
            "gaps": sum(c.gaps for c in subscribed),
            "gaps_max": max((c.gaps for c in subscribed), default=0),
            "dups": sum(c.dups for c in subscribed),
            "dups_max": max((c.dups for c in subscribed), default=0),
            "missing": sum(missing),
            "missing_max": max(missing, default=0),
            "behind": sum(1 for c in subscribed if c.open and c.last < head),
            "misframed": sum(c.misframed for c in subscribed),
            "events_max": max((c.got for c in subscribed), default=0),
            "events_min": min((c.got for c in subscribed), default=0),
            "dropped": list(self.dropped),
            "failed": list(self.failed),
            "errors": self.errors[:5],
        }

    async def run(self) -> None:
        """Connect them all, say so on stdout, then answer the commands on stdin."""
        gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
        began = time.perf_counter()
        tasks = [asyncio.create_task(self.follow(i, gate)) for i in range(self.count)]
        await self.all_ready.wait()
        self.connect_seconds = time.perf_counter() - began
        gc.collect()
        gc.freeze()  # the connections' objects: out of every later collection
        ready = {
            "ready": self.ready,
            "failed": self.failed[:5],
            "failures": len(self.failed),
            "seconds": self.connect_seconds,
            "extensions": self.extensions,
        }
        print(json.dumps(ready), flush=True)
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not line or line[0] == "stop":
                break
            if line[0] == "report":
                found = await self.report(int(line[1]), int(line[2]), float(line[3]))
            elif line[0] == "check":
                found = await self.check(int(line[1]), float(line[2]))
            else:  # status
                found = {
                    "open": sum(c.open for c in self.conns),
                    "dropped": list(self.dropped),
                    "failed": self.failed[:5],
                }
            print(json.dumps(found), flush=True)
        self.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- child: the writer ----------------------------------------------------------------------------


async def writer(args: argparse.Namespace) -> None:
    """Append on command: ``write <phase> <rate> <seconds> <batch> <cap>`` sends
    ``rate``/``batch`` requests a second (open loop, absolute deadlines) of ``batch``
    events each, every event carrying its phase, its number and ``time.time()`` taken
    just before the POST; then it waits at most ``cap`` s for the unanswered ones and
    prints the figures as JSON. ``stop`` ends it."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=hb.CONNS)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not line or line[0] == "stop":
                return
            phase, rate, seconds, batch, cap = (
                int(line[1]), float(line[2]), float(line[3]), int(line[4]), float(line[5])
            )  # fmt: skip
            print(
                json.dumps(await _write(session, args.url, phase, rate, seconds, batch, cap)),
                flush=True,
            )


async def _write(
    session: Any, url: str, phase: int, rate: float, seconds: float, batch: int, cap: float
) -> dict[str, Any]:
    import aiohttp

    written = errors = 0
    lag = 0.0
    positions: list[int] = []
    latencies: list[float] = []  # of the POSTs answered, from before the body was built
    pending: set[asyncio.Task[None]] = set()
    templates = [event_data(i) for i in range(batch)]
    for data in templates:
        del data["note"]  # room for the timing, to stay at ~210 bytes

    async def one(first: int) -> None:
        nonlocal written, errors
        began = time.perf_counter()
        sent = time.time()
        events = [
            {"type": EVENT_TYPE, "data": {**d, "phase": phase, "n": first + i, "sent": sent}}
            for i, d in enumerate(templates)
        ]
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        try:
            async with session.post(url, data=body) as response:
                answer = await response.read()
                ok = response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            latencies.append(time.perf_counter() - began)
            written += batch
            positions.append(int(json.loads(answer).get("position", 0)))
        else:
            errors += 1

    requests = max(1, round(seconds * rate / batch))
    interval = batch / rate
    start = time.perf_counter() + 0.01
    t0 = time.time() + 0.01
    for i in range(requests):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        task = asyncio.create_task(one(i * batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
    t1 = time.time()
    unanswered: set[asyncio.Task[None]] = set()
    if pending:
        _, unanswered = await asyncio.wait(set(pending), timeout=cap)
        for task in unanswered:
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
    return {
        "issued": requests * batch,
        "written": written,
        "requests": requests,
        "errors": errors,
        "unanswered": len(unanswered),
        "rate": written / seconds,
        "lag_ms": lag * 1000,
        "t0": t0,
        "t1": t1,
        "head": max(positions, default=0),
        "post_p50_ms": hb.percentile(sorted(latencies), 50) * 1000,
        "post_p99_ms": hb.percentile(sorted(latencies), 99) * 1000,
    }


# --- child: the raw websockets server ---------------------------------------------------------------


async def raw_server() -> None:
    """A ``websockets`` server that broadcasts what it is POSTed, and nothing of tidings.

    ``ws://…/ws`` speaks as much of ``tidings.v1`` as the clients use: ``ready`` on
    connect, ``subscribed`` (from the head) to a ``subscribe``, acks ignored.
    ``POST /streams/<stream>/events`` (aiohttp, another port, the same event loop) takes
    an append body, numbers its events and ``broadcast``s them to every subscriber as one
    ``events`` message shaped like tidings' (each event with tidings' fields); ``GET
    /head`` answers the last position.
    """
    import uuid

    import msgspec
    from aiohttp import web
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    RawEvent = msgspec.defstruct("RawEvent", [("type", str), ("data", msgspec.Raw)])
    RawBody = msgspec.defstruct("RawBody", [("events", list[RawEvent])])  # type: ignore[valid-type]
    decode = msgspec.json.Decoder(RawBody).decode
    encode = msgspec.json.Encoder().encode
    subscribers: set[ServerConnection] = set()
    state = {"position": 0, "batch": 0}
    node = uuid.uuid4().hex

    async def handler(ws: ServerConnection) -> None:
        address = {"node": node, "connection": uuid.uuid4().hex}
        ready = {
            "type": "ready",
            "protocol": "tidings.v1",
            "address": address,
            "user": None,
            "expires": None,
        }
        await ws.send(json.dumps(ready))
        try:
            async for message in ws:
                found = json.loads(message)
                if found.get("type") == "subscribe" and ws not in subscribers:
                    answer = {
                        "type": "subscribed",
                        "sub": found["sub"],
                        "position": state["position"],
                    }
                    # No await between the position and joining: nothing missed, nothing twice.
                    broadcast([ws], json.dumps(answer), text=True)
                    subscribers.add(ws)
        finally:
            subscribers.discard(ws)

    async def append(request: web.Request) -> web.Response:
        body = decode(await request.read())
        payloads = []
        now = datetime.now(UTC)
        for event in body.events:
            state["position"] += 1
            position = state["position"]
            recorded = {
                "id": str(uuid.uuid4()),
                "stream": request.match_info["stream"],
                "type": event.type,
                "data": event.data,
                "metadata": {},
                "version": position - 1,
                "position": position,
                "time": now,
            }
            payloads.append(encode(recorded))
        state["batch"] += 1
        message = b'{"type":"events","sub":"s","batch":%d,"events":[%s],"last_position":%d}' % (
            state["batch"],
            b",".join(payloads),
            state["position"],
        )
        broadcast(subscribers, message, text=True)
        answer = b'{"stream":"%s","position":%d}' % (
            request.match_info["stream"].encode(),
            state["position"],
        )
        return web.Response(body=answer, status=201, content_type="application/json")

    async def head(request: web.Request) -> web.Response:
        return web.json_response({"head": state["position"]})

    app = web.Application()
    app.router.add_post("/streams/{stream}/events", append)
    app.router.add_get("/head", head)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    http_port = runner.addresses[0][1]
    async with serve(
        handler, "127.0.0.1", 0, backlog=4096, ping_interval=20, max_size=2**20, compression=None
    ) as ws_server:
        ws_port = next(iter(ws_server.sockets)).getsockname()[1]
        print(
            f"raw: listening on http://127.0.0.1:{http_port} ws://127.0.0.1:{ws_port}/ws",
            flush=True,
        )
        await asyncio.Future()  # until SIGTERM


def run_role(args: argparse.Namespace) -> int:
    hb.raise_fd_limit()
    if args.role == "clients":
        clients = WsClients(args.url, args.count, args.ack, args.drain_idle, args.compression)
        _run_loop(clients.run())
    elif args.role == "writer":
        _run_loop(writer(args))
    else:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _run_loop(raw_server())
    return 0


# --- the runner: servers, client fleets, the writer ----------------------------------------------


def child(*options: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *options]


@dataclass(frozen=True)
class Server:
    """A server process: its HTTP base URL, its WebSocket URL and its pid."""

    name: str
    base: str
    ws_url: str
    pid: int


@contextlib.contextmanager
def started(name: str, command: list[str], env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start a server process; yield it once it says where it listens; stop it after."""
    process = hb.Process(command, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            line = process.readline(deadline - time.monotonic())
            found = re.search(r"listening on (http://\S+)(?: (ws://\S+))?", line)
            if found:
                break
        base = found.group(1)
        ws_url = found.group(2) or base.replace("http://", "ws://", 1) + "/ws"
        yield Server(name, base, ws_url, process.proc.pid)
    finally:
        process.stop()


def _tidings_command() -> list[str]:
    """How to run the ``tidings`` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("tidings")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tidings.cli"]


def tidings_server(store: str, **settings: Any) -> contextlib.AbstractContextManager[Server]:
    """``tidings serve --store store --port 0``, with ``TIDINGS_<NAME>`` settings."""
    env = {**os.environ, **{f"TIDINGS_{k.upper()}": str(v) for k, v in settings.items()}}
    return started("tidings", [*_tidings_command(), "serve", "--store", store, "--port", "0"], env)


def tidings_node(
    name: str, store: str, notify: str | None
) -> contextlib.AbstractContextManager[Server]:
    """One node of several on a shared store: ``tidings serve --store store --port 0``,
    with ``--notify notify`` when given (without it, the server's default: LISTEN/NOTIFY
    on a PostgreSQL store; a ``TIDINGS_NOTIFY`` in this environment is not passed on)."""
    command = [*_tidings_command(), "serve", "--store", store, "--port", "0"]
    if notify is not None:
        command += ["--notify", notify]
    env = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_NOTIFY", "TIDINGS_STORE")}
    return started(name, command, env)


def raw_server_process() -> contextlib.AbstractContextManager[Server]:
    return started("raw", child("--role", "raw-server"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def head_of(base: str) -> int:
    with urllib.request.urlopen(base + "/head", timeout=30) as response:
        return int(json.loads(response.read())["head"])


class Fleet:
    """``clients`` WebSocket clients over ``procs`` processes, driven by stdin commands."""

    def __init__(
        self,
        args: argparse.Namespace,
        url: str,
        clients: int,
        procs: int,
        ack: str,
        compression: str | None = None,
    ) -> None:
        procs = max(1, min(procs, clients))
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        options = ["--role", "clients", "--url", url, f"--ack={ack}"]
        options += [
            f"--drain-idle={args.sizes.drain_idle}",
            f"--compression={compression or args.compression}",
        ]
        self.processes = [hb.Process(child(*options, f"--count={n}"), stdin=True) for n in shares]
        self.connected = 0
        self.failures = 0
        self.failed: list[str] = []
        self.connect_seconds = 0.0
        self.extensions = ""
        try:
            for process in self.processes:
                ready = json.loads(process.readline(120 + clients / 20))
                self.connected += ready["ready"]
                self.failures += ready["failures"]
                self.failed += ready["failed"]
                self.connect_seconds = max(self.connect_seconds, ready["seconds"])
                self.extensions = self.extensions or ready["extensions"]
        except Exception:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes]

    def ask(self, command: str, timeout: float = 300) -> list[dict[str, Any]]:
        for process in self.processes:
            process.send(command)
        return [json.loads(p.readline(timeout)) for p in self.processes]

    def check(self, head: int, cap: float) -> dict[str, Any]:
        """Every client's positions against the head: gaps, duplicates, shortfalls."""
        reports = self.ask(f"check {head} {cap}", timeout=cap + 120)
        summed = ("clients", "open", "gaps", "dups", "missing", "behind", "misframed")
        found: dict[str, Any] = {k: sum(r[k] for r in reports) for k in summed}
        for key in ("gaps_max", "dups_max", "missing_max", "events_max"):
            found[key] = max(r[key] for r in reports)
        found["events_min"] = min(r["events_min"] for r in reports)
        found["dropped"] = sum(len(r["dropped"]) for r in reports) + self.failures
        found["why"] = sorted({*(d for r in reports for d in r["dropped"]), *self.failed})[:5]
        found["errors"] = [e for r in reports for e in r["errors"]][:5]
        found["head"] = head
        return found

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.send("stop")
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.proc.wait(30)
            process.stop(5)


class Writer:
    """The writer process, appending to one URL on command."""

    def __init__(self, url: str) -> None:
        self.process = hb.Process(child("--role", "writer", "--url", url), stdin=True)

    @property
    def pid(self) -> int:
        return int(self.process.proc.pid)

    def write(
        self, phase: int, rate: float, seconds: float, batch: int, cap: float
    ) -> dict[str, Any]:
        self.process.send(f"write {phase} {rate} {seconds} {batch} {cap}")
        return dict(json.loads(self.process.readline(60 + 3 * seconds + cap)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.process.send("stop")
            self.process.proc.wait(10)
        self.process.stop(5)


class Rig:
    """A server, its clients and a writer: runs numbered phases and reports each.

    The writer appends to ``server``; the clients connect to ``listen`` (another node
    on the same store in the nodes part; by default ``server`` too). ``watch`` names
    further processes whose CPU each phase reports.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        server: Server,
        clients: int,
        procs: int,
        ack: str,
        listen: Server | None = None,
        watch: dict[str, list[int]] | None = None,
    ) -> None:
        self.args = args
        self.server = server
        self.listen = listen or server
        self.watch = watch or {}
        self.phases = itertools.count(1)
        self.writer = Writer(f"{server.base}/streams/{STREAM}/events")
        try:
            self.fleet = Fleet(args, self.listen.ws_url, clients, procs, ack)
        except Exception:
            self.writer.close()
            raise
        self.dropped = self.fleet.failures

    def phase(self, rate: float, seconds: float, batch: int = 1) -> dict[str, Any]:
        """Write at ``rate`` for ``seconds``; gather the clients' figures (waiting at most
        the drain cap after the last append); the CPU each side used meanwhile."""
        sizes = self.args.sizes
        number = next(self.phases)
        pids = {
            "server": [self.server.pid],
            "clients": self.fleet.pids,
            "writer": [self.writer.pid],
            **self.watch,
        }
        cpu0 = {k: sum(map(cpu_seconds, v)) for k, v in pids.items()}
        wall0 = time.perf_counter()
        wrote = self.writer.write(number, rate, seconds, batch, sizes.drain_cap)
        reports = self.fleet.ask(f"report {number} {wrote['written']} {sizes.drain_cap}")
        wall = time.perf_counter() - wall0
        cpu = {k: (sum(map(cpu_seconds, v)) - cpu0[k]) / wall * 100 for k, v in pids.items()}
        found: dict[str, Any] = hb.merge_reports(reports, wrote["written"], self.fleet.connected)
        frames = sum(r["frames"] for r in reports)
        events = sum(r["events"] for r in reports)
        found.update(
            rate=rate,
            batch=batch,
            seconds=seconds,
            writes_per_s=wrote["rate"],
            write_errors=wrote["errors"] + wrote["unanswered"],
            lag_ms=wrote["lag_ms"],
            post_p50_ms=wrote["post_p50_ms"],
            post_p99_ms=wrote["post_p99_ms"],
            incomplete=sum(r["incomplete"] for r in reports),
            events_per_frame=events / frames if frames else math.nan,
            bytes_per_event=sum(r["bytes"] for r in reports) / events if events else math.nan,
            errors=[e for r in reports for e in r["errors"]][:5],
            cpu_percent={k: round(v, 1) for k, v in cpu.items()},
        )
        # Appends given up on (unanswered within the cap) may still commit and arrive.
        found["late"] = max(0, found["late"])
        found["new_drops"] = found["dropped"] - self.dropped
        self.dropped = found["dropped"]
        return found

    def check(self) -> dict[str, Any]:
        return self.fleet.check(head_of(self.server.base), max(10.0, self.args.sizes.drain_cap * 3))

    def close(self) -> None:
        self.fleet.close()
        self.writer.close()


def _phase_line(what: str, found: dict[str, Any]) -> str:
    cpu = found["cpu_percent"]
    return (
        f"  {what}: {found['deliveries_per_s']:,.0f} deliveries/s  p50 {found['p50_ms']:.1f} ms  "
        f"p99 {found['p99_ms']:.1f} ms  max {found['max_ms']:.1f} ms  late {found['late']:,}  "
        f"dropped {found['new_drops']}  CPU server {cpu['server']:.0f}% clients {cpu['clients']:.0f}% "
        f"writer {cpu['writer']:.0f}%  POST p50 {found['post_p50_ms']:.1f} ms p99 {found['post_p99_ms']:.1f} ms"
        + (f"  writer lag {found['lag_ms']:.0f} ms" if found["lag_ms"] > 20 else "")
    )


def _check_line(label: str, check: dict[str, Any]) -> str:
    return (
        f"  {label} check at head {check['head']:,}: {check['clients']:,} clients, "
        f"missing {check['missing']:,} (max {check['missing_max']:,}/client), "
        f"duplicated {check['dups']:,}, gaps {check['gaps']:,}, dropped {check['dropped']}"
        + (f" ({'; '.join(check['why'])})" if check["why"] else "")
    )


def problems(check: dict[str, Any], strict_missing: bool) -> list[str]:
    """What a final check found wrong: gaps and duplicates always, missing events when
    ``strict_missing`` (the latency part, where everything had time to arrive)."""
    found = []
    if check["gaps"]:
        found.append(
            f"{check['gaps']:,} positions skipped (max {check['gaps_max']:,} in one client)"
        )
    if check["dups"]:
        found.append(
            f"{check['dups']:,} positions received twice (max {check['dups_max']:,} in one client)"
        )
    if check["misframed"]:
        found.append(f"{check['misframed']:,} batches misnumbered or with a wrong last_position")
    if strict_missing and check["missing"]:
        found.append(
            f"{check['missing']:,} events never received by {check['behind']:,} open clients"
        )
    return found


# --- part 1: fan-out latency ---------------------------------------------------------------------


def run_latency(args: argparse.Namespace, stores: Any) -> dict[str, Any]:
    sizes = args.sizes
    found: dict[str, Any] = {"series": {}, "errors": {}, "failures": []}
    print(
        f"fan-out latency: {len(sizes.configs)} configurations x ack auto/manual, and the raw floor, {args.runs} run(s) "
        f"of {sizes.seconds:g} s after {sizes.warmup:g} s of warm-up, one event per append",
        flush=True,
    )
    for config in sizes.configs:
        for ack in LATENCY_SERIES:
            key = f"{config.clients} {config.rate:g} {ack}"
            series: dict[str, Any] = {
                "clients": config.clients,
                "rate": config.rate,
                "ack": ack,
                "runs": [],
            }
            found["series"][key] = series
            try:
                cap = max(10_000, config.clients + 100)
                with contextlib.ExitStack() as stack:
                    if ack == "raw":  # the floor: the same clients, no store, no tidings
                        server = stack.enter_context(raw_server_process())
                    else:
                        url = stack.enter_context(stores.fresh("sqlite"))
                        server = stack.enter_context(tidings_server(url, ws__max_connections=cap))
                    rig = Rig(
                        args, server, config.clients, config.procs, "auto" if ack == "raw" else ack
                    )
                    try:
                        series["connected"] = rig.fleet.connected
                        series["connect_seconds"] = rig.fleet.connect_seconds
                        series["extensions"] = rig.fleet.extensions
                        print(
                            f" {config.label}, ack {ack}: {rig.fleet.connected:,} connected in "
                            f"{rig.fleet.connect_seconds:.1f} s ({len(rig.fleet.processes)} client processes, "
                            f"extensions: {rig.fleet.extensions})",
                            flush=True,
                        )
                        series["warmup"] = rig.phase(config.rate, sizes.warmup)
                        for run in range(1, args.runs + 1):
                            result = rig.phase(config.rate, sizes.seconds)
                            series["runs"].append(result)
                            print(_phase_line(f"run {run}/{args.runs}", result), flush=True)
                        series["check"] = check = rig.check()
                        print(_check_line(config.label, check), flush=True)
                        for problem in problems(check, strict_missing=True):
                            found["failures"].append(f"{config.label}, ack {ack}: {problem}")
                    finally:
                        rig.close()
            except Exception as exc:
                found["errors"][key] = f"{type(exc).__name__}: {exc}"
                print(f"  ERROR ({key}) {found['errors'][key]}", flush=True)
    return found


def render_latency(found: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        (
            "configuration", "ack", "deliveries/s", "p50 ms", "p99 ms", "max ms", "missing/client",
            "dup/client", "dropped", "CPU server/clients %", "goal", "",
        )
    ]  # fmt: skip
    for config in args.sizes.configs:
        for ack in LATENCY_SERIES:
            series = found["series"].get(f"{config.clients} {config.rate:g} {ack}")
            if not series or not series["runs"]:
                continue
            runs = series["runs"]

            def v(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [r[key] for r in runs]

            check = series.get("check") or {}
            dropped = check.get("dropped", sum(v("new_drops")))
            p99 = med(v("p99_ms"))
            ok = (
                p99 is not None
                and p99 <= config.goal_ms
                and not problems(check, strict_missing=True)
                and dropped == 0
            )
            server_cpu = med([r["cpu_percent"]["server"] for r in runs]) or 0
            client_cpu = med([r["cpu_percent"]["clients"] for r in runs]) or 0
            lines.append(
                (
                    config.label,
                    ack,
                    cell(v("deliveries_per_s")),
                    cell(v("p50_ms"), 1),
                    cell(v("p99_ms"), 1),
                    cell(v("max_ms"), 1),
                    f"{check.get('missing_max', '-')}",
                    f"{check.get('dups_max', '-')}",
                    f"{dropped:,}",
                    f"{server_cpu:.0f} / {client_cpu:.0f}",
                    f"p99 <= {config.goal_ms:g} ms, 0 missing/dup/dropped"
                    if ack != "raw"
                    else "(floor)",
                    ("pass" if ok else "MISS") if ack != "raw" else "",
                )
            )
    text = [
        f"WebSocket fan-out: clients following GET /ws (subscribe from end) over a SQLite store; a writer "
        f"appending one event per request; median of {args.runs} run(s) of {args.sizes.seconds:g} s (min-max)",
        "",
        *fixed_width(lines),
        "",
        "latency: the client's receipt time.time() - the writer's time.time() just before its POST (commit,",
        "fan-out and the client's decoding included); deliveries/s: events received by all clients / (last receipt -",
        "first send); missing/dup per client: the most in one client, from its positions after the last run (every",
        "position from its subscribed one to the head, once each); dropped: clients cut off or refused; CPU: % of one",
        "core during the runs (the machine has "
        f"{os.cpu_count()} CPUs shared by the server, the clients and the writer). raw: the same clients and",
        "writer on a bare websockets server that broadcasts each POST at once, with no store: this machine's floor.",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    text += [f"FAILED: {f}" for f in found["failures"]]
    return "\n".join(text)


# --- part 2: saturation beside a raw websockets server --------------------------------------------


def ladder(
    rig: Rig, label: str, batch: int, start: float, steps: int, seconds: float
) -> list[dict[str, Any]]:
    """Double the rate from ``start`` (``batch`` events per request) until deliveries/s
    stop rising, a step leaves a backlog past the drain cap, or an append fails."""
    found: list[dict[str, Any]] = []
    best = 0.0
    rate = start
    for _ in range(steps):
        step = rig.phase(rate, seconds, batch)
        found.append(step)
        print(
            _phase_line(f"{label} {rate:,.0f} ev/s x{batch}", step)
            + f"  ({step['events_per_frame']:.1f} ev/frame)",
            flush=True,
        )
        rising = step["deliveries_per_s"] > best * RISE
        best = max(best, step["deliveries_per_s"])
        if not rising or step["late"] > 0 or step["write_errors"]:
            break
        rate *= LADDER_UP
    return found


def run_saturation(args: argparse.Namespace, stores: Any) -> dict[str, Any]:
    sizes = args.sizes
    print(
        f"\nsaturation: {sizes.sat_clients} clients (ack auto) in 2 processes; the writer from "
        f"{sizes.sat_start:,.0f} ev/s, x{LADDER_UP:g} per {sizes.step_seconds:g}-s step, one event per "
        f"request, then {SAT_BATCH} per request from the rate that did best",
        flush=True,
    )
    found: dict[str, Any] = {"series": {}, "errors": {}, "failures": []}
    for name in ("tidings", "raw"):
        try:
            with contextlib.ExitStack() as stack:
                if name == "tidings":
                    url = stack.enter_context(stores.fresh("sqlite"))
                    server = stack.enter_context(tidings_server(url))
                else:
                    server = stack.enter_context(raw_server_process())
                rig = Rig(args, server, sizes.sat_clients, 2, "auto")
                stack.callback(rig.close)
                series: dict[str, Any] = {
                    "connected": rig.fleet.connected,
                    "extensions": rig.fleet.extensions,
                }
                found["series"][name] = series
                rig.phase(min(50.0, sizes.sat_start), sizes.warmup)  # warm-up, not counted
                one = ladder(rig, name, 1, sizes.sat_start, sizes.sat_steps, sizes.step_seconds)
                series["ladders"] = {"1": one}
                top = max(one, key=lambda s: s["deliveries_per_s"])
                start = max(sizes.sat_start, top["rate"])
                series["ladders"][str(SAT_BATCH)] = ladder(
                    rig, name, SAT_BATCH, start, sizes.sat_steps, sizes.step_seconds
                )
                series["check"] = check = rig.check()
                print(_check_line(name, check), flush=True)
                for problem in problems(check, strict_missing=False):
                    found["failures"].append(f"saturation {name}: {problem}")
        except Exception as exc:
            found["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"  ERROR ({name}) {found['errors'][name]}", flush=True)
    return found


def render_saturation(found: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        (
            "server", "events/request", "most deliveries/s", "at ev/s", "ev/frame", "frames/s",
            "B/event", "steps (ev/s: deliveries/s, p99 ms, CPU server/clients %)",
        )
    ]  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for name, label in (("tidings", "tidings serve"), ("raw", "raw websockets")):
        series = found["series"].get(name)
        if not series:
            continue
        for batch, steps in series.get("ladders", {}).items():
            if not steps:
                continue
            top = max(steps, key=lambda s: s["deliveries_per_s"])
            best[name, batch] = top["deliveries_per_s"]
            cells = ", ".join(
                f"{s['rate']:,.0f}: {s['deliveries_per_s']:,.0f}, {s['p99_ms']:,.0f}, "
                f"{s['cpu_percent']['server']:.0f}/{s['cpu_percent']['clients']:.0f}"
                for s in steps
            )
            lines.append(
                (
                    label,
                    batch,
                    f"{top['deliveries_per_s']:,.0f}",
                    f"{top['rate']:,.0f}",
                    f"{top['events_per_frame']:.1f}",
                    f"{top['deliveries_per_s'] / top['events_per_frame']:,.0f}",
                    f"{top['bytes_per_event']:.0f}",
                    cells,
                )
            )
    ratios = [("ratio", "value", "goal", "")]
    overall = {
        n: max((v for (m, _), v in best.items() if m == n), default=0.0) for n in ("tidings", "raw")
    }
    r = overall["tidings"] / overall["raw"] if overall["tidings"] and overall["raw"] else None
    ratios.append(
        (
            "tidings / raw, the most deliveries/s of either ladder",
            *hb.ratio_cells(r, GOALS["saturation_vs_raw"]),
        )
    )
    for batch in ("1", str(SAT_BATCH)):
        if ("tidings", batch) in best and ("raw", batch) in best:
            r = best["tidings", batch] / best["raw", batch]
            ratios.append(
                (f"tidings / raw, {batch} event(s) per request", *hb.ratio_cells(r, None))
            )
    text = [
        f"saturation: {args.sizes.sat_clients} clients (ack auto); the writer rate x{LADDER_UP:g} per "
        f"{args.sizes.step_seconds:g}-s step until deliveries/s rise less than {RISE - 1:.0%} over the best, a step "
        f"leaves a backlog past {args.sizes.drain_cap:g} s, or an append fails",
        "",
        *fixed_width(lines),
        "",
        *fixed_width(ratios),
        "",
        "raw: websockets.asyncio.server.serve + broadcast() of each request's events as one frame shaped like tidings'",
        "(aiohttp takes the POSTs in the same loop): with one event per request, one event per frame. tidings puts what",
        "one read of the log found into one frame (ev/frame above 1), so it sends fewer frames at the same rate.",
        "deliveries/s: events received by all clients / (last receipt - first send) of the step. When the client",
        "processes' CPU nears 100% each, the figure is the clients' ceiling, not the server's.",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    text += [f"FAILED: {f}" for f in found["failures"]]
    return "\n".join(text)


# --- part 3: memory per idle connection -------------------------------------------------------------


def idle_memory(
    args: argparse.Namespace, server: Server, count: int, compression: str
) -> dict[str, Any]:
    """``count`` idle connections to ``server`` (offering ``compression``): its VmRSS
    before and after, and how many are still open after the hold."""
    sizes = args.sizes
    warm = Fleet(args, server.ws_url, 20, 1, "none", compression)  # first connections' imports
    warm.close()
    time.sleep(1.0)
    before = rss_kib(server.pid)
    began = time.perf_counter()
    fleet = Fleet(args, server.ws_url, count, max(1, math.ceil(count / 2500)), "none", compression)
    try:
        took = time.perf_counter() - began
        time.sleep(1.0)
        after = rss_kib(server.pid)
        time.sleep(sizes.hold)
        statuses = fleet.ask("status")
        held = sum(s["open"] for s in statuses)
        later = rss_kib(server.pid)
    finally:
        fleet.close()
    return {
        "server": server.name,
        "connections": count,
        "compression": compression,
        "extensions": fleet.extensions,
        "connected": fleet.connected,
        "failures": fleet.failures,
        "failed": fleet.failed[:5],
        "held": held,
        "dropped": sorted({d for s in statuses for d in s["dropped"]})[:5],
        "connect_seconds": took,
        "handshakes_per_s": fleet.connected / fleet.connect_seconds
        if fleet.connect_seconds
        else math.nan,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_held_kib": later,
        "kib_per_connection": (after - before) / fleet.connected if fleet.connected else math.nan,
    }


def run_memory(args: argparse.Namespace, stores: Any) -> dict[str, Any]:
    sizes = args.sizes
    print(
        f"\nmemory: {' and '.join(f'{k:,}' for k in sizes.idle)} idle connections to tidings serve "
        f"(up to 2,500 per client process, held {sizes.hold:g} s), the clients offering "
        f"permessage-deflate or not; the raw websockets server at {sizes.idle[0]:,} for reference",
        flush=True,
    )
    found: dict[str, Any] = {"series": [], "errors": {}, "failures": []}
    plan = [("tidings", k, c) for k in sizes.idle for c in ("deflate", "none")]
    plan += [("raw", sizes.idle[0], c) for c in ("deflate", "none")]
    for name, count, compression in plan:
        key = f"{name} {count} {compression}"
        try:
            with contextlib.ExitStack() as stack:
                if name == "tidings":
                    server = stack.enter_context(
                        tidings_server(stack.enter_context(stores.fresh("sqlite")))
                    )
                else:
                    server = stack.enter_context(raw_server_process())
                series = idle_memory(args, server, count, compression)
            found["series"].append(series)
            print(
                f"  {name} {count:,} ({compression}): {series['connected']:,} connected in "
                f"{series['connect_seconds']:.1f} s, {series['held']:,} held after {sizes.hold:g} s; RSS "
                f"{series['rss_before_kib'] / 1024:,.1f} -> {series['rss_after_kib'] / 1024:,.1f} MiB "
                f"({series['rss_held_kib'] / 1024:,.1f} after the hold): "
                f"{series['kib_per_connection']:.1f} KiB per connection"
                + (f"; failed: {'; '.join(series['failed'][:3])}" if series["failed"] else ""),
                flush=True,
            )
        except Exception as exc:
            found["errors"][key] = f"{type(exc).__name__}: {exc}"
            print(f"  ERROR ({key}) {found['errors'][key]}", flush=True)
    return found


def render_memory(found: dict[str, Any], args: argparse.Namespace) -> str:
    goal = GOALS["memory_kib_per_connection"]
    lines = [
        (
            "server", "connections", "client offers", "connected", "held", "handshakes/s",
            "RSS before MiB", "RSS after MiB", "KiB/connection", "goal", "",
        )
    ]  # fmt: skip
    for s in found["series"]:
        ok = s["kib_per_connection"] <= goal and s["held"] == s["connections"]
        tidings = s["server"] == "tidings"
        lines.append(
            (
                "tidings serve" if tidings else "raw websockets",
                f"{s['connections']:,}",
                "permessage-deflate" if s["compression"] == "deflate" else "nothing",
                f"{s['connected']:,}",
                f"{s['held']:,}",
                f"{s['handshakes_per_s']:,.0f}",
                f"{s['rss_before_kib'] / 1024:,.1f}",
                f"{s['rss_after_kib'] / 1024:,.1f}",
                f"{s['kib_per_connection']:.1f}",
                f"<= {goal:g} KiB, all held" if tidings else "-",
                ("pass" if ok else "MISS") if tidings else "",
            )
        )
    text = [
        "memory per idle connection: the server's VmRSS before and after K connections, each after its ready",
        "",
        *fixed_width(lines),
        "",
        f"KiB/connection: (after - before) / connected, 1 s after the last ready; held: still open after {args.sizes.hold:g} s "
        "more. permessage-deflate: what the websockets client and browsers offer (uvicorn and the raw server accept it,",
        "both with 12-bit windows and memLevel 5); the raw websockets server: the same clients, for reference.",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    return "\n".join(text)


# --- part 4: across nodes -------------------------------------------------------------------------

NOTIFIER_LABELS = {"nats": "NATS", "redis": "Redis", "postgres": "PostgreSQL LISTEN/NOTIFY"}


def notify_url(args: argparse.Namespace, notifier: str) -> str | None:
    """The ``--notify`` URL of a notifier series; None for PostgreSQL's own (the default)."""
    return {"nats": args.nats_url, "redis": args.redis_url}.get(notifier)


def _node_line(what: str, found: dict[str, Any]) -> str:
    cpu = found["cpu_percent"]
    return (
        f"  {what}: {found['writes_per_s']:,.0f} writes/s, {found['deliveries_per_s']:,.0f} deliveries/s  "
        f"p50 {found['p50_ms']:.1f} ms  p99 {found['p99_ms']:.1f} ms  max {found['max_ms']:.1f} ms  "
        f"late {found['late']:,}  dropped {found['new_drops']}  CPU A {cpu['node_a']:.0f}% "
        f"B {cpu['node_b']:.0f}% clients {cpu['clients']:.0f}% writer {cpu['writer']:.0f}%  "
        f"POST p50 {found['post_p50_ms']:.1f} ms p99 {found['post_p99_ms']:.1f} ms"
        + (f"  writer lag {found['lag_ms']:.0f} ms" if found["lag_ms"] > 20 else "")
    )


def node_series(
    args: argparse.Namespace, a: Server, b: Server, side: str, label: str
) -> dict[str, Any]:
    """The writer on node A, ``node_clients`` fresh clients on node ``side``: a warm-up,
    ``--runs`` runs, then the clients' position check."""
    sizes = args.sizes
    series: dict[str, Any] = {
        "clients_on": side,
        "clients": sizes.node_clients,
        "rate": sizes.node_rate,
        "runs": [],
    }
    rig = Rig(
        args,
        a,
        sizes.node_clients,
        1,
        "auto",
        listen=b if side == "B" else a,
        watch={"node_a": [a.pid], "node_b": [b.pid]},
    )
    try:
        series["connected"] = rig.fleet.connected
        series["extensions"] = rig.fleet.extensions
        print(
            f" {label}, clients on node {side}: {rig.fleet.connected:,} connected "
            f"(extensions: {rig.fleet.extensions})",
            flush=True,
        )
        series["warmup"] = rig.phase(sizes.node_rate, sizes.node_warmup)
        for run in range(1, args.runs + 1):
            result = rig.phase(sizes.node_rate, sizes.node_seconds)
            series["runs"].append(result)
            print(_node_line(f"run {run}/{args.runs}", result), flush=True)
        series["check"] = check = rig.check()
        print(_check_line(f"{label}, node {side}", check), flush=True)
    finally:
        rig.close()
    return series


def run_nodes(args: argparse.Namespace, stores: Any) -> dict[str, Any]:
    """Per notifier: nodes A and B on one fresh PostgreSQL schema; clients on B, then on A."""
    sizes = args.sizes
    found: dict[str, Any] = {"series": {}, "errors": {}, "failures": []}
    print(
        f"\nnodes: two tidings serve on one PostgreSQL schema, notified by "
        f"{', '.join(NOTIFIER_LABELS[n] for n in args.notifier)}; the writer appends to node A at "
        f"{sizes.node_rate:,.0f} ev/s (one event per request); {sizes.node_clients} clients (ack auto) on "
        f"node B, then on node A; {args.runs} run(s) of {sizes.node_seconds:g} s after "
        f"{sizes.node_warmup:g} s of warm-up each",
        flush=True,
    )
    unavailable = stores.check_postgres()  # also drops the schemas of dead runs
    if unavailable:
        found["errors"]["postgres"] = unavailable
        print(f"  ERROR {unavailable}", flush=True)
        return found
    for notifier in args.notifier:
        label = NOTIFIER_LABELS[notifier]
        notify = notify_url(args, notifier)
        try:
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(stores.fresh("postgres"))
                a = stack.enter_context(tidings_node("node A", url, notify))
                b = stack.enter_context(tidings_node("node B", url, notify))
                for side in ("B", "A"):
                    key = f"{notifier} {side}"
                    try:
                        series = node_series(args, a, b, side, label)
                    except Exception as exc:
                        found["errors"][key] = f"{type(exc).__name__}: {exc}"
                        print(f"  ERROR ({key}) {found['errors'][key]}", flush=True)
                        continue
                    series["notifier"] = notifier
                    series["notify"] = notify
                    found["series"][key] = series
                    for problem in problems(series["check"], strict_missing=True):
                        found["failures"].append(f"nodes {label}, clients on {side}: {problem}")
        except Exception as exc:
            found["errors"][notifier] = f"{type(exc).__name__}: {exc}"
            print(f"  ERROR ({notifier}) {found['errors'][notifier]}", flush=True)
    return found


def render_nodes(found: dict[str, Any], args: argparse.Namespace) -> str:
    goal_ms = GOALS["nodes_p99_ms"]
    lines = [
        (
            "notifier", "clients on", "writes/s", "deliveries/s", "p50 ms", "p99 ms", "max ms",
            "POST p50/p99 ms", "missing/client", "dup/client", "dropped", "CPU A/B/clients/writer %",
            "goal", "",
        )
    ]  # fmt: skip
    extra = [("notifier", "node B - node A: p50 ms", "p99 ms")]
    for notifier in args.notifier:
        medians: dict[str, tuple[float | None, float | None]] = {}
        for side in ("B", "A"):
            series = found["series"].get(f"{notifier} {side}")
            if not series or not series["runs"]:
                continue
            runs = series["runs"]

            def v(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
                return [r[key] for r in runs]

            def c(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return med([r["cpu_percent"][key] for r in runs]) or 0.0

            check = series.get("check") or {}
            dropped = check.get("dropped", sum(v("new_drops")))
            p99 = med(v("p99_ms"))
            medians[side] = (med(v("p50_ms")), p99)
            on_b = side == "B"
            ok = (
                p99 is not None
                and p99 <= goal_ms
                and not problems(check, strict_missing=True)
                and dropped == 0
            )
            lines.append(
                (
                    NOTIFIER_LABELS[notifier],
                    f"node {side}" + ("" if on_b else " (the writer's)"),
                    cell(v("writes_per_s")),
                    cell(v("deliveries_per_s")),
                    cell(v("p50_ms"), 1),
                    cell(v("p99_ms"), 1),
                    cell(v("max_ms"), 1),
                    f"{med(v('post_p50_ms')) or 0:.1f} / {med(v('post_p99_ms')) or 0:.1f}",
                    f"{check.get('missing_max', '-')}",
                    f"{check.get('dups_max', '-')}",
                    f"{dropped:,}",
                    f"{c('node_a'):.0f} / {c('node_b'):.0f} / {c('clients'):.0f} / {c('writer'):.0f}",
                    f"p99 <= {goal_ms:g} ms, 0 missing/dup/dropped" if on_b else "-",
                    ("pass" if ok else "MISS") if on_b else "",
                )
            )
        if "A" in medians and "B" in medians:
            (b50, b99), (a50, a99) = medians["B"], medians["A"]
            extra.append(
                (
                    NOTIFIER_LABELS[notifier],
                    f"{b50 - a50:+.1f}" if b50 is not None and a50 is not None else "-",
                    f"{b99 - a99:+.1f}" if b99 is not None and a99 is not None else "-",
                )
            )
    sizes = args.sizes
    text = [
        f"across nodes: two tidings serve on one PostgreSQL schema; the writer appends to node A at "
        f"{sizes.node_rate:,.0f} ev/s, one event per request; {sizes.node_clients} clients (ack auto, from end) on node B, "
        f"then on node A; median of {args.runs} run(s) of {sizes.node_seconds:g} s (min-max)",
        "",
        *fixed_width(lines),
        "",
        *fixed_width(extra),
        "",
        "latency: the client's receipt time.time() - the writer's time.time() just before its POST to node A (node A's",
        "commit, its head on the notifier, node B's read of the log, its send and the client's decoding); POST: the",
        "writer's round trips to node A; missing/dup per client: the most in one client, from its positions after the",
        "last run; CPU: % of one core during the runs (node A, node B, the client process, the writer; the machine has",
        f"{os.cpu_count()} CPUs, shared with PostgreSQL and the notifier). Clients on node A: the same, for comparison.",
    ]
    text += [f"ERROR ({k}): {v}" for k, v in found["errors"].items()]
    text += [f"FAILED: {f}" for f in found["failures"]]
    return "\n".join(text)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args)
    fds = hb.raise_fd_limit()  # inherited by the server and the clients
    need = max(args.sizes.idle) + 500
    if fds < need and "memory" in args.part:
        print(f"warning: open-file limit {fds} < {need}: connections will fail", file=sys.stderr)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load:.1f} before starting: figures will be low and scattered",
            file=sys.stderr,
        )
    print(f"load average {load:.2f} at the start, {os.cpu_count()} CPUs", flush=True)
    began = time.perf_counter()
    stores = Stores(args, "ws")
    results: dict[str, Any] = {}
    loads: dict[str, float] = {"start": round(load, 2)}
    texts: list[str] = []
    seconds: dict[str, float] = {}
    parts = {
        "latency": (run_latency, render_latency),
        "saturation": (run_saturation, render_saturation),
        "memory": (run_memory, render_memory),
        "nodes": (run_nodes, render_nodes),
    }
    for part in PARTS:
        if part in args.part:
            started_at = time.perf_counter()
            run, render = parts[part]
            results[part] = run(args, stores)
            seconds[part] = round(time.perf_counter() - started_at, 1)
            loads[f"after_{part}"] = hb.load_now()
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
            "compression": args.compression,
            "notifiers": args.notifier,
            "sizes": {
                **{k: v for k, v in args.sizes.__dict__.items() if k != "configs"},
                "configs": [c.__dict__ for c in args.sizes.configs],
            },
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
    failures = [f for part in results.values() for f in part.get("failures", [])]
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    errors = any(part.get("errors") for part in results.values())
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
