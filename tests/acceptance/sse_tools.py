"""Tools for the live SSE fault tests: a raw SSE reader that resumes by ``Last-Event-ID``,
an HTTP writer whose appends are idempotent by event id, a reader of a process's RSS,
and a server that can be killed and started again on the same port and store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.served import Served, start_server

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)


@dataclass
class Frame:
    """One SSE block (up to a blank line): its fields, and its comment lines."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        """Whether a browser would dispatch it (it has data)."""
        return bool(self.data)

    @property
    def text(self) -> str:
        """Its data lines joined as a browser joins them."""
        return "\n".join(self.data)


class FrameParser:
    """An incremental parser keeping every block whole, comments and id-only ones too.

    A block is handed back only when its blank line has arrived: a block cut by a
    broken connection is never seen, as in a browser.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._frame = Frame()
        self._started = False

    def feed(self, chunk: bytes) -> list[Frame]:
        """Parse ``chunk``; the blocks it completed."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        done: list[Frame] = []
        for raw in lines:
            line = raw.decode().removesuffix("\r")
            if not line:
                if self._started:
                    done.append(self._frame)
                self._frame, self._started = Frame(), False
                continue
            self._started = True
            if line.startswith(":"):
                self._frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                self._frame.id = value
            elif name == "event":
                self._frame.event = value
            elif name == "data":
                self._frame.data.append(value)
            elif name == "retry":
                self._frame.retry = int(value)
        return done


@dataclass
class Connection:
    """What one connection of a raw reader got."""

    status: int
    opened: float
    frames: list[Frame] = field(default_factory=list)
    ended: float | None = None
    error: str | None = None


class RawReader:
    """Follows ``/events/live`` over raw HTTP, as a browser's EventSource does.

    It reconnects whenever the response ends or breaks, sending the last ``id`` it
    saw in a whole block as ``Last-Event-ID``; every event is kept with the time it
    arrived. ``until`` (a position) ends the read once the cursor has reached it.
    """

    def __init__(
        self,
        base: str,
        params: dict[str, str] | None = None,
        last_id: str | None = None,
        reconnect: bool = True,
    ) -> None:
        self.base = base
        self.params = params or {}
        self.last_id = last_id
        self.reconnect = reconnect
        self.events: list[dict[str, Any]] = []
        self.arrived: list[float] = []  # wall-clock time.time() of each event's arrival
        self.connections: list[Connection] = []
        self.until: int | None = None
        self.got_event = asyncio.Event()
        self.opened = asyncio.Event()

    @property
    def positions(self) -> list[int]:
        """Positions of the events received, in arrival order."""
        return [e["position"] for e in self.events]

    @property
    def frames(self) -> list[Frame]:
        """Every block of every connection, in order."""
        return [f for c in self.connections for f in c.frames]

    @property
    def cursor(self) -> int:
        """Where a reconnect would resume from."""
        return int(self.last_id) if self.last_id else 0

    async def reach(self, position: int, within: float) -> None:
        """Wait until the cursor has reached ``position`` (it goes on reading)."""
        await eventually(lambda: self.cursor >= position, within, f"position {position}")

    def _done(self) -> bool:
        return self.until is not None and self.cursor >= self.until

    async def run(self) -> None:
        """Read until ``until`` is reached (or, without ``reconnect``, the response ends)."""
        async with aiohttp.ClientSession(timeout=STREAM_TIMEOUT) as session:
            while not self._done():
                await self._connect(session)
                if not self.reconnect or self._done():
                    break
                await asyncio.sleep(0.1)

    async def _connect(self, session: aiohttp.ClientSession) -> None:
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        try:
            async with session.get(
                self.base + "/events/live", params=self.params, headers=headers
            ) as response:
                connection = Connection(response.status, time.monotonic())
                self.connections.append(connection)
                if response.status != 200:
                    connection.error = (await response.read()).decode()
                    connection.ended = time.monotonic()
                    return
                self.opened.set()
                parser = FrameParser()
                try:
                    async for chunk in response.content.iter_any():
                        for frame in parser.feed(chunk):
                            self._take(connection, frame)
                        if self._done():
                            return
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    connection.error = repr(exc)
                connection.ended = time.monotonic()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.connections.append(Connection(0, time.monotonic(), error=repr(exc)))

    def _take(self, connection: Connection, frame: Frame) -> None:
        now = time.time()
        connection.frames.append(frame)
        if frame.is_event and frame.event in (None, "message"):
            self.events.append(json.loads(frame.text))
            self.arrived.append(now)
            self.got_event.set()
        if frame.id is not None:
            self.last_id = frame.id


@dataclass
class Batch:
    """One append: its stream, its events' ids, its body, and the answer it got."""

    stream: str
    ids: list[str]
    body: bytes
    sent: float = 0.0
    acked: float | None = None
    position: int | None = None
    tries: int = 0


