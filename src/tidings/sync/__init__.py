"""The event store with blocking calls, for code with no event loop (Django, Flask, scripts).

Example::

    import tidings
    import tidings.sync

    with tidings.sync.connect("sqlite:///events.db") as store:
        store.append("order-42", [tidings.NewEvent("Placed", {"total": 10})])
        for event in store.read_stream("order-42"):
            print(event.version, event.type)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from tidings import wiring
from tidings.events import (
    ANY,
    AppendResult,
    Audit,
    AuditRecord,
    Expected,
    Filter,
    NewEvent,
    RecordedEvent,
    StreamInfo,
)
from tidings.store import EventStore, Transaction
from tidings.sync.iterators import SyncIterator
from tidings.sync.loop import THREAD_NAME, LoopThread, loop_thread

__all__ = ["THREAD_NAME", "SyncIterator", "SyncStore", "SyncTransaction", "connect"]

T = TypeVar("T")

_BATCH = 256  # items of a finite read carried per round trip to the loop


def connect(url: str, **options: Any) -> SyncStore:
    """Open the store at ``url`` (the URLs and options of ``tidings.connect``), blocking."""
    loop = loop_thread()
    return SyncStore(loop.run(_open, url, options), loop)


async def _open(url: str, options: dict[str, Any]) -> EventStore:
    store = await wiring.connect(url, **options)
    if not isinstance(store, EventStore):  # every backend is; this tells the type checker
        await store.close()
        raise TypeError(f"{type(store).__name__} is not an EventStore")
    return store


class SyncStore:
    """An ``EventStore`` with blocking calls; every call runs on the tidings-sync-loop thread.

    Open it with ``tidings.sync.connect``. Safe to use from many threads at once; it
    raises the same tidings errors as the async store. ``store`` is the async store
    underneath, for code that runs on that loop.
    """

    def __init__(self, store: EventStore, loop: LoopThread) -> None:
        self.store = store
        self._loop = loop
        self._closed = False

    @property
    def url(self) -> str:
        """The store's URL."""
        return self.store.url

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream, atomically, if it is at the expected version."""
        return self._loop.run(self.store.append, stream, events, expected_version)

    def transaction(self, audit: Audit | None = None) -> SyncTransaction:
        """A ``with`` block appending to several streams at once, with one audit record."""
        self._loop.check()
        return SyncTransaction(self.store.transaction(audit), self._loop)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> SyncIterator[RecordedEvent]:
        """Iterate over a stream's events from a version, forwards or backwards."""
        return SyncIterator(
            self._loop,
            lambda: self.store.read_stream(stream, from_version, limit, backwards),
            batch=_BATCH,
        )

    def read_all(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> SyncIterator[RecordedEvent]:
        """Iterate over the log's events past ``from_position``; with ``follow=True``,
        go on with new events as they commit (each ``next`` waits for one)."""
        return SyncIterator(
            self._loop,
            lambda: self.store.read_all_pages(from_position, filter, limit, follow),
            pages=True,
        )

    def read_all_pages(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
        page_size: int | None = None,
    ) -> SyncIterator[list[RecordedEvent]]:
        """``read_all``, a non-empty list of up to ``page_size`` events at a time."""
        return SyncIterator(
            self._loop,
            lambda: self.store.read_all_pages(from_position, filter, limit, follow, page_size),
        )

    def wait_for(self, position: int, timeout: float | None = None) -> int:
        """Block until the log reaches ``position``; return the head (TimeoutError at timeout)."""
        return self._loop.run(self.store.wait_for, position, timeout)

    def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        return self._loop.run(self.store.stream_version, stream)

    def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        return self._loop.run(self.store.head)

    def checkpoint(self, name: str) -> int | None:
        """Where a named checkpoint that transactions move stands (None: never moved)."""
        return self._loop.run(self.store.checkpoint, name)

    def list_streams(
        self, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> SyncIterator[StreamInfo]:
        """Iterate over streams in name order with their last version."""
        return SyncIterator(
            self._loop, lambda: self.store.list_streams(prefix, after, limit), batch=_BATCH
        )

    def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        return self._loop.run(self.store.audit, event)

    def call(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``await function(*args)`` on the store's loop thread and return its result:
        for async code of one's own that uses ``store`` (the async store) directly."""
        return self._loop.run(function, *args)

    def close(self) -> None:
        """Finish queued appends and release everything (also the end of ``with store:``).

        Closing again does nothing. At interpreter shutdown (a finalizer) nothing waits
        for the loop thread, which no longer runs; on the loop's own thread (a finalizer
        the garbage collector ran there) it starts the closing and returns at once.
        """
        if self._closed:
            return
        self._closed = True
        if self._loop.here():
            self._loop.submit(self.store.close)
            return
        if sys.is_finalizing() or not self._loop.thread.is_alive():
            return  # the interpreter is shutting down: the loop can no longer run
        self._loop.run(self.store.close)

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncTransaction:
    """Appends collected in ``with store.transaction() as tx:`` and committed at its end.

    Each ``append`` is checked at once; a clean exit commits them all or none (raising
    the conflict), an exception discards them. ``results`` holds the ``AppendResult``s.
    """

    def __init__(self, transaction: Transaction, loop: LoopThread) -> None:
        self.transaction = transaction
        self._loop = loop

    @property
    def results(self) -> list[AppendResult]:
        """The committed appends' results, in order (empty before the commit)."""
        return self.transaction.results

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> None:
        """Add an append to the transaction; it lands when the block exits cleanly."""
        self.transaction.append(stream, events, expected_version)

    def move_checkpoint(self, name: str, position: int) -> None:
        """Move the named checkpoint to ``position`` with the appends (compare-and-set:
        ``CheckpointConflict`` unless it is below)."""
        self.transaction.move_checkpoint(name, position)

    def commit(self) -> list[AppendResult]:
        """Commit the collected appends now (the ``with`` block does it for you)."""
        return self._loop.run(self.transaction.commit)

    def __enter__(self) -> SyncTransaction:
        self._loop.run(self.transaction.__aenter__)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self.transaction.__aexit__, exc_type, exc, tb)
