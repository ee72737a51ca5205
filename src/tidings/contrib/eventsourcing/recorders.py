"""The ``eventsourcing`` library's recorders on a tidings store, through its public API.

Each recorder holds a ``tidings.sync.SyncStore`` and a category: the streams
``<category>-<originator id>`` are its aggregate sequences, the global log filtered to
the category is its application sequence, and named checkpoints
(``<category>-<upstream application>``) are its tracking records, moved in the same
transaction as the events they produced. See ``mapping`` for how the two models meet.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import msgspec
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    IntegrityError,
    Notification,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

import tidings
from tidings import NO_STREAM, Expected, ExpectedVersion, Filter, NewEvent, RecordedEvent
from tidings.contrib.eventsourcing import mapping
from tidings.contrib.eventsourcing.mapping import IdType
from tidings.sync import SyncIterator, SyncStore

_ATTEMPTS = 16
"""Inserts retried after learning a stream's true version (another writer moved it)."""
_KNOWN = 100_000
"""Streams whose last version a recorder remembers (then it forgets them all)."""
_WINDOW = 256
"""The first stretch of the log's end searched for a category's last position."""

_decode = msgspec.json.Decoder().decode


@asynccontextmanager
async def _closing(
    events: AsyncIterator[RecordedEvent],
) -> AsyncIterator[AsyncIterator[RecordedEvent]]:
    """An iteration of a read that is closed when left early (an async generator's)."""
    try:
        yield events
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _check_above(stream: str, version: int, tail: _Tail) -> None:
    if version <= tail.originator_version:
        raise IntegrityError(
            f"stream {stream!r}: version {version} is recorded already"
            f" (the last is {tail.originator_version})"
        )


@contextmanager
def _library_errors() -> Iterator[None]:
    """tidings errors as the library's (PEP 249 names), keeping the cause."""
    try:
        yield
    except (
        tidings.WrongExpectedVersion,
        tidings.CheckpointConflict,
        tidings.DuplicateEventId,
    ) as exc:
        raise IntegrityError(str(exc)) from exc
    except (tidings.StoreUnavailable, tidings.StoreClosed) as exc:
        raise OperationalError(str(exc)) from exc
    except tidings.InvalidEvent as exc:
        raise DataError(str(exc)) from exc
    except tidings.InvalidInput as exc:
        raise ProgrammingError(str(exc)) from exc
    except tidings.TidingsError as exc:
        raise DatabaseError(str(exc)) from exc


class _OnStore:
    """A recorder's share of a tidings store: the store, its category, its id type."""

    def __init__(
        self, store: SyncStore, category: str, originator_id_type: IdType = "uuid"
    ) -> None:
        if not category or "-" in category:
            raise ProgrammingError(f"a tidings category is a name without '-', not {category!r}")
        self.store = store
        self.category = category
        self.originator_id_type: IdType = originator_id_type

    def _checkpoint_name(self, application_name: str) -> str:
        return f"{self.category}-{application_name}"


class _Tail(NamedTuple):
    """A stream's last version and that event's originator version."""

    version: int
    originator_version: int


Plan = tuple[str, list[NewEvent], Expected]


