"""Where subscriptions keep their checkpoints and parked events: the store's own database.

A checkpoint only moves by compare-and-set (``advance(name, expected, new)``), so it
never goes backwards and a reset made while a runner works is noticed, not lost. A
handler that takes a transaction writes in the same database transaction as the
checkpoint move: both commit, or neither does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from tidings.events import RecordedEvent
from tidings.sql import load_queries
from tidings.store.base import StoreFront

Work = Callable[[Any], Awaitable[object]]
"""A handler's part of a checkpoint transaction: called with the open connection."""


class SubscriptionInfo(msgspec.Struct, frozen=True):
    """A durable subscription as stored: where it is, how far behind, how it fares."""

    name: str
    checkpoint: int
    head: int
    lag: int
    state: str
    last_error: str | None
    updated: datetime
    parked: int
    members: int = 0
    """Consumer group members with a live row (0 for a single runner)."""
    partitions: int = 0
    """The group's partition count (0 for a single runner)."""


class ParkedEvent(msgspec.Struct, frozen=True):
    """An event a subscription gave up on, with the error, kept for replay."""

    position: int
    event_id: uuid.UUID
    stream: str
    error: str
    attempts: int
    parked_at: datetime


Row = tuple[str, int, str, str | None, datetime, int, int, int]


class Checkpoints(Protocol):
    """Checkpoint storage of one store."""

    async def ensure(self, name: str, start: int) -> int:
        """Create the checkpoint at ``start`` unless it exists; return where it stands."""
        ...

    async def load(self, name: str) -> int | None:
        """The checkpoint, or None for an unknown subscription."""
        ...

    async def advance(self, name: str, expected: int, new: int, work: Work | None) -> bool:
        """Run ``work`` and move the checkpoint from ``expected`` to ``new`` in one
        transaction; False (and nothing written) when it no longer stands at ``expected``."""
        ...

    async def set_state(self, name: str, state: str, error: str | None) -> None:
        """Record the runner's state and last error."""
        ...

    async def reset(self, name: str, position: int) -> bool:
        """Move the checkpoint to ``position``; False for an unknown subscription."""
        ...

    async def rows(self) -> list[Row]:
        """Every subscription: name, position, state, last error, updated, parked count,
        group members and partitions (0 and 0 for a single runner)."""
        ...

    async def park(self, name: str, event: RecordedEvent, error: str, attempts: int) -> None:
        """Keep ``event`` aside (once, whatever the retries) with its error."""
        ...

    async def parked(self, name: str) -> list[ParkedEvent]:
        """The parked events of ``name``, in log order."""
        ...

    async def unpark(self, name: str, position: int) -> None:
        """Forget a parked event (it was handled)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def open_checkpoints(store: StoreFront) -> Checkpoints:
    """Checkpoint storage on ``store``'s database; the caller closes it."""
    store = store.home
    kind = type(store).__name__
    if kind == "PostgresStore":
        return PostgresCheckpoints(store)
    if kind == "SQLiteStore":
        return SQLiteCheckpoints(store)
    shared: MemoryCheckpoints | None = getattr(store, "_tidings_checkpoints", None)
    if shared is None:  # memory: the checkpoints live as long as the store object
        shared = MemoryCheckpoints()
        store._tidings_checkpoints = shared  # type: ignore[attr-defined]
    return shared


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PostgresCheckpoints:
    """Checkpoints in the store's schema, on the store's pool."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._pool = store.calls
        self._q = load_queries("postgres", store.schema, "subscriptions.sql")

    async def ensure(self, name: str, start: int) -> int:  # noqa: D102
        async with self._pool.acquire() as conn:
            await conn.execute(self._q["ensure"], name, start)
            return int(await conn.fetchval(self._q["load"], name))

    async def load(self, name: str) -> int | None:  # noqa: D102
        value = await self._pool.fetchval(self._q["load"], name)
        return None if value is None else int(value)

    async def advance(self, name: str, expected: int, new: int, work: Work | None) -> bool:  # noqa: D102
        if work is None:
            status = await self._pool.execute(self._q["advance_lazy"], name, expected, new)
            return bool(status == "UPDATE 1")
        async with self._store.lend() as conn, conn.transaction():
            # Take the checkpoint row first: a second runner waits instead of both writing.
            status = await conn.execute(self._q["advance"], name, expected, new)
            if status != "UPDATE 1":
                return False
            await work(conn)
        return True

    async def set_state(self, name: str, state: str, error: str | None) -> None:  # noqa: D102
        await self._pool.execute(self._q["set_state"], name, state, error)

    async def reset(self, name: str, position: int) -> bool:  # noqa: D102
        return bool(await self._pool.execute(self._q["reset"], name, position) == "UPDATE 1")

    async def rows(self) -> list[Row]:  # noqa: D102
        return [tuple(r) for r in await self._pool.fetch(self._q["list"])]

    async def park(self, name: str, event: RecordedEvent, error: str, attempts: int) -> None:  # noqa: D102
        await self._pool.execute(
            self._q["park"], name, event.position, event.id, event.stream, error, attempts
        )

    async def parked(self, name: str) -> list[ParkedEvent]:  # noqa: D102
        return [ParkedEvent(*r) for r in await self._pool.fetch(self._q["parked"], name)]

    async def unpark(self, name: str, position: int) -> None:  # noqa: D102
        await self._pool.execute(self._q["unpark"], name, position)

    async def close(self) -> None:  # noqa: D102
        return None  # the pool is the store's


class SQLiteCheckpoints:
    """Checkpoints in the store's file, written through the store's side writes
    (``tidings.store.sqlite_side``: no fight with its writer over the write lock).

    Checkpoint commits use ``synchronous=NORMAL``: in WAL mode a power loss can only
    take back the last checkpoint moves, together with the handler writes made in the
    same transactions, and those events are delivered again (at least once).
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._q = load_queries("sqlite", None, "subscriptions.sql")

    async def _run(self, sql: str, *args: Any) -> int:
        count: int = await self._store.side.write(lambda conn: conn.execute(sql, args).rowcount)
        return count

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._store.read(lambda conn: conn.execute(sql, args).fetchall())
        return rows

    async def ensure(self, name: str, start: int) -> int:  # noqa: D102
        await self._run(self._q["ensure"], name, start, _ms())
        position = await self.load(name)
        return 0 if position is None else position

    async def load(self, name: str) -> int | None:  # noqa: D102
        rows = await self._fetch(self._q["load"], name)
        return int(rows[0][0]) if rows else None

    async def advance(self, name: str, expected: int, new: int, work: Work | None) -> bool:  # noqa: D102
        args = (new, _ms(), name, expected)
        if work is None:
            return await self._run(self._q["advance"], *args) == 1
        try:
            async with self._store.side.transaction() as conn:
                if conn.execute(self._q["advance"], args).rowcount != 1:
                    raise _Unmoved
                await work(conn)  # the handler writes inside this transaction
        except _Unmoved:
            return False
        return True

    async def set_state(self, name: str, state: str, error: str | None) -> None:  # noqa: D102
        await self._run(self._q["set_state"], state, error, _ms(), name)

    async def reset(self, name: str, position: int) -> bool:  # noqa: D102
        return await self._run(self._q["reset"], position, _ms(), name) == 1

    async def rows(self) -> list[Row]:  # noqa: D102
        found = await self._fetch(self._q["list"])
        return [(n, p, s, e, _from_ms(u), c, m, g) for n, p, s, e, u, c, m, g in found]

    async def park(self, name: str, event: RecordedEvent, error: str, attempts: int) -> None:  # noqa: D102
        await self._run(
            self._q["park"],
            name,
            event.position,
            event.id.bytes,
            event.stream,
            error,
            attempts,
            _ms(),
        )

    async def parked(self, name: str) -> list[ParkedEvent]:  # noqa: D102
        found = await self._fetch(self._q["parked"], name)
        return [
            ParkedEvent(p, uuid.UUID(bytes=i), s, e, a, _from_ms(t)) for p, i, s, e, a, t in found
        ]

    async def unpark(self, name: str, position: int) -> None:  # noqa: D102
        await self._run(self._q["unpark"], name, position)

    async def close(self) -> None:  # noqa: D102
        return None  # the connections are the store's


