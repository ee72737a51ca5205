"""The newest events of the log, read and decoded once for every live reader of a process.

A hundred ``read_all(follow=True)`` readers of one store each read and decoded every new
event themselves: a page query on every wake-up and a JSON decode per event per reader,
~12-15 µs of CPU an event a reader, so that 100 readers of 2,000 events/s needed more
than two cores. A ``LogTail`` keeps the last events it read (all of them, unfiltered) and
serves a live reader whose position falls inside them from memory, filtering in Python;
one reader at the tail's end extends it with one database read that every reader waiting
there shares. A reader behind the tail reads the database as before, and joins the tail
when it catches up.

The guarantee is the database read's, on what the process knows: a page that ends short
holds every event at or below the head the process knew committed when the call began
(the store's head watch: its own commits and the heads other nodes announce), because
the tail is only taken as complete up to the head known when a read that came back short
began. A live reader waits beyond that head, so nothing is skipped. Readers share the
event objects: treat them as read-only.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable

from tidings.events import Filter, RecordedEvent

DEFAULT_TAIL_EVENTS = 2_000


class LogTail:
    """The last events of the log this process read: every event in ``(start, last]``."""

    def __init__(
        self,
        fetch: Callable[[int, int], Awaitable[list[RecordedEvent]]],
        known: Callable[[], int],
        page_size: int,
        capacity: int = DEFAULT_TAIL_EVENTS,
    ) -> None:
        self._fetch = fetch  # unfiltered, decoded: (after, size) -> events
        self._known = known  # the highest position this process knows to be committed
        self._page_size = page_size
        self._capacity = max(capacity, page_size)
        self._events: list[RecordedEvent] = []
        self._positions: list[int] = []
        self._start: int | None = None  # exclusive: the tail holds every event above it
        self._last = 0  # the highest position the tail has read up to
        self._covers = -1  # every event committed at or below this is in the tail
        self._extension: asyncio.Task[None] | None = None
        self._epoch = 0  # a restart makes a read begun before it worthless
        self.extensions = 0
        self.served = 0

    async def page(
        self, after: int, filter: Filter | None, size: int
    ) -> list[RecordedEvent] | None:
        """Up to ``size`` events above ``after`` that ``filter`` keeps, from memory; None
        when ``after`` lies before the tail (read the database instead).

        A page shorter than ``size`` holds every such event this process knew to be
        committed when the call began, as a database read begun then would."""
        need = self._known()
        if self._start is None or after > self._last + self._page_size:
            self._restart(after)  # the first live reader, or one far ahead of the tail
        found: list[RecordedEvent] = []
        cursor = after
        while True:
            if self._start is None or cursor < self._start:
                return None  # before the tail, or trimmed or restarted past us: the database
            index = bisect.bisect_right(self._positions, cursor)
            for event in self._events[index:]:
                cursor = event.position
                if filter is None or filter.matches(event):
                    found.append(event)
                    if len(found) == size:
                        self.served += size
                        return found
            cursor = max(cursor, self._last)
            if self._covers >= need:
                self.served += len(found)
                return found
            await self._extend_once()

    def clear(self) -> None:
        """Forget what the tail holds (its memory); the next reader starts it again."""
        self._restart(0)
        self._start = None

    def _restart(self, after: int) -> None:
        self._epoch += 1
        self._events.clear()
        self._positions.clear()
        self._start = self._last = after
        self._covers = -1

    async def _extend_once(self) -> None:
        """Join the read in flight, or start one: one read for every reader waiting."""
        task = self._extension
        if task is None or task.done():
            task = self._extension = asyncio.ensure_future(self._extend())
        await asyncio.shield(task)

    async def _extend(self) -> None:
        self.extensions += 1
        epoch = self._epoch
        known = self._known()  # committed before the read begins: it will see them all
        page = await self._fetch(self._last, self._page_size)
        if epoch != self._epoch:
            return  # restarted meanwhile: what was read is not above the new start
        if page:
            self._events.extend(page)
            self._positions.extend(e.position for e in page)
            self._last = page[-1].position
            excess = len(self._events) - self._capacity
            if excess > 0:
                self._start = self._positions[excess - 1]
                del self._events[:excess]
                del self._positions[:excess]
        if len(page) < self._page_size:  # the whole log as of the read
            self._covers = max(self._covers, known, self._last)