class TidingsAggregateRecorder(_OnStore, AggregateRecorder):
    """Stored events as the streams ``<category>-<originator id>`` of a tidings store."""

    def __init__(
        self, store: SyncStore, category: str, originator_id_type: IdType = "uuid"
    ) -> None:
        super().__init__(store, category, originator_id_type)
        self._tails: dict[str, _Tail] = {}
        """Streams' last versions as this recorder last saw them (a hint: an insert on a
        stale one fails, reads the stream and tries again)."""
        self._firsts: dict[str, int] = {}
        """Streams' first originator versions (they never change)."""

    # -- writing ----------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record ``stored_events`` atomically (``IntegrityError`` if one is recorded)."""
        self._insert(stored_events, kwargs.get("tracking"))
        return None

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        """Record the events (and move the tracking checkpoint) in one transaction; the
        notification ids, in the order given. One trip to the store's loop thread."""
        runs = self._runs(stored_events)
        if not runs and tracking is None:
            return []
        with _library_errors():
            return self.store.call(self._insert_there, runs, tracking)

    async def _insert_there(
        self, runs: list[tuple[str, list[StoredEvent]]], tracking: Tracking | None
    ) -> list[int]:
        for _ in range(_ATTEMPTS):
            plans = self._plans(runs)
            try:
                results = await self._commit(plans, tracking)
            except tidings.WrongExpectedVersion as exc:
                await self._learn(exc.stream, runs)
                continue
            ids: list[int] = []
            for (stream, events), (_, _, expected), result in zip(
                runs, plans, results, strict=True
            ):
                if expected is NO_STREAM:
                    await self._first(stream, events[0].originator_version)
                self._remember(stream, result.last_version, events[-1].originator_version)
                ids.extend(range(result.position - len(events) + 1, result.position + 1))
            return ids
        raise OperationalError(f"gave up inserting after {_ATTEMPTS} attempts: streams kept moving")

    def _runs(self, stored_events: Sequence[StoredEvent]) -> list[tuple[str, list[StoredEvent]]]:
        """The events in runs of one originator each, in the order given; versions of
        one originator must rise (the library's unique key, kept as an order)."""
        runs: list[tuple[str, list[StoredEvent]]] = []
        last: dict[str, int] = {}
        for event in stored_events:
            stream = mapping.stream_of(self.category, event.originator_id)
            version = event.originator_version
            before = last.get(stream)
            if before is not None and version <= before:
                raise IntegrityError(
                    f"originator {event.originator_id}: version {version} given after {before}"
                )
            last[stream] = version
            if runs and runs[-1][0] == stream:
                runs[-1][1].append(event)
            else:
                runs.append((stream, [event]))
        return runs

    def _plans(self, runs: list[tuple[str, list[StoredEvent]]]) -> list[Plan]:
        """Each run as an append at the version its stream is thought to be at."""
        plans: list[Plan] = []
        reached: dict[str, int] = {}  # versions this transaction's earlier runs reach
        for stream, events in runs:
            expected: Expected
            if stream in reached:
                expected = reached[stream]
            elif (tail := self._tails.get(stream)) is not None:
                _check_above(stream, events[0].originator_version, tail)
                expected = tail.version
            else:
                expected = NO_STREAM  # a new aggregate, most likely; else learnt and retried
            reached[stream] = (-1 if isinstance(expected, ExpectedVersion) else expected) + len(
                events
            )
            plans.append((stream, [self._new(e) for e in events], expected))
        return plans

    def _new(self, event: StoredEvent) -> NewEvent:
        data, marks = mapping.to_data(event.state)
        return NewEvent(
            event.topic, data, {mapping.VERSION_KEY: event.originator_version, **marks}, uuid4()
        )

    async def _commit(
        self, plans: list[Plan], tracking: Tracking | None
    ) -> list[tidings.AppendResult]:
        tx = self.store.store.transaction()
        for stream, events, expected in plans:
            tx.append(stream, events, expected)
        if tracking is not None:
            tx.move_checkpoint(
                self._checkpoint_name(tracking.application_name), tracking.notification_id
            )
        return await tx.commit()

    async def _learn(self, stream: str, runs: list[tuple[str, list[StoredEvent]]]) -> None:
        """After a version conflict on ``stream``: read where it stands; an
        ``IntegrityError`` if what is inserted is recorded there already."""
        last = await self._read(stream, None, backwards=True, limit=1)
        if not last:
            self._tails.pop(stream, None)
            return
        tail = _Tail(last[0].version, mapping.version_of(last[0].metadata))
        self._tails[stream] = tail
        first = next(events[0].originator_version for s, events in runs if s == stream)
        _check_above(stream, first, tail)

    async def _read(
        self, stream: str, start: int | None, backwards: bool = False, limit: int | None = None
    ) -> list[RecordedEvent]:
        async with _closing(self.store.store.read_stream(stream, start, limit, backwards)) as read:
            return [e async for e in read]

    def _remember(self, stream: str, version: int, originator_version: int) -> None:
        if len(self._tails) >= _KNOWN:
            self._tails.clear()
        known = self._tails.get(stream)
        if known is None or known.version < version:
            self._tails[stream] = _Tail(version, originator_version)

    async def _first(self, stream: str, originator_version: int | None = None) -> int | None:
        """The originator version of the stream's first event (None: no stream)."""
        first = self._firsts.get(stream)
        if first is None and originator_version is None:
            found = await self._read(stream, None, limit=1)
            if not found:
                return None
            originator_version = mapping.version_of(found[0].metadata)
        if first is None and originator_version is not None:
            if len(self._firsts) >= _KNOWN:
                self._firsts.clear()
            self._firsts[stream] = first = originator_version
        return first

    # -- reading ----------------------------------------------------------------------

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """An originator's events with ``gt < version <= lte``, in version order (or
        reversed with ``desc``), at most ``limit`` of them."""
        stream = mapping.stream_of(self.category, originator_id)
        with _library_errors():
            events = self.store.call(self._select, stream, gt, lte, desc, limit)
        return [self._stored(originator_id, e) for e in events]

    async def _select(
        self, stream: str, gt: int | None, lte: int | None, desc: bool, limit: int | None
    ) -> list[RecordedEvent]:
        """On the store's loop thread: every read a selection needs, in one trip."""
        if limit is not None and limit <= 0:
            return []
        start = await self._start(stream, gt, lte, desc)
        if not desc and gt is not None and start and await self._gap_before(stream, start, gt):
            return await self._scan(stream, gt, lte, limit)
        found: list[RecordedEvent] = []
        read = self.store.store.read_stream(stream, start, None, desc)
        async with _closing(read) as events:
            async for event in events:
                version = mapping.version_of(event.metadata)
                if desc and lte is not None and version > lte:
                    continue
                if (desc and gt is not None and version <= gt) or (
                    not desc and lte is not None and version > lte
                ):
                    break
                found.append(event)
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def _start(self, stream: str, gt: int | None, lte: int | None, desc: bool) -> int | None:
        """Where to start reading: the stream version the asked originator version would
        have without gaps. Version ``k`` holds at least ``first + k``: so reading
        backwards from ``lte - first`` misses nothing, and forwards from ``gt + 1 -
        first`` misses nothing unless the event before holds more than ``gt``."""
        bound = lte if desc else gt
        if bound is None:
            return None
        first = await self._first(stream)
        if first is None:
            return None if desc else 0
        return max(0, bound - first if desc else bound + 1 - first)

    async def _gap_before(self, stream: str, start: int, gt: int) -> bool:
        """Whether an event before stream version ``start`` holds more than ``gt``
        (versions skipped before it). Known not to without a read while the stream is
        known to run without gaps that far."""
        tail, first = self._tails.get(stream), self._firsts.get(stream)
        if tail is not None and first is not None:
            gapless = tail.originator_version - first == tail.version
            if gapless and start - 1 <= tail.version:
                return False
        found = await self._read(stream, start - 1, backwards=True, limit=1)
        return bool(found) and mapping.version_of(found[0].metadata) > gt

    async def _scan(
        self, stream: str, gt: int | None, lte: int | None, limit: int | None
    ) -> list[RecordedEvent]:
        found = []
        async with _closing(self.store.store.read_stream(stream)) as events:
            async for event in events:
                version = mapping.version_of(event.metadata)
                if gt is not None and version <= gt:
                    continue
                if lte is not None and version > lte:
                    break
                found.append(event)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def _stored(self, originator_id: UUID | str, event: RecordedEvent) -> StoredEvent:
        return StoredEvent(
            originator_id=originator_id,
            originator_version=mapping.version_of(event.metadata),
            topic=event.type,
            state=mapping.state_of(event.data, event.metadata),
        )


