"""Live fan-out for SSE: one reader of the log per server, a bounded queue per client.

``LiveLog`` follows the log once, from the head it found at start, and offers each
event, encoded once as an SSE frame, to every client whose filter it passes. A client
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


def frame(event: RecordedEvent) -> bytes:
    """The SSE frame of an event: its position as ``id``, the event as JSON ``data``."""
    return b"id: %d\ndata: %s\n\n" % (event.position, encoder.encode(event))


class LiveClient:
    """One live reader's filter and bounded queue of (position, frame)."""

    def __init__(
        self, filter: Filter | None, stream: str | None, max_events: int, max_bytes: int
    ) -> None:
        self.filter = None if filter is None or filter.is_empty else filter
        self.stream = stream
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.queue: deque[tuple[int, bytes]] = deque()
        self.queued_bytes = 0
        self.overflowed = False
        self.wake = asyncio.Event()

    def matches(self, event: RecordedEvent) -> bool:
        """Whether the client wants ``event``."""
        if self.stream is not None and event.stream != self.stream:
            return False
        return self.filter is None or self.filter.matches(event)

    def offer(self, position: int, data: bytes) -> None:
        """Queue a frame, or mark the client overflowed when its queue is full."""
        if self.overflowed:
            return
        if len(self.queue) >= self.max_events or self.queued_bytes + len(data) > self.max_bytes:
            self.overflowed = True
        else:
            self.queue.append((position, data))
            self.queued_bytes += len(data)
        self.wake.set()

    def take(self) -> list[tuple[int, bytes]]:
        """Everything queued, in position order, emptying the queue."""
        items = list(self.queue)
        self.queue.clear()
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
        if self.tail < 0:
            self.tail = await self.store.head()
        self._ready.set()
        async for page in self.store.read_all_pages(
            self.tail, follow=True, page_size=self.page_size
        ):
            clients = list(self.clients)
            for event in page:
                data = None
                for client in clients:
                    if client.matches(event):
                        if data is None:
                            data = frame(event)
                        client.offer(event.position, data)
            self.tail = page[-1].position
            for client in clients:
                client.wake.set()  # the tail moved: filtered clients may send an id-only event

    async def close(self) -> None:
        """Stop following the log; joined clients are woken to notice the stop."""
        self._closed = True
        await self._supervisor.stop()
        for client in self.clients:
            client.wake.set()
