"""Where snapshots live: a dict (memory), ``tidings_snapshots`` (SQLite), ``<schema>.snapshots``.

Each backend keeps one snapshot per (stream, projection name) and never replaces it
with one that folds less of the stream, unless the stored one was taken by another
projection version (see docs/adr/0007-snapshots.md). The table is created on first
use, beside the store's tables, outside its migrations.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

from tidings.aggregates.streams import StreamStore
from tidings.errors import ConfigurationError
from tidings.sql import load_queries

if TYPE_CHECKING:
    from tidings.store.sqlite import SQLiteStore

_ATTRIBUTE = "_tidings_snapshots"  # the store's backend, kept on the store: same lifetime


class Snapshot(NamedTuple):
    """A stored snapshot: the last stream version folded into it and its state as JSON."""

    version: int
    state: str


class SnapshotStore(Protocol):
    """The snapshots of one event store."""

    async def load(self, stream: str, name: str, projection_version: int) -> Snapshot | None:
        """The snapshot of ``stream`` by projection ``name`` at ``projection_version``."""
        ...

    async def save(
        self, stream: str, name: str, projection_version: int, version: int, state: str
    ) -> None:
        """Keep a snapshot unless the stored one, of the same projection version, is newer."""
        ...


def snapshots_of(store: StreamStore) -> SnapshotStore:
    """The snapshot store that belongs to ``store`` (made on first use, kept on the store)."""
    found: SnapshotStore | None = getattr(store, _ATTRIBUTE, None)
    if found is None:
        found = _make(store)
        with contextlib.suppress(AttributeError):  # a store type with slots keeps none
            setattr(store, _ATTRIBUTE, found)
    return found


def _make(store: StreamStore) -> SnapshotStore:
    from tidings.store.memory import MemoryStore
    from tidings.store.sqlite import SQLiteStore

    if isinstance(store, MemoryStore):
        return MemorySnapshots()
    if isinstance(store, SQLiteStore):
        return SQLiteSnapshots(store)
    try:
        from tidings.aggregates.postgres import PostgresSnapshots
        from tidings.store.postgres import PostgresStore
    except ImportError:  # asyncpg missing: this cannot be a PostgreSQL store
        pass
    else:
        if isinstance(store, PostgresStore):
            return PostgresSnapshots(store)
    return NoSnapshots(store)


def _newer(stored: tuple[int, int] | None, projection_version: int, version: int) -> bool:
    """Whether a snapshot at (projection_version, version) replaces the stored one."""
    return stored is None or stored[0] != projection_version or version > stored[1]


class MemorySnapshots:
    """Snapshots in a dict, living as long as the memory store they belong to."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[int, int, str]] = {}

    async def load(self, stream: str, name: str, projection_version: int) -> Snapshot | None:
        """The snapshot of ``stream`` by ``name`` at ``projection_version``, if kept."""
        row = self._rows.get((stream, name))
        if row is None or row[0] != projection_version:
            return None
        return Snapshot(row[1], row[2])

    async def save(
        self, stream: str, name: str, projection_version: int, version: int, state: str
    ) -> None:
        """Keep the snapshot unless the stored one is newer."""
        row = self._rows.get((stream, name))
        if _newer(None if row is None else (row[0], row[1]), projection_version, version):
            self._rows[(stream, name)] = (projection_version, version, state)


class NoSnapshots:
    """A store type tidings keeps no snapshots for: loads start from zero, saves fail."""

    def __init__(self, store: StreamStore) -> None:
        self._kind = type(store).__name__

    async def load(self, stream: str, name: str, projection_version: int) -> Snapshot | None:
        """Never a snapshot."""
        return None

    async def save(
        self, stream: str, name: str, projection_version: int, version: int, state: str
    ) -> None:
        """Refuse: this store type has nowhere to keep snapshots."""
        raise ConfigurationError(f"tidings keeps no snapshots for a {self._kind}")


_SQLITE = load_queries("sqlite", None, "snapshots.sql")


class SQLiteSnapshots:
    """Snapshots in the table ``tidings_snapshots`` of the store's file: loaded on the
    store's read connection, saved through its side writes (``tidings.store.sqlite_side``)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def load(self, stream: str, name: str, projection_version: int) -> Snapshot | None:
        """The snapshot of ``stream`` by ``name`` at ``projection_version``, if kept."""
        params = (stream, name, projection_version)
        row = await self._store.read(lambda conn: conn.execute(_SQLITE["load"], params).fetchone())
        return None if row is None else Snapshot(int(row[0]), row[1])

    async def save(
        self, stream: str, name: str, projection_version: int, version: int, state: str
    ) -> None:
        """Upsert the snapshot (a newer stored one of the same projection version stays)."""
        now_ms = time.time_ns() // 1_000_000
        params = (stream, name, projection_version, version, state, now_ms)
        await self._store.side.write(lambda conn: conn.execute(_SQLITE["save"], params))