class TidingsApplicationRecorder(TidingsAggregateRecorder, ApplicationRecorder):
    """The category's events in log order are the application sequence: a
    notification id is an event's global position."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record ``stored_events`` atomically; their notification ids, in order."""
        return self._insert(stored_events, kwargs.get("tracking"))

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Up to ``limit`` notifications from ``start`` (or after it) up to ``stop``."""
        after = 0 if start is None else (start - 1 if inclusive_of_start else start)
        after = max(after, 0)
        if limit <= 0 or (stop is not None and stop <= after):
            return []
        with _library_errors():
            pages = self.store.call(self._page, after, limit, stop, tuple(topics))
        return pages

    async def _page(
        self, after: int, limit: int, stop: int | None, topics: tuple[str, ...]
    ) -> list[Notification]:
        """On the store's loop: a raw read (the stored JSON is the state, undecoded)."""
        found: list[Notification] = []
        log = self.store.store.read_all_pages(after, self._filter(topics), limit=limit, raw=True)
        async for page in log:
            for event in page:
                if stop is not None and event.position > stop:
                    return found
                found.append(self._notification(event))
        return found

    def _filter(self, topics: Sequence[str]) -> Filter:
        return Filter(categories=[self.category], types=list(topics) or None)

    def _notification(self, event: RecordedEvent) -> Notification:
        metadata = event.metadata
        if isinstance(metadata, msgspec.Raw):
            metadata = _decode(metadata)
        data = bytes(event.data) if isinstance(event.data, msgspec.Raw) else event.data
        return Notification(
            id=event.position,
            originator_id=mapping.originator_of(
                event.stream, self.category, self.originator_id_type
            ),
            originator_version=mapping.version_of(metadata),
            topic=event.type,
            state=mapping.state_of(data, metadata),
        )

    def max_notification_id(self) -> int | None:
        """The category's last position (None before its first event)."""
        with _library_errors():
            return self.store.call(self._last_position)

    async def _last_position(self) -> int | None:
        """The category's last position: searched in stretches from the log's end,
        each 16 times the one before (a read of one category seeks its index)."""
        store = self.store.store
        top = await store.head()
        window = _WINDOW
        while top > 0:
            after = max(0, top - window)
            last = None
            async for page in store.read_all_pages(after, self._filter(()), raw=True):
                last = page[-1].position
            if last is not None:
                return last
            top, window = after, window * 16
        return None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        """Notifications after ``gt``, then new ones as they commit (a live read)."""
        return TidingsSubscription(self, gt, topics)