def make_batch(stream: str, size: int, pad: int = 0, **data: Any) -> Batch:
    """A batch of ``size`` events with fresh ids (``pad`` bytes of filler in each)."""
    ids = [str(uuid.uuid4()) for _ in range(size)]
    filler = "x" * pad
    events = [
        {"type": "Tick", "id": i, "data": {**data, "k": k, "pad": filler}}
        for k, i in enumerate(ids)
    ]
    return Batch(stream, ids, json.dumps({"events": events}).encode())


async def post(session: aiohttp.ClientSession, base: str, batch: Batch) -> int:
    """Send one batch once; the HTTP status (0: no answer). Records the ack on 201."""
    batch.tries += 1
    batch.sent = time.time()
    try:
        async with session.post(
            f"{base}/streams/{batch.stream}/events",
            data=batch.body,
            headers={"Content-Type": "application/json"},
        ) as response:
            answer = await response.read()
            if response.status == 201:
                batch.acked = time.time()
                batch.position = json.loads(answer)["position"]
            return response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0


async def write_all(
    base: str,
    batches: list[Batch],
    retry: bool = True,
    pause: float = 0.0,
    deadline: float = 45.0,
    on_ack: Callable[[Batch], None] | None = None,
) -> None:
    """Append ``batches`` in order; with ``retry``, resend one that got no 201 (same ids:
    the store keeps it once) until it does; without, stop at the first that got none."""
    end = time.monotonic() + deadline
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for batch in batches:
            while True:
                status = await post(session, base, batch)
                if status == 201:
                    if on_ack is not None:
                        on_ack(batch)
                    break
                if not retry:
                    return
                if time.monotonic() > end:
                    raise AssertionError(f"no 201 for a batch by the deadline (last {status})")
                await asyncio.sleep(0.05)
            if pause:
                await asyncio.sleep(pause)


async def read_store(base: str) -> list[dict[str, Any]]:
    """Every event the server's store holds, in position order (plain HTTP pages)."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            after = events[-1]["position"] if events else 0
            params = {"from_position": str(after), "limit": "1000"}
            async with session.get(f"{base}/events", params=params) as response:
                assert response.status == 200, await response.text()
                page = (await response.json())["events"]
            if not page:
                return events
            events += page


async def ready(base: str) -> dict[str, Any]:
    """The server's ``/readyz`` answer."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(base + "/readyz") as response,
    ):
        found: dict[str, Any] = await response.json()
        return found


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait until ``check()`` holds, polling; fail with ``what`` after ``within`` s."""
    end = time.monotonic() + within
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def rss_bytes(pid: int) -> int:
    """A process's resident set size (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Server:
    """A ``tidings serve`` on one store and port, which can be killed and started again."""

    def __init__(self, store: str, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.env = env or {}
        self.current: Served = start_server(store, env=self.env)
        self.url = self.current.url
        self.port = urlsplit(self.url).port or 0
        self.processes = [self.current]

    @property
    def pid(self) -> int:
        """The running process's id."""
        return self.current.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the process and wait for it to end; its exit code."""
        return self.current.stop(sig, timeout)

    def restart(self) -> None:
        """Start a new process on the same store and port (the last one has ended)."""
        self.current = start_server(self.store, env=self.env, port=self.port)
        self.processes.append(self.current)
        assert self.current.url == self.url, (self.current.url, self.url)

    def close(self) -> None:
        """Stop the process if it still runs (the end of a test)."""
        if self.current.process.poll() is None:
            with contextlib.suppress(Exception):
                self.stop(signal.SIGTERM, 20)
        if self.current.process.poll() is None:
            self.current.process.kill()
            self.current.process.wait()
        self.current.release()

    @property
    def output(self) -> str:
        """Everything every process printed, the running one included."""
        return "".join(p.output for p in self.processes)


def slow_socket(url: str, path: str = "/events/live") -> socket.socket:
    """A client that asks for a live stream, then never reads: a tiny receive buffer,
    so that the server, not the kernel, has to hold what it cannot send."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def drain_socket(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read what a socket holds until the peer closes it or ``timeout`` passes with
    nothing new; the HTTP body (chunked encoding undone) and whether it was closed."""
    sock.settimeout(timeout)
    data = b""
    closed = False
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            break
        if not chunk:
            closed = True
            break
        data += chunk
    body, ended = dechunk(data)
    return body, closed or ended


def trickle(sock: socket.socket, fast: threading.Event, step: int, pause: float) -> bytes:
    """Read ``step`` bytes every ``pause`` seconds (at full speed once ``fast`` is set)
    until the response's last chunk or the connection's end; the raw bytes."""
    sock.settimeout(20)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(step if not fast.is_set() else 1 << 16)
        if not chunk:
            break
        data += chunk
        if not fast.is_set():
            time.sleep(pause)
    return data


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked HTTP/1.1 response, and whether its last chunk came."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    body = b""
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            return body, True  # the response's last chunk: the stream ended
        if len(rest) < size + 2:
            break  # cut in the middle of a chunk
        body += rest[:size]
        rest = rest[size + 2 :]
    return body, False