class _Unmoved(Exception):
    """The checkpoint no longer stands where the runner expected: roll back."""


class MemoryCheckpoints:
    """Checkpoints held beside an in-memory store (for tests and examples)."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Any]] = {}
        self._parked: dict[str, dict[int, ParkedEvent]] = {}

    async def ensure(self, name: str, start: int) -> int:  # noqa: D102
        row = self._subs.setdefault(name, [start, "idle", None, datetime.now(UTC)])
        return int(row[0])

    async def load(self, name: str) -> int | None:  # noqa: D102
        row = self._subs.get(name)
        return None if row is None else int(row[0])

    async def advance(self, name: str, expected: int, new: int, work: Work | None) -> bool:  # noqa: D102
        row = self._subs.get(name)
        if row is None or row[0] != expected:
            return False
        if work is not None:
            await work(None)
            if row[0] != expected:
                return False
        row[:] = [new, "running", None, datetime.now(UTC)]
        return True

    async def set_state(self, name: str, state: str, error: str | None) -> None:  # noqa: D102
        row = self._subs.get(name)
        if row is not None:
            row[1:] = [state, error, datetime.now(UTC)]

    async def reset(self, name: str, position: int) -> bool:  # noqa: D102
        row = self._subs.get(name)
        if row is None:
            return False
        row[0] = position
        return True

    async def rows(self) -> list[Row]:  # noqa: D102
        return [
            (n, r[0], r[1], r[2], r[3], len(self._parked.get(n, {})), 0, 0)
            for n, r in sorted(self._subs.items())
        ]

    async def park(self, name: str, event: RecordedEvent, error: str, attempts: int) -> None:  # noqa: D102
        self._parked.setdefault(name, {}).setdefault(
            event.position,
            ParkedEvent(event.position, event.id, event.stream, error, attempts, datetime.now(UTC)),
        )

    async def parked(self, name: str) -> list[ParkedEvent]:  # noqa: D102
        return [p for _, p in sorted(self._parked.get(name, {}).items())]

    async def unpark(self, name: str, position: int) -> None:  # noqa: D102
        self._parked.get(name, {}).pop(position, None)

    def forget(self, name: str) -> None:
        """Remove the checkpoint and parked events of ``name`` (a deleted pull consumer)."""
        self._subs.pop(name, None)
        self._parked.pop(name, None)

    async def close(self) -> None:  # noqa: D102
        return None
