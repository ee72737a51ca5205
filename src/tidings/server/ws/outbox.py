"""One connection's bounded queue of messages to send, for the one task that sends them."""

from __future__ import annotations

import asyncio
from collections import deque


class Outbox:
    """Messages waiting for the socket, bounded in count and bytes.

    Subscription batches and watch changes ``put`` and wait for room: they can always
    be read again from the store, or stacked, so waiting costs nothing but time.
    Replies and notices ``push``: they may also use a reserve past the bounds, so a
    client whose queue is full of data still gets its answers; when even the reserve is
    full the connection is too slow, and is closed (1013) after its resume positions,
    which ``force`` queues past everything.
    """

    RESERVE_MESSAGES = 64
    RESERVE_BYTES = 256 * 1024

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.items: deque[bytes] = deque()
        self.size = 0
        self.finished = False
        self.idle = False  # the sender waits for a message
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def fits(self, data: bytes) -> bool:
        """Whether ``data`` fits now (anything fits an empty queue)."""
        if not self.items:
            return True
        return len(self.items) < self.max_messages and self.size + len(data) <= self.max_bytes

    def push(self, data: bytes) -> bool:
        """Queue ``data`` if it fits, in the reserve too; False when it does not
        (nothing queued)."""
        if self.finished:
            return False
        if self.items and (
            len(self.items) >= self.max_messages + self.RESERVE_MESSAGES
            or self.size + len(data) > self.max_bytes + self.RESERVE_BYTES
        ):
            return False
        self._add(data)
        return True

    def force(self, data: bytes) -> None:
        """Queue ``data`` past the bounds (the last message before a close)."""
        self._add(data)

    async def put(self, data: bytes) -> None:
        """Queue ``data``, waiting for room first."""
        while not self.fits(data):
            self._room.clear()
            await self._room.wait()
        self._add(data)

    def finish(self) -> None:
        """Take nothing more: the sender stops once what is queued is sent."""
        self.finished = True
        self._ready.set()

    def pop(self) -> bytes | None:
        """The next message to send, or None when nothing is queued."""
        if not self.items:
            return None
        data = self.items.popleft()
        self.size -= len(data)
        if not self._room.is_set():
            self._room.set()
        return data

    async def wait(self) -> None:
        """Wait, queue empty, until something is queued, ``finish`` or ``wake``
        (``idle`` meanwhile: a message may then be sent without queueing it)."""
        self._ready.clear()
        self.idle = True
        try:
            await self._ready.wait()
        finally:
            self.idle = False

    def wake(self) -> None:
        """Wake the sender with nothing queued (it has something else to wait for)."""
        self._ready.set()

    def _add(self, data: bytes) -> None:
        self.items.append(data)
        self.size += len(data)
        self._ready.set()
