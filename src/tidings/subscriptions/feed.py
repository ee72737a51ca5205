"""The log as a subscription sees it: read ahead a page at a time, handed out in batches.

A reader task follows the log (``read_all_pages(follow=True)``) into a short queue
of pages, so the database works on the next page while the handler works on this
batch; batches are cut from the pages without a step per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from tidings.events import Filter, RecordedEvent
from tidings.store.base import StoreFront

PAGES_AHEAD = 4
"""Pages read ahead of the handler: memory is bounded by this many pages."""


class LogFeed:
    """Follows the log from ``start`` (exclusive) and hands out batches of its events."""

    def __init__(
        self,
        store: StoreFront,
        start: int,
        filter: Filter | None,
        page_size: int,
        name: str,
        raw: bool = False,
    ) -> None:
        self._store = store
        self._raw = raw
        self._start = start
        self._filter = filter
        self._page_size = max(1, min(page_size, 100_000))
        self._name = name
        self._pages: asyncio.Queue[list[RecordedEvent]] = asyncio.Queue(maxsize=PAGES_AHEAD)
        self._buffer: list[RecordedEvent] = []
        self._at = 0
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        pages = self._store.read_all_pages(
            self._start, self._filter, follow=True, page_size=self._page_size, raw=self._raw
        )
        async for page in pages:
            await self._pages.put(page)

    @property
    def buffered(self) -> int:
        """Events read and not yet handed out."""
        return len(self._buffer) - self._at

    async def wait(self, others: Iterable[asyncio.Future[Any]], timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait for an event: True once one is buffered, False when one of ``others``
        completes or ``timeout`` passes first. A reader that died raises here."""
        if self.buffered or self._refill():
            return True
        assert self._reader is not None, "use the feed in an async with block"
        loop = asyncio.get_running_loop()
        page: asyncio.Future[Any] = loop.create_task(self._pages.get())
        try:
            done, _ = await asyncio.wait(
                {page, self._reader, *others}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not page.done():
                page.cancel()
        if page in done:
            self._buffer, self._at = page.result(), 0
            return True
        if self._reader in done:
            self._reader.result()  # raises what killed it
            raise RuntimeError("the log reader ended")  # follow=True never ends by itself
        return False

    async def batch(self, size: int, timeout: float) -> list[RecordedEvent]:  # noqa: ASYNC109
        """Up to ``size`` events: what is buffered, then what arrives within ``timeout``
        seconds while the batch is short. Call after ``wait`` returned True."""
        batch = self._take(size)
        if len(batch) >= size or timeout <= 0:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(batch) < size:
            if not self._refill():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        self._buffer, self._at = await self._pages.get(), 0
                except TimeoutError:
                    break
            batch.extend(self._take(size - len(batch)))
        return batch

    def ready(self, size: int) -> list[RecordedEvent] | None:
        """A full batch of ``size`` events if that many are read already (no await),
        else None (and nothing is taken)."""
        while self.buffered < size:
            try:
                page = self._pages.get_nowait()
            except asyncio.QueueEmpty:
                return None
            self._buffer, self._at = self._buffer[self._at :] + page, 0
        return self._take(size)

    def _take(self, size: int) -> list[RecordedEvent]:
        if not self.buffered:
            self._refill()
        end = min(self._at + size, len(self._buffer))
        batch = self._buffer[self._at : end]
        self._at = end
        return batch

    def _refill(self) -> bool:
        """Move the next read page into the buffer if one is waiting (no await)."""
        if self.buffered:
            return True
        try:
            self._buffer, self._at = self._pages.get_nowait(), 0
        except asyncio.QueueEmpty:
            return False
        return True
