"""Live fan-out (SSE and WebSocket): one reader of the log per server, a bounded queue per client.

``LiveLog`` follows the log once, from the head it found at start, and offers each
event, encoded once as JSON, to every client whose filter it passes. A client
joins after it has caught up from the store on its own; the join returns the last
position the reader has handled, so the client reads the store up to it and takes the
queue after it: no gap, no repeat. A client whose queue fills (in events or bytes) is
marked ``overflowed``: it is sent what it had queued, then told where to resume, and
closed. Nothing is ever dropped from the middle of a client's stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from tidings.events import Filter, RecordedEvent
from tidings.store import EventStore
from tidings.supervise import Supervisor
from tidings.wire import encoder

log = logging.getLogger("tidings.server.live")


encode = encoder.encode
"""An event's JSON (``wire.encoder``)."""


def frame(event: RecordedEvent) -> bytes:
    """The SSE frame of an event: its position as ``id``, the event as JSON ``data``."""
    return b"id: %d\ndata: %s\n\n" % (event.position, encode(event))


class Chunk:
    """Positions and their events' JSON, in order: one page's worth for one or more
    clients (every unfiltered client shares one chunk, and its encodings)."""

    __slots__ = ("_frames", "payloads", "positions", "size")

    def __init__(self, positions: list[int], payloads: list[bytes]) -> None:
        self.positions = positions
        self.payloads = payloads
        self.size = sum(map(len, payloads))
        self._frames: list[bytes] | None = None

    def frames(self) -> list[bytes]:
        """The SSE frames of the events, made once for all who share the chunk."""
        if self._frames is None:
            self._frames = [
                b"id: %d\ndata: %s\n\n" % (p, d)
                for p, d in zip(self.positions, self.payloads, strict=True)
            ]
        return self._frames


class LiveClient:
    """One live reader's filter and bounded queue of chunks (positions and frames)."""

    def __init__(
        self, filter: Filter | None, stream: str | None, max_events: int, max_bytes: int
    ) -> None:
        self.filter = None if filter is None or filter.is_empty else filter
        self.stream = stream
        self.everything = self.filter is None and stream is None
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.queue: deque[Chunk] = deque()
        self.queued_events = 0
        self.queued_bytes = 0
        self.overflowed = False
        self.wake = asyncio.Event()

    def matches(self, event: RecordedEvent) -> bool:
        """Whether the client wants ``event``."""
        if self.stream is not None and event.stream != self.stream:
            return False
        return self.filter is None or self.filter.matches(event)

    def offer(self, chunk: Chunk) -> None:
        """Queue a chunk, or mark the client overflowed when it would not fit its bounds."""
        if self.overflowed:
            return
        count, size = len(chunk.positions), chunk.size
        if (
            self.queued_events + count > self.max_events
            or self.queued_bytes + size > self.max_bytes
        ):
            self.overflowed = True
        else:
            self.queue.append(chunk)
            self.queued_events += count
            self.queued_bytes += size
        self.wake.set()

    def moved(self, tail: int) -> None:
        """The live log has handled everything up to ``tail`` (what matched was offered):
        wake the reader, which may say so to its client (an SSE id-only event). A
        reader that can note it without waking overrides this."""
        self.wake.set()

    def take(self) -> list[Chunk]:
        """Everything queued, in position order, emptying the queue."""
        items = list(self.queue)
        self.queue.clear()
        self.queued_events = 0
        self.queued_bytes = 0
        self.wake.clear()
        return items


class LiveLog:
    """The one follower of the log that feeds every live client of a server."""

    def __init__(self, store: EventStore, page_size: int = 1000) -> None:
        self.store = store
        self.page_size = page_size
        self.clients: set[LiveClient] = set()
        self.tail = -1  # the last position handled; -1 until the reader has started
        self._ready = asyncio.Event()
        self._supervisor = Supervisor()
        self._started = False
        self._closed = False

    @property
    def count(self) -> int:
        """Live clients joined right now."""
        return len(self.clients)

    async def join(self, client: LiveClient) -> int:
        """Add ``client``; return the last position already handled (it gets what follows)."""
        if not self._started:
            self._started = True
            self._supervisor.spawn("tidings-live-log", self._run)
        await self._ready.wait()
        self.clients.add(client)  # no await between reading tail and joining: nothing missed
        return self.tail

    def leave(self, client: LiveClient) -> None:
        """Remove ``client``."""
        self.clients.discard(client)

    async def _run(self) -> None:
        # Started by the first join; it stops after a page that found nobody joined (a
        # log nobody follows is not read), and the next join starts it from the head.
        # Restarted after a failure with clients joined, it goes on from its tail.
        if self.tail < 0 or not self.clients:
            self.tail = await self.store.head()
        self._ready.set()
        async for page in self.store.read_all_pages(
            self.tail, follow=True, page_size=self.page_size
        ):
            clients = list(self.clients)
            if clients:
                _offer_page(page, clients)
            self.tail = page[-1].position
            for client in clients:
                client.moved(self.tail)
            if not self.clients:
                self._ready.clear()  # no await from here to the end: no join is lost
                self._started = False
                return

    async def close(self) -> None:
        """Stop following the log; joined clients are woken to notice the stop."""
        self._closed = True
        await self._supervisor.stop()
        for client in self.clients:
            client.wake.set()


def _offer_page(page: list[RecordedEvent], clients: list[LiveClient]) -> None:
    """Offer one page to every client: each event encoded once, and clients without a
    filter sharing one chunk of the whole page."""
    encoded: list[bytes | None] = [None] * len(page)
    whole: Chunk | None = None
    for client in clients:
        if client.everything:
            if whole is None:
                done = [encode(e) if f is None else f for e, f in zip(page, encoded, strict=True)]
                encoded[:] = done
                whole = Chunk([e.position for e in page], done)
            client.offer(whole)
            continue
        positions: list[int] = []
        chosen: list[bytes] = []
        for i, event in enumerate(page):
            if client.matches(event):
                data = encoded[i]
                if data is None:
                    data = encoded[i] = encode(event)
                positions.append(event.position)
                chosen.append(data)
        if positions:
            client.offer(Chunk(positions, chosen))
