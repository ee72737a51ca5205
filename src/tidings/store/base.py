"""The EventStore protocol, and the front half every backend shares.

``StoreFront`` validates input, builds groups (an append, or a transaction's appends
with its audit) and hands them to the backend's ``_commit``; a backend supplies
``_commit`` and the reads. Nothing reaches a backend before it has been validated,
so bad input writes nothing.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from tidings.codec import DEFAULT_MAX_EVENT_BYTES, PreparedAppend, encode_json, prepare_append
from tidings.errors import (
    ConfigurationError,
    InvalidEvent,
    InvalidInput,
    StoreClosed,
    StoreUnavailable,
    TidingsError,
)
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
from tidings.store.features import feature
from tidings.store.planner import Group
from tidings.store.rooms import MemoryRoom, Room
from tidings.store.tail import LogTail
from tidings.store.wake import HeadFeed, HeadWatch
from tidings.types import Types

if TYPE_CHECKING:  # annotations only: these layers sit above the store
    from tidings.aggregates import Projected
    from tidings.backup import BackupInfo, ProgressCallback
    from tidings.subscriptions import Subscription, SubscriptionInfo
    from tidings.subscriptions.runner import Handler

DEFAULT_PAGE_SIZE = 1000
_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0
log = logging.getLogger("tidings.store")
T = TypeVar("T")
C = TypeVar("C")


@runtime_checkable
class EventStore(Protocol):
    """What every tidings store does, whatever its backend."""

    url: str

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream, atomically, if it is at the expected version."""
        ...

    def transaction(self, audit: Audit | None = None) -> Transaction:
        """Start an atomic append to several streams, with one audit record."""
        ...

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from a version, forwards or backwards."""
        ...

    def read_all(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield events of the global log with a position above ``from_position``;
        with ``follow=True``, keep yielding new events as they commit."""
        ...

    def read_all_pages(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
        page_size: int | None = None,
        raw: bool = False,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """``read_all``, a non-empty page of events at a time (``raw``: data and metadata
        as the stored JSON, ``msgspec.Raw``, undecoded)."""
        ...

    async def wait_for(self, position: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until the log reaches ``position``; return the head (TimeoutError at timeout)."""
        ...

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        ...

    async def checkpoint(self, name: str) -> int | None:
        """Where a named checkpoint that transactions move stands (None: never moved)."""
        ...

    @property
    def identity(self) -> str | None:
        """The store's identity, a UUID made with its schema and new after a restore."""
        ...

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        ...

    def list_streams(
        self, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[StreamInfo]:
        """Yield streams in name order with their last version."""
        ...

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        ...

    async def close(self) -> None:
        """Finish pending work and release every resource."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Transaction:
    """Appends collected in ``async with store.transaction():`` and committed at its end.

    Each ``append`` is validated at once (a bad one raises and the transaction is
    not committed); on a clean exit every append lands or none does, and
    ``results`` holds their ``AppendResult``s in order.
    """

    def __init__(self, store: StoreFront, audit: Audit | None) -> None:
        if audit is not None and not isinstance(audit, Audit):
            raise InvalidEvent(f"audit must be an Audit, not {type(audit).__name__}")
        if audit is not None and (
            not isinstance(audit.user, str) or not isinstance(audit.extra, dict)
        ):
            raise InvalidEvent("audit needs a str user and a dict of extra fields")
        if audit is not None:
            if "\x00" in audit.user:
                raise InvalidEvent("the audit user holds a NUL character (U+0000)")
            encode_json(audit.extra, "audit extra")  # refuse what cannot be stored, now
        self._store = store
        self._group = Group([], audit, time.time_ns() // 1_000_000)
        self._done = False
        self.results: list[AppendResult] = []

    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> None:
        """Add an append to the transaction; it lands when the block exits cleanly."""
        if self._done:
            raise TidingsError("the transaction is already finished")
        self._group.appends.append(self._store._prepare(stream, events, expected_version))

    def move_checkpoint(self, name: str, position: int) -> None:
        """Move the named checkpoint to ``position`` with the appends, atomically.

        Compare-and-set: the transaction is refused whole (``CheckpointConflict``,
        nothing written) unless the checkpoint is absent or below ``position``. This is
        the step of a process that reads another log and writes here exactly once: the
        checkpoint names the input and its position, and an input seen again is refused.
        Read it back with ``store.checkpoint(name)``.
        """
        if self._done:
            raise TidingsError("the transaction is already finished")
        if self._group.checkpoint is not None:
            raise InvalidInput("a transaction moves one checkpoint at most")
        self._group.checkpoint = (check_checkpoint_name(name), check_position(position, "position"))

    async def commit(self) -> list[AppendResult]:
        """Commit the collected appends now (the context manager calls this for you)."""
        if self._done:
            raise TidingsError("the transaction is already finished")
        self._done = True
        if not self._group.appends and self._group.checkpoint is None:
            raise InvalidEvent("the transaction has no appends")
        self.results = await self._store._commit(self._group)
        if self.results:
            self._store._watch.committed(max(r.position for r in self.results))
        for observe in self._store.append_observers:
            for r in self.results:
                observe(r.last_version - r.first_version + 1)
        return self.results

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            self._done = True


class StoreFront(abc.ABC):
    """Validation, appends and transactions, shared by every backend."""

    url: str

    def __init__(
        self,
        url: str,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.url = url
        self.max_event_bytes = max_event_bytes
        self.page_size = page_size
        self._closed = False
        self._types: Types | None = None
        self.identity: str | None = None
        """The store's identity: a UUID made with its schema, new after a restore (None
        on a remote store until the server first answers). Positions belong to it: a
        reader resuming from a position checks it names the same store."""
        self._watch = HeadWatch(self.head)
        self._tail: LogTail | None = None
        self._live_readers = 0
        self.append_observers: list[Callable[[int], None]] = []
        """Called with the number of events of every append that lands (metrics)."""

    @property
    def head_channel(self) -> str:
        """The notifier channel on which this store's head travels between processes."""
        digest = hashlib.sha1(self._identity().encode(), usedforsecurity=False).hexdigest()
        return "tidings.heads." + digest[:20]

    def _identity(self) -> str:
        """What names this store's data, the same in every process that opens it."""
        return f"{type(self).__name__}:{id(self):x}"

    @property
    def types(self) -> Types | None:
        """The type registry that names and versions appends and upcasts reads, if any."""
        return self._types

    @types.setter
    def types(self, types: Types | None) -> None:
        self._types = check_types(types)

    @property
    def notifier(self) -> Any | None:
        """The notifier that carries this store's heads between processes, if any."""
        return getattr(self._watch.feed, "notifier", None)

    @property
    def known_head(self) -> int:
        """The highest position this process knows is committed (no I/O)."""
        return self._watch.known

    @property
    def poll_interval(self) -> float:
        """Seconds between head polls while a follower hears nothing (default 1)."""
        return self._watch.poll_interval

    @poll_interval.setter
    def poll_interval(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidInput(f"poll_interval must be a number of seconds > 0, not {value!r}")
        self._watch.poll_interval = float(value)

    @property
    def home(self) -> StoreFront:
        """The store whose database keeps the tables of features run on this one
        (checkpoints, view rows, pull consumers): itself; a satellite's is its replica."""
        return self

    def committed_elsewhere(self, position: int) -> None:
        """Tell this store's readers that its log reaches ``position`` through a write it
        did not make itself (a satellite landing replicated events in its file)."""
        self._watch.committed(position)

    async def attach_feed(self, feed: HeadFeed) -> None:
        """Share head positions with other processes through ``feed`` (a notifier channel)."""
        self._check_open()
        await self._watch.attach(feed)

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        raise NotImplementedError  # every backend defines it

    def room(self, file: str) -> Room:
        """The named queries of ``file`` (``tidings/sql/<dialect>/<file>``) on this store's
        database, for features that keep tables beside the log (``tidings.store.rooms``).

        This default serves stores without a database: an in-memory SQLite database of
        the store's own, made on first use, with the SQLite queries.
        """
        self._check_open()
        conn = getattr(self, "_room_db", None)
        if conn is None:
            conn = self._room_db = MemoryRoom.database()
        return MemoryRoom(conn, file)

    # -- methods built in higher layers (see features.py) -----------------------------

    def subscribe(self, name: str, handler: Handler, **options: Any) -> Subscription:
        """A durable subscription ``name`` calling ``handler`` with batches of events
        (``tidings.subscriptions.Subscription`` lists the options)."""
        subscription: Subscription = feature("subscribe")(self, name, handler, **options)
        return subscription

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """Every durable subscription: checkpoint, head, lag, state, last error."""
        found: list[SubscriptionInfo] = await feature("subscriptions")(self)
        return found

    async def reset_subscription(self, name: str, position: int = 0) -> None:
        """Move a subscription's checkpoint to ``position``."""
        await feature("reset_subscription")(self, name, position)

    async def project(self, stream: str, projection: Any, **options: Any) -> Projected[Any]:
        """Fold ``stream`` into ``projection``'s state (with snapshots if asked)."""
        projected: Projected[Any] = await feature("project")(self, stream, projection, **options)
        return projected

    async def execute(
        self, stream: str, command: Any, aggregate: Any, **options: Any
    ) -> AppendResult | None:
        """Load ``stream``, decide with ``command``, append at the loaded version; on a
        conflict reload and retry."""
        result: AppendResult | None = await feature("execute")(
            self, stream, command, aggregate, **options
        )
        return result

    async def backup(self, target: Any, progress: ProgressCallback | None = None) -> BackupInfo:
        """Write a consistent copy of the store to the file ``target`` while it keeps
        serving: the log up to the head when it began (``tidings.backup``)."""
        info: BackupInfo = await feature("backup")(self, target, progress)
        return info

    async def wait_for(self, position: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until the log reaches ``position``; return the head.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first. Woken by local
        commits and other nodes' notifications; polls every ``poll_interval`` otherwise.
        """
        self._check_open()
        check_position(position, "position")
        if self._watch.known >= position:
            return self._watch.known
        if await self._watch.poll() >= position:
            return self._watch.known
        return await self._watch.wait_beyond(position - 1, timeout)

    def _prepare(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected
    ) -> PreparedAppend:
        return prepare_append(stream, events, expected_version, self.max_event_bytes, self._types)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the store at {self.url} is closed")

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream, atomically, if it is at the expected version.

        Raises ``WrongExpectedVersion`` (nothing written) on a mismatch, and returns
        the original result, writing nothing, when every event id was already stored
        with the same content.
        """
        group = Group([self._prepare(stream, events, expected_version)])
        result = (await self._commit(group))[0]
        self._watch.committed(result.position)
        for observe in self.append_observers:
            observe(result.last_version - result.first_version + 1)
        return result

    def transaction(self, audit: Audit | None = None) -> Transaction:
        """Start an atomic append to several streams, with one audit record."""
        self._check_open()
        return Transaction(self, audit)

    @abc.abstractmethod
    async def _commit(self, group: Group) -> list[AppendResult]:
        """Land a group whole or raise its error; group commit happens behind this."""

    async def checkpoint(self, name: str) -> int | None:
        """Where the named checkpoint that transactions move stands (None: never moved)."""
        self._check_open()
        return await self._checkpoint(check_checkpoint_name(name))

    @abc.abstractmethod
    async def _checkpoint(self, name: str) -> int | None:
        """The stored position of a named checkpoint."""

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from a version, forwards or backwards."""
        self._check_open()

        types = self._types

        async def fetch(version: int, size: int) -> list[RecordedEvent]:
            page = await self._stream_page(stream, version, size, backwards)
            return page if types is None else types.read(page)

        start = stream_start(from_version, backwards)
        async for page in pages(fetch, start, next_version(backwards), self.page_size, limit):
            for event in page:
                yield event

    async def read_all(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield events of the global log with a position above ``from_position``.

        With ``follow=True`` the read never ends by itself: once caught up it waits
        for new commits (woken by the notifier, or by polling every ``poll_interval``)
        and yields them in position order, none skipped, none twice, riding out a lost
        database connection.
        """
        async for page in self.read_all_pages(from_position, filter, limit, follow):
            for event in page:
                yield event

    async def read_all_pages(
        self,
        from_position: int = 0,
        filter: Filter | None = None,
        limit: int | None = None,
        follow: bool = False,
        page_size: int | None = None,
        raw: bool = False,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """``read_all``, a page (a non-empty list of up to ``page_size`` events) at a time.

        For readers that handle events in batches (subscriptions, HTTP pages): it spares
        a step of the iterator per event. The next page is read while one is consumed.
        With ``raw=True`` each event's ``data`` and ``metadata`` are the stored JSON as a
        ``msgspec.Raw``, not decoded: for readers that only pass events on (encoding a
        Raw writes it out as it is), such as event-stream delivery. With a type registry
        (``types``) events are renamed and upcast, and a filter's types take in their
        old names; ``raw`` reads skip the registry: they pass on what is stored.
        """
        self._check_open()
        types = None if raw else self._types
        if types is not None:
            filter = types.read_filter(filter)
        position = check_position(from_position, "from_position")
        remaining = check_limit(limit)
        size = self.page_size if page_size is None else check_page_size(page_size)
        db_filter = None if filter is None else filter.database_part
        pattern = filter if filter is not None and filter.stream_pattern else None
        # With a stream pattern, pages hold rows the pattern may drop: count what is yielded.
        page_limit = None if pattern is not None else remaining

        tail = self._live_tail() if follow and not raw else None

        async def fetch(after: int, size: int) -> list[RecordedEvent]:
            page = None
            if tail is not None and self._live_readers > 1:  # one reader gains nothing
                page = await tail.page(after, db_filter, size)
            if page is None:
                page = await self._log_page(after, db_filter, size, raw)
            return page if types is None else types.read(page)

        if tail is not None:
            self._live_readers += 1
        try:
            retry = _RETRY_FIRST
            while remaining is None or remaining > 0:
                floor = self._watch.known  # committed before this read began: it will see them all
                try:
                    async for page in pages(fetch, position, next_position, size, page_limit):
                        if not page:
                            continue
                        position = page[-1].position
                        if page_limit is not None:
                            page_limit -= len(page)
                        if pattern is not None:
                            page = [e for e in page if pattern.matches_stream(e.stream)]
                            if not page:
                                continue
                        if remaining is not None:
                            page = page[:remaining]
                            remaining -= len(page)
                        yield page
                        if remaining == 0:
                            return
                    if not follow:
                        return
                    position = max(position, floor)
                    await self._watch.wait_beyond(position)
                    retry = _RETRY_FIRST
                except StoreUnavailable as exc:
                    if not follow:
                        raise
                    self._check_open()
                    log.warning("live read_all lost the store (%s); retrying in %.2f s", exc, retry)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, _RETRY_MAX)
        finally:
            if tail is not None:
                self._live_readers -= 1
                if self._live_readers <= 1:
                    tail.clear()  # its memory back: it serves only readers who share it

    def _live_tail(self) -> LogTail:
        """The log's newest events, read once for every live reader of this store."""
        if self._tail is None:
            self._tail = LogTail(
                lambda after, size: self._log_page(after, None, size, False),
                lambda: self._watch.known,
                self.page_size,
            )
        return self._tail

    async def list_streams(
        self, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[StreamInfo]:
        """Yield streams in name order with their last version."""
        self._check_open()

        async def fetch(cursor: str, size: int) -> list[StreamInfo]:
            return await self._streams_page(prefix, cursor, size)

        async for page in pages(fetch, after or "", next_name, self.page_size, limit):
            for info in page:
                yield info

    @abc.abstractmethod
    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""

    @abc.abstractmethod
    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""

    @abc.abstractmethod
    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        """Up to ``size`` events of ``stream`` from ``version`` up (or down, backwards)."""

    @abc.abstractmethod
    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        """Up to ``size`` events past position ``after`` that pass ``filter`` (with
        ``raw``, data and metadata may stay undecoded, as ``msgspec.Raw``)."""

    @abc.abstractmethod
    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        """Up to ``size`` streams named after ``after``, starting with ``prefix``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending work and release every resource."""


def check_types(types: object) -> Types | None:
    """Validate a store's type registry (None for none) and run its checks."""
    if types is None:
        return None
    if not isinstance(types, Types):
        raise ConfigurationError(f"types must be a tidings.Types, not {type(types).__name__}")
    types.check()
    return types


def check_limit(limit: int | None) -> int | None:
    """Validate a read limit (None for no limit)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInput(f"limit must be an int >= 0 or None, not {limit!r}")
    return limit


def check_page_size(size: int) -> int:
    """Validate a page size (1 to 100,000)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100_000:
        raise InvalidInput(f"page_size must be an int from 1 to 100,000, not {size!r}")
    return size


def check_checkpoint_name(name: str) -> str:
    """A checkpoint name as given, if it is one: 1 to 255 characters, no NUL."""
    if not isinstance(name, str) or not 0 < len(name) <= 255 or "\x00" in name:
        raise InvalidInput(f"a checkpoint name is 1 to 255 characters without NUL, not {name!r}")
    return name


def check_position(value: int, what: str) -> int:
    """Validate a position or version argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be an int >= 0, not {value!r}")
    return value


async def pages(
    fetch: Callable[[C, int], Awaitable[list[T]]],
    start: C,
    next_cursor: Callable[[T], C | None],
    page_size: int,
    limit: int | None,
) -> AsyncIterator[list[T]]:
    """Yield keyset pages, ``fetch(cursor, size)`` at a time, up to ``limit`` items in all.

    The next page is fetched while the current one is consumed, so the database (or
    the reader thread) and the consumer work at once. A page shorter than asked, or a
    ``None`` next cursor, ends it.
    """
    remaining = check_limit(limit)
    size = page_size if remaining is None else min(remaining, page_size)
    pending = asyncio.ensure_future(fetch(start, size)) if size > 0 else None
    try:
        while pending is not None:
            items = await pending
            pending = None
            if remaining is not None:
                remaining -= len(items)
            following = page_size if remaining is None else min(remaining, page_size)
            if len(items) == size and following > 0:
                cursor = next_cursor(items[-1])
                if cursor is not None:
                    pending = asyncio.ensure_future(fetch(cursor, following))
            yield items
            size = following
    finally:
        if pending is not None:
            pending.cancel()


def stream_start(from_version: int | None, backwards: bool) -> int:
    """The first version a stream read asks for (the end when reading backwards)."""
    if from_version is None:
        return (1 << 62) if backwards else 0
    return check_position(from_version, "from_version")


def next_version(backwards: bool) -> Callable[[RecordedEvent], int | None]:
    """The cursor after an event of a stream read (None past version 0 backwards)."""
    if backwards:
        return lambda e: e.version - 1 if e.version > 0 else None
    return lambda e: e.version + 1


def next_position(event: RecordedEvent) -> int:
    """The cursor after an event of a log read: its position."""
    return event.position


def next_name(info: StreamInfo) -> str:
    """The cursor after a stream of a listing: its name."""
    return info.name
