"""One ``subscribe`` of one connection: catch up from the store, then live, paced by acks.

The subscription reads the store from its cursor until it reaches the live log's
tail, joins the live log (which hands over what follows that tail: no gap, no repeat)
and sends from its queue. It sends at most ``max_in_flight`` batches the client has not
acked. While it waits, the live log keeps its queue, up to a bound; past it the queue
is dropped and the subscription reads the store again from its cursor once the client
acks: a client that pauses costs the server a bounded queue, never an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tidings.events import Filter, RecordedEvent
from tidings.server.live import Chunk, LiveClient, encode
from tidings.server.ws import protocol
from tidings.wire import encoder

if TYPE_CHECKING:
    from tidings.server.settings import WsSettings
    from tidings.server.ws.connection import Connection


class _Live(LiveClient):
    """The live log's side of one subscription, with the idle fast path."""

    def __init__(self, sub: WsSubscription, settings: WsSettings) -> None:
        super().__init__(sub.filter, None, settings.live_queue_events, settings.live_queue_bytes)
        self.sub = sub
        self.idle = False  # the subscription waits on ``wake`` with nothing queued

    def offer(self, chunk: Chunk) -> None:
        """Send ``chunk`` at once when idle and it fits; queue it otherwise."""
        if self.idle:
            if self.sub.send_now(chunk):
                return
            self.idle = False  # what follows queues behind it: order is kept
        super().offer(chunk)

    def moved(self, tail: int) -> None:
        """Move an idle subscription's cursor to ``tail``; wake a busy one."""
        if self.idle:
            self.sub.cursor = max(self.sub.cursor, tail)
        else:
            super().moved(tail)


class WsSubscription:
    """The state of one subscription: its cursor and its batches in flight."""

    def __init__(
        self, conn: Connection, sub: str, filter: Filter | None, cursor: int, auto: bool
    ) -> None:
        self.conn = conn
        self.sub = sub
        self.sub_json = encoder.encode(sub)
        self.filter = None if filter is None or filter.is_empty else filter
        self.cursor = cursor  # every event up to here was sent, or did not match
        self.auto = auto
        self.sent = 0  # batches sent (the last one's number)
        self.acked = 0
        self._room = asyncio.Event()
        self._room.set()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    def stop(self) -> None:
        """End the subscription now: nothing more is queued for it, even before its
        task has seen the cancellation."""
        self.stopped = True
        if self.task is not None:
            self.task.cancel()

    def ack(self, batch: int, id: protocol.Id = None) -> None:
        """The client handled every batch up to ``batch`` (acks are cumulative; on an
        ``auto`` subscription they change nothing)."""
        if self.auto:
            return
        if batch > self.sent:
            raise protocol.BadMessage(
                "invalid_ack",
                f"batch {batch} of {self.sub!r} was not sent (last: {self.sent})",
                id,
            )
        if batch > self.acked:
            self.acked = batch
            self._room.set()

    async def run(self) -> None:
        """Send the log after the cursor until cancelled."""
        live = self.conn.node.live
        settings = self.conn.settings
        while True:
            await self._catch_up(None)
            client = _Live(self, settings)
            try:
                tail = await live.join(client)
                await self._catch_up(tail)
                await self._follow(client)  # returns when the queue overflowed
            finally:
                live.leave(client)

    async def _catch_up(self, until: int | None) -> None:
        store = self.conn.node.store
        head = await store.head() if until is None else until
        size = self.conn.settings.batch_events
        async for page in self._pages(size):
            events = [e for e in page if e.position <= head]
            if events:
                await self._send([e.position for e in events], [encode(e) for e in events])
            if len(events) < len(page) or events[-1].position >= head:
                break
        self.cursor = max(self.cursor, head)  # nothing else up to head matched

    def _pages(self, size: int) -> AsyncIterator[list[RecordedEvent]]:
        return self.conn.node.store.read_all_pages(self.cursor, self.filter, page_size=size)

    async def _follow(self, client: _Live) -> None:
        live = self.conn.node.live
        size = self.conn.settings.batch_events
        while True:
            chunks = client.take()
            tail, overflowed = live.tail, client.overflowed
            positions: list[int] = []
            payloads: list[bytes] = []
            for chunk in chunks:
                for position, payload in zip(chunk.positions, chunk.payloads, strict=True):
                    if position > self.cursor:
                        positions.append(position)
                        payloads.append(payload)
            for start in range(0, len(positions), size):
                await self._send(positions[start : start + size], payloads[start : start + size])
            if overflowed:
                return  # what followed was not kept: read it from the store
            self.cursor = max(self.cursor, tail)
            if not client.queue:
                client.idle = True
                try:
                    await client.wake.wait()
                finally:
                    client.idle = False

    def send_now(self, chunk: Chunk) -> bool:
        """Queue ``chunk`` as one batch if that needs no wait (the idle fast path);
        False, with nothing done, when it must go the slow way."""
        positions, settings, outbox = chunk.positions, self.conn.settings, self.conn.outbox
        if self.stopped or positions[0] <= self.cursor or len(positions) > settings.batch_events:
            return False  # overlaps what was sent, or is more than one batch
        if not self.auto and self.sent - self.acked >= settings.max_in_flight:
            return False
        data = protocol.events(self.sub_json, self.sent + 1, chunk.payloads, positions[-1])
        if outbox.finished or not outbox.fits(data):
            return False
        self.conn.send_data(data)
        self.sent += 1
        self.cursor = positions[-1]
        return True

    async def _send(self, positions: list[int], payloads: list[bytes]) -> None:
        if not self.auto:
            while self.sent - self.acked >= self.conn.settings.max_in_flight:
                self._room.clear()
                await self._room.wait()
        batch = self.sent + 1
        await self.conn.outbox.put(protocol.events(self.sub_json, batch, payloads, positions[-1]))
        self.sent = batch
        self.cursor = positions[-1]
