"""Blocking iterators over the store's async iterators, stepped on the loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from tidings.sync.loop import LoopThread

T = TypeVar("T")
_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)


class SyncIterator(Generic[T]):
    """A plain iterator over an async iterator that lives on the loop thread.

    The async iterator is opened on the loop at the first ``next``; each later step
    runs there too, taking up to ``batch`` items per round trip (``pages=True``: the
    source yields lists, whose items are yielded one by one). ``close()`` (also the
    end of a ``with`` block, or garbage collection) closes the source on the loop; it
    may come from another thread, and then ends a ``next`` waiting there with
    ``StopIteration``. Otherwise an iterator belongs to one thread at a time.
    """

    def __init__(
        self,
        loop: LoopThread,
        open_source: Callable[[], AsyncIterator[Any]],
        *,
        batch: int = 1,
        pages: bool = False,
    ) -> None:
        loop.check()
        self._loop = loop
        self._open = open_source
        self._batch = batch
        self._pages = pages
        self._source: AsyncIterator[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._buffer: deque[T] = deque()
        self._error: BaseException | None = None
        self._ended = False
        self._closed = False
        self._closing = threading.Lock()

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._buffer:
            return self._buffer.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._ended or self._closed:
            raise StopIteration
        try:
            items = self._loop.run(self._fill)
        except _CANCELLED:
            if self._closed:
                raise StopIteration from None
            self._ended = True
            raise
        except BaseException:
            self._ended = True
            raise
        if not items:
            raise StopIteration
        self._buffer.extend(items[1:])
        return items[0]

    async def _fill(self) -> list[T]:
        """On the loop: the next items, [] at the end; an error after some items waits."""
        if self._closed:  # closed from another thread before this step began
            return []
        if self._source is None:
            self._source = self._open()
        self._task = asyncio.current_task()
        items: list[T] = []
        try:
            while len(items) < self._batch:
                item = await anext(self._source)
                if self._pages:
                    items.extend(item)
                else:
                    items.append(item)
        except StopAsyncIteration:
            self._ended = True
        except Exception as exc:
            self._ended = True
            if not items:
                raise
            self._error = exc  # raised by the next ``next``, after these items
        finally:
            self._task = None
        return items

    def close(self) -> None:
        """Stop the iteration and close the async iterator on the loop (idempotent)."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        self._buffer.clear()
        if not self._ended:
            self._loop.run(self._shut)

    async def _shut(self) -> None:
        task = self._task
        if task is not None:  # a ``next`` is waiting in another thread: end it
            task.cancel()
            await asyncio.wait([task])
        if self._source is not None:
            await _aclose(self._source)

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # No step can be running: a running step holds a reference to this iterator.
        source = getattr(self, "_source", None)
        if source is not None and not (self._closed or self._ended):
            self._loop.submit(_aclose, source)


async def _aclose(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
