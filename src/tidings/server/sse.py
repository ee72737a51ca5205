"""One SSE client's stream: catch up from the store, join the live log, stay bounded.

The response is its own ASGI app so that every write can be timed out (a client that
reads nothing is let go after ``sse_send_timeout``) and a disconnect or a server stop
ends it at once. ``id:`` is always a global position the client has been sent up to,
so a reconnect with ``Last-Event-ID`` resumes with no gap and no repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tidings.events import Filter, RecordedEvent
from tidings.server.live import LiveClient, frame
from tidings.server.node import Node

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"content-encoding", b"identity"),
]


class Gone(Exception):
    """The client went away, stopped reading, or the server is stopping."""


class LiveStream(Response):
    """An ASGI response that streams the log after ``cursor`` to one client."""

    media_type = "text/event-stream"

    def __init__(
        self, node: Node, cursor: int, filter: Filter | None, stream: str | None = None
    ) -> None:
        self.status_code = 200
        self.background = None
        self.node = node
        self.cursor = cursor
        self.filter = filter
        self.stream = stream
        self.settings = node.settings
        self._send: Send | None = None
        self._last_write = time.monotonic()  # any write: heartbeats are due from it
        self._last_moved = self._last_write  # the last write that moved the client's id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the stream until the client leaves, falls behind, or the server stops."""
        self._send = send
        node = self.node
        node.sse_clients += 1
        client = LiveClient(
            self.filter, self.stream, self.settings.sse_queue_events, self.settings.sse_queue_bytes
        )
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected, client))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await self._write(b"retry: %d\n\n" % self.settings.sse_retry_ms, moves=False)
            await self._catch_up(None)
            tail = await node.live.join(client)
            await self._catch_up(tail)
            await self._follow(client, disconnected)
        except Gone:
            pass
        finally:
            node.live.leave(client)
            node.sse_clients -= 1
            watcher.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, data: bytes, moves: bool = True) -> None:
        """Send ``data``; ``moves``: it carries an ``id:`` (the idle-position clock restarts)."""
        assert self._send is not None
        try:
            async with asyncio.timeout(self.settings.sse_send_timeout):  # no task per write
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except (TimeoutError, OSError) as exc:
            raise Gone from exc
        except Exception as exc:  # the server's own "client disconnected" errors
            raise Gone from exc
        self._last_write = time.monotonic()
        if moves:
            self._last_moved = self._last_write

    async def _catch_up(self, until: int | None) -> None:
        """Send what the store holds after the cursor (up to ``until`` if given)."""
        head = await self.node.store.head() if until is None else until
        async for page in self._pages():
            if until is not None and page[0].position > until:
                break
            events = [e for e in page if until is None or e.position <= until]
            await self._write(b"".join(frame(e) for e in events))
            self.cursor = events[-1].position
            if self.node.stopping.is_set():
                raise Gone
            if len(events) < len(page):
                break
        if head > self.cursor:  # everything up to head was read: move the client past it
            await self._write(b"id: %d\n\n" % head)
            self.cursor = head

    def _pages(self) -> AsyncIterator[list[RecordedEvent]]:
        size = self.settings.max_page
        if self.stream is not None:
            return _stream_pages(self.node, self.stream, self.cursor, size)
        return self.node.store.read_all_pages(self.cursor, self.filter, page_size=size)

    async def _follow(self, client: LiveClient, disconnected: asyncio.Event) -> None:
        node = self.node
        heartbeat = self.settings.sse_heartbeat
        idle_every = self.settings.idle_position_every
        while True:
            if node.stopping.is_set() or disconnected.is_set():
                if node.stopping.is_set():
                    await self._write(b"retry: %d\n\n" % self.settings.sse_retry_ms, moves=False)
                raise Gone
            fresh: list[bytes] = []
            last = self.cursor
            for chunk in client.take():
                positions, frames = chunk.positions, chunk.frames()
                if positions[0] > last:  # the usual case: the whole chunk is new
                    fresh += frames
                else:  # the chunk overlaps what catch-up already sent
                    fresh += [f for p, f in zip(positions, frames, strict=True) if p > last]
                last = max(last, positions[-1])
            if fresh:
                await self._write(b"".join(fresh))
            self.cursor = last
            if client.overflowed:
                await self._write(
                    b'event: overflow\ndata: {"error":"client_too_slow","resume_from":%d}\n\n'
                    % self.cursor
                )
                raise Gone
            now = time.monotonic()
            tail = node.live.tail
            if not client.queue and tail > self.cursor and now - self._last_moved >= idle_every:
                await self._write(b"id: %d\n\n" % tail)  # nothing matched: move the cursor on
                self.cursor = tail
            elif now - self._last_write >= heartbeat:
                await self._write(b": ping\n\n", moves=False)
            if client.queue:
                continue
            now = time.monotonic()
            due = heartbeat - (now - self._last_write)
            if node.live.tail > self.cursor:  # an id-only event is due too
                due = min(due, idle_every - (now - self._last_moved))
            wait = max(0.01, due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await client.wake.wait()


async def _stream_pages(
    node: Node, stream: str, after: int, size: int
) -> AsyncIterator[list[RecordedEvent]]:
    page: list[RecordedEvent] = []
    async for event in node.store.read_stream(stream):
        if event.position <= after:
            continue
        page.append(event)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


async def _watch_disconnect(
    receive: Receive, disconnected: asyncio.Event, client: LiveClient
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            client.wake.set()
            return
