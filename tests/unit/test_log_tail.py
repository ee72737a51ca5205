"""The live tail: the newest events read once for every live reader of a process."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from tidings import Filter, RecordedEvent
from tidings.store.tail import LogTail


def event(position: int, stream: str = "order-1") -> RecordedEvent:
    return RecordedEvent(
        id=uuid.uuid4(),
        stream=stream,
        type="Happened",
        data={"n": position},
        metadata={},
        version=position - 1,
        position=position,
        time=datetime.now(UTC),
    )


class Log:
    """A log whose reads can be held, to commit events while one is in flight."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    def known(self) -> int:
        """The head the process knows committed (here: every event of the log)."""
        return self.events[-1].position if self.events else 0

    async def fetch(self, after: int, size: int) -> list[RecordedEvent]:
        self.reads += 1
        self.reading.set()
        page = [e for e in self.events if e.position > after][:size]  # what is committed now
        if self.hold is not None:
            await self.hold.wait()
        return page


async def test_a_short_page_covers_every_event_committed_before_the_call() -> None:
    log = Log()
    tail = LogTail(log.fetch, log.known, page_size=10)
    log.hold = asyncio.Event()
    first = asyncio.ensure_future(tail.page(0, None, 10))  # its read sees an empty log
    await log.reading.wait()
    log.events.append(event(1))  # committed while that read is in flight
    second = asyncio.ensure_future(tail.page(0, None, 10))
    await asyncio.sleep(0)
    log.hold.set()
    assert await first == []  # nothing was committed when it began
    assert [e.position for e in await second] == [1]  # a read begun after it was needed


async def test_readers_at_the_tail_share_one_read_and_filter_in_memory() -> None:
    log = Log()
    log.events = [event(p, "even-1" if p % 2 == 0 else "odd-1") for p in range(1, 21)]
    tail = LogTail(log.fetch, log.known, page_size=100)
    pages = await asyncio.gather(
        *(tail.page(0, None, 100) for _ in range(10)),
        *(tail.page(0, Filter(categories=["even"]), 100) for _ in range(10)),
    )
    assert all([e.position for e in p] == list(range(1, 21)) for p in pages[:10])
    assert all([e.position for e in p] == list(range(2, 21, 2)) for p in pages[10:])
    assert log.reads == 1


async def test_a_reader_behind_a_trimmed_tail_is_sent_to_the_database() -> None:
    log = Log()
    log.events = [event(p) for p in range(1, 61)]
    tail = LogTail(log.fetch, log.known, page_size=10, capacity=20)
    seen: list[int] = []
    after = 0
    while True:
        page = await tail.page(after, None, 10)
        assert page is not None
        if not page:
            break
        seen += [e.position for e in page]
        after = page[-1].position
    assert seen == list(range(1, 61))
    assert await tail.page(5, None, 10) is None  # trimmed away: read the database
    assert [e.position for e in await tail.page(45, None, 10) or []] == list(range(46, 56))


async def test_a_reader_far_ahead_restarts_the_tail_at_its_position() -> None:
    log = Log()
    log.events = [event(p) for p in range(1, 501)]
    tail = LogTail(log.fetch, log.known, page_size=10, capacity=20)
    assert [e.position for e in await tail.page(0, None, 5) or []] == [1, 2, 3, 4, 5]
    assert [e.position for e in await tail.page(490, None, 10) or []] == list(range(491, 501))
    assert await tail.page(3, None, 10) is None
