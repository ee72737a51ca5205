"""Where a restore writes: one transaction on the target store's database.

A target takes the store's write lock first (SQLite ``BEGIN IMMEDIATE``; PostgreSQL the
head row, which every append locks), refuses a store holding anything unless forced
(then empties it in the same transaction), writes every row as it was, sets the head to
the backup's position and time, gives the store a new identity, and checks the result
(the counts, every checkpoint at or below the head, every parked event in the log)
before committing. Until then nothing is visible: a restore that fails or is killed
leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from tidings.backup.file import Header
from tidings.backup.sources import PostgresSchema, SQLiteFile, in_thread
from tidings.backup.tables import TIME_MS, Digest, Row, Table
from tidings.errors import BackupError, StoreUnavailable
from tidings.sql import load_queries, split_statements
from tidings.store import redact

_SQLITE_Q = load_queries("sqlite", None, "backup.sql")


class Target(Protocol):
    """One restore transaction on a store."""

    async def write(self, table: Table, rows: list[Row]) -> None:
        """Insert rows, in the backup file's form."""
        ...

    async def finish(self, header: Header, digests: dict[str, Digest]) -> str:
        """Set the head, make a new identity, check, commit; the new identity."""
        ...


def _not_empty(url: str) -> BackupError:
    return BackupError(
        "not_empty",
        redact(url),
        "the target store is not empty: restore into an empty store, or pass force"
        " (--force) to replace what it holds",
    )


def _check(url: str, found: dict[str, int], digests: dict[str, Digest], beyond: int) -> None:
    for name, digest in digests.items():
        if found.get(name) != digest.rows:
            raise BackupError(
                "corrupt",
                redact(url),
                f"restored table {name} holds {found.get(name)} rows, not {digest.rows}",
            )
    if beyond:
        raise BackupError(
            "corrupt",
            redact(url),
            f"{beyond} checkpoints past the head or parked events missing from the log",
        )


class SQLiteTarget:
    """A ``BEGIN IMMEDIATE`` transaction on a connection of the target's own."""

    def __init__(self, store: SQLiteFile, conn: sqlite3.Connection) -> None:
        self._url = store.url
        self._conn = conn

    async def write(self, table: Table, rows: list[Row]) -> None:  # noqa: D102
        statement = _SQLITE_Q["insert_" + table.name]
        await in_thread(lambda: self._conn.executemany(statement, rows))

    async def finish(self, header: Header, digests: dict[str, Digest]) -> str:  # noqa: D102
        conn = self._conn
        identity = str(uuid.uuid4())

        def finish() -> None:
            conn.execute(_SQLITE_Q["set_head"], (header.position, header.time_ms))
            conn.execute(_SQLITE_Q["new_identity"], (identity, time.time_ns() // 1_000_000))
            found = dict(conn.execute(_SQLITE_Q["counts"]).fetchall())
            (beyond,) = conn.execute(_SQLITE_Q["beyond_head"], (header.position,)).fetchone()
            _check(self._url, found, digests, beyond)
            conn.execute("COMMIT")

        await in_thread(finish)
        return identity


@contextlib.asynccontextmanager
async def sqlite_target(store: SQLiteFile, force: bool) -> AsyncIterator[SQLiteTarget]:
    """The restore transaction on a SQLite store; rolled back unless ``finish`` ran."""
    conn = store.side_connection()

    def begin() -> None:
        conn.execute("BEGIN IMMEDIATE")  # waits out other writers for the busy timeout
        (used,) = conn.execute(_SQLITE_Q["used"]).fetchone()
        if used and not force:
            raise _not_empty(store.url)
        if used:
            for statement in split_statements(_SQLITE_Q["empty_store"]):
                conn.execute(statement)

    try:
        await in_thread(begin)
        yield SQLiteTarget(store, conn)
    except sqlite3.Error as exc:
        raise StoreUnavailable(store.url, f"restore failed: {exc}") from exc
    finally:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        conn.close()


class PostgresTarget:
    """A transaction on a pool connection, holding the head row's lock."""

    def __init__(self, store: PostgresSchema, conn: Any, q: dict[str, str]) -> None:
        self._url = store.url
        self._schema = store.schema
        self._conn = conn
        self._q = q

    async def write(self, table: Table, rows: list[Row]) -> None:  # noqa: D102
        await self._conn.copy_records_to_table(
            table.name,
            records=table.from_file(rows),
            columns=table.pg_columns,
            schema_name=self._schema,
        )

    async def finish(self, header: Header, digests: dict[str, Digest]) -> str:  # noqa: D102
        conn, q = self._conn, self._q
        await conn.execute(q["set_head"], header.position, TIME_MS.from_file(header.time_ms))
        await conn.execute(q["move_sequences"])
        identity = str(await conn.fetchval(q["new_identity"]))
        found = {name: int(n) for name, n in await conn.fetch(q["counts"])}
        beyond = int(await conn.fetchval(q["beyond_head"], header.position))
        _check(self._url, found, digests, beyond)
        return identity


@contextlib.asynccontextmanager
async def postgres_target(store: PostgresSchema, force: bool) -> AsyncIterator[PostgresTarget]:
    """The restore transaction on a PostgreSQL store; committed when the block ends
    cleanly, rolled back otherwise (and by the server, if this process dies)."""
    import asyncpg

    q = load_queries("postgres", store.schema, "backup.sql")
    try:
        async with store.calls.acquire() as conn, conn.transaction():
            await conn.execute(q["lock_head"])  # appends wait; the check below holds
            if await conn.fetchval(q["used"]):
                if not force:
                    raise _not_empty(store.url)
                await conn.execute(q["empty_store"])
            yield PostgresTarget(store, conn, q)
    except (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresError) as exc:
        raise StoreUnavailable(redact(store.url), f"restore failed: {exc}") from exc


def target_of(
    store: object, force: bool
) -> contextlib.AbstractAsyncContextManager[SQLiteTarget | PostgresTarget]:
    """The restore transaction on ``store`` (``BackupError`` for a store with none)."""
    if isinstance(store, SQLiteFile):
        return sqlite_target(store, force)
    if isinstance(store, PostgresSchema):
        return postgres_target(store, force)
    url = redact(str(getattr(store, "url", type(store).__name__)))
    raise BackupError("unsupported", url, "a restore writes into a SQLite or PostgreSQL store only")
