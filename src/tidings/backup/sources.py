"""A consistent view of a store to back up: one snapshot of each backend's database.

- SQLite: one read transaction on a connection of its own (in WAL mode, a snapshot
  that the store's writer does not disturb and that does not hold it up);
- PostgreSQL: one ``REPEATABLE READ, READ ONLY`` transaction on a pool connection, each
  table read through a cursor in key order.

The position a backup holds the log up to is the head as seen in that snapshot; every
row read is as of the same moment. A backend is recognised by what it offers (a SQLite
file's connections, a PostgreSQL schema's pool), not by its class.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from tidings.backup.tables import Row, Table
from tidings.errors import BackupError, StoreUnavailable
from tidings.sql import load_queries
from tidings.store import redact

T = TypeVar("T")
_SQLITE_Q = load_queries("sqlite", None, "backup.sql")


@runtime_checkable
class SQLiteFile(Protocol):
    """A store in a SQLite file that lends connections of its own (``SQLiteStore``)."""

    url: str
    path: str
    busy_timeout_ms: int

    def side_connection(self, synchronous: str | None = None) -> sqlite3.Connection:
        """A new connection to the store's file; the caller closes it."""
        ...


@runtime_checkable
class PostgresSchema(Protocol):
    """A store in a PostgreSQL schema with a pool for tidings' own statements."""

    url: str
    schema: str
    calls: Any


class Snapshot(Protocol):
    """What a backup reads: the source's identity, its head, and every table's rows."""

    backend: str
    identity: str
    position: int
    time_ms: int

    def pages(self, table: Table, size: int) -> AsyncIterator[list[Row]]:
        """The table's rows in the backup file's form, ``size`` at a time."""
        ...


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking call on a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


class SQLiteSnapshot:
    """A read transaction on a SQLite store's file."""

    backend = "sqlite"

    def __init__(self, store: SQLiteFile, conn: sqlite3.Connection, head: Row, identity: str):
        self._url = store.url
        self._conn = conn
        self.position, self.time_ms = head
        self.identity = identity

    async def pages(self, table: Table, size: int) -> AsyncIterator[list[Row]]:  # noqa: D102
        conn = self._conn
        try:
            cursor = await in_thread(lambda: conn.execute(_SQLITE_Q["select_" + table.name]))
            while rows := await in_thread(lambda: cursor.fetchmany(size)):
                yield rows
        except sqlite3.Error as exc:
            raise StoreUnavailable(self._url, f"backup read failed: {exc}") from exc


@contextlib.asynccontextmanager
async def sqlite_snapshot(store: SQLiteFile) -> AsyncIterator[SQLiteSnapshot]:
    """One read transaction on the store's file, for as long as the block runs."""
    conn = store.side_connection()

    def begin() -> tuple[Row, str]:
        conn.execute("BEGIN")  # deferred: the first read below fixes the snapshot
        head = conn.execute(_SQLITE_Q["head"]).fetchone()
        (identity,) = conn.execute(_SQLITE_Q["identity"]).fetchone()
        return tuple(head), str(identity)

    try:
        try:
            head, identity = await in_thread(begin)
        except sqlite3.Error as exc:
            raise StoreUnavailable(store.url, f"backup read failed: {exc}") from exc
        yield SQLiteSnapshot(store, conn, head, identity)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


class PostgresSnapshot:
    """A repeatable-read transaction on a PostgreSQL store's schema."""

    backend = "postgres"

    def __init__(self, conn: Any, q: dict[str, str], head: Any, identity: str) -> None:
        from tidings.backup.tables import TIME_MS

        self._conn = conn
        self._q = q
        self.position = int(head[0])
        self.time_ms = int(TIME_MS.to_file(head[1]))
        self.identity = identity

    async def pages(self, table: Table, size: int) -> AsyncIterator[list[Row]]:  # noqa: D102
        cursor = await self._conn.cursor(self._q["select_" + table.name])
        while rows := await cursor.fetch(size):
            yield table.to_file(rows)


@contextlib.asynccontextmanager
async def postgres_snapshot(store: PostgresSchema) -> AsyncIterator[PostgresSnapshot]:
    """One ``REPEATABLE READ, READ ONLY`` transaction, for as long as the block runs;
    driver errors come out as ``StoreUnavailable``."""
    import asyncpg

    q = load_queries("postgres", store.schema, "backup.sql")
    try:
        async with (
            store.calls.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            head = await conn.fetchrow(q["head"])  # the first statement fixes the snapshot
            identity = str(await conn.fetchval(q["identity"]))
            yield PostgresSnapshot(conn, q, head, identity)
    except (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresError) as exc:
        raise StoreUnavailable(redact(store.url), f"backup read failed: {exc}") from exc


def snapshot_of(store: object) -> contextlib.AbstractAsyncContextManager[Snapshot]:
    """The snapshot a backup of ``store`` reads (``BackupError`` for a store with none)."""
    if isinstance(store, SQLiteFile):
        return sqlite_snapshot(store)
    if isinstance(store, PostgresSchema):
        return postgres_snapshot(store)
    url = redact(str(getattr(store, "url", type(store).__name__)))
    raise BackupError(
        "unsupported",
        url,
        "only SQLite and PostgreSQL stores are backed up (a memory store holds its"
        " subscriptions' state in Python objects; a remote store is backed up on its server)",
    )