class TidingsSubscription(Subscription[ApplicationRecorder]):
    """A live read of the application sequence; ``stop()`` ends it from any thread."""

    def __init__(
        self, recorder: TidingsApplicationRecorder, gt: int | None, topics: Sequence[str]
    ) -> None:
        super().__init__(recorder, gt, topics)
        self._tidings = recorder
        self._events: SyncIterator[RecordedEvent] | None = None
        self._guard = threading.Lock()

    def stop(self) -> None:
        """End the subscription; a ``next`` waiting for an event returns at once."""
        super().stop()
        with self._guard:
            events = self._events
        if events is not None:
            events.close()

    def __next__(self) -> Notification:
        if self._has_been_stopped:
            raise StopIteration
        with self._guard:
            if self._events is None:
                after = self._last_notification_id or 0
                self._events = self._tidings.store.read_all(
                    after, self._tidings._filter(self._topics), follow=True
                )
            events = self._events
        with _library_errors():
            event = next(events)
        if self._has_been_stopped:
            raise StopIteration
        self._last_notification_id = event.position
        return self._tidings._notification(event)


class TidingsTrackingRecorder(_OnStore, TrackingRecorder):
    """Tracking records as named checkpoints ``<category>-<upstream application>``:
    one position per upstream application, moved only upwards."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Move the upstream application's checkpoint (``IntegrityError`` unless it
        is below ``tracking.notification_id``)."""
        with _library_errors():
            self.store.call(self._track, tracking)

    async def _track(self, tracking: Tracking) -> None:
        tx = self.store.store.transaction()
        tx.move_checkpoint(
            self._checkpoint_name(tracking.application_name), tracking.notification_id
        )
        await tx.commit()

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id processed from ``application_name`` (None: none)."""
        with _library_errors():
            return self.store.checkpoint(self._checkpoint_name(application_name))


class TidingsProcessRecorder(TidingsTrackingRecorder, TidingsApplicationRecorder, ProcessRecorder):
    """An application recorder whose inserts may move a tracking checkpoint with them:
    a notification processed is recorded with what it produced, exactly once."""
