"""The outbox on PostgreSQL: its table, saves through the application's connection, relay claims.

A relay holds keys with transaction-level advisory locks (``pg_try_advisory_xact_lock``
on a hash of schema and key): a key another relay holds is skipped, never waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from tidings.errors import StoreUnavailable
from tidings.outbox.relay import Claim, Retry, Row
from tidings.sql import load_queries
from tidings.store import redact

_DRIVER_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresError,
)
_CANDIDATE_WINDOW = 4  # candidate rows per claimed row: room to skip keys other relays hold
_MAX_ERROR_TEXT = 2000


class PostgresOutbox:
    """The outbox table ``<schema>.outbox`` in the database a ``postgresql://`` URL names."""

    dialect = "postgres"

    def __init__(self, url: str, dsn: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._dsn = dsn
        self._q = load_queries("postgres", schema, "outbox.sql")

    async def _connect(self) -> Any:
        try:
            return await asyncpg.connect(
                self._dsn,
                timeout=10,
                server_settings={"application_name": "tidings-outbox"},
            )
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        error = StoreUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    async def create(self) -> None:
        """Create the schema, table and indexes if missing, one creator at a time."""
        conn = await self._connect()
        try:
            async with conn.transaction():
                await conn.execute(self._q["migrate_lock"], self.schema)
                for name in ("create_schema", "create_table", "create_key_index"):
                    await conn.execute(self._q[name])
                await conn.execute(self._q["create_retry_index"])
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        finally:
            await conn.close()

    async def save(self, driver: str, conn: Any, key: str, channel: str, payload: bytes) -> None:
        """Insert one message through the application's connection (its transaction)."""
        if driver == "asyncpg":
            await conn.execute(self._q["save"], key, channel, payload)
        elif driver == "psycopg_async":
            await conn.execute(self._q["save_psycopg"], (key, channel, payload))
        else:
            self.save_sync(driver, conn, key, channel, payload)

    def save_sync(self, driver: str, conn: Any, key: str, channel: str, payload: bytes) -> None:
        """Insert one message through a synchronous psycopg connection."""
        conn.execute(self._q["save_psycopg"], (key, channel, payload))

    async def count(self) -> int:
        """How many messages wait in the table."""
        conn = await self._connect()
        try:
            return int(await conn.fetchval(self._q["count"]))
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        finally:
            await conn.close()

    async def source(self) -> PostgresSource:
        """A connection of its own for one relay."""
        return PostgresSource(self, await self._connect())


class PostgresSource:
    """One relay's connection: claims keys under advisory locks, one transaction a round."""

    def __init__(self, outbox: PostgresOutbox, conn: Any) -> None:
        self._outbox = outbox
        self._q = outbox._q
        self._conn = conn

    async def claim(self, limit: int, lease: float) -> Claim | None:
        """Lock the keys of up to ``limit`` due rows that no other relay holds, and read them.

        No lease: the locks go with the transaction, or with the connection if it dies.
        """
        conn = self._conn
        try:
            candidates = await conn.fetch(self._q["candidates"], limit * _CANDIDATE_WINDOW)
            if not candidates:
                return None
            transaction = conn.transaction(isolation="read_committed")
            await transaction.start()
            try:
                keys = await self._lock(candidates, limit)
                # A statement of its own, after the locks: see the due_rows query.
                rows = await conn.fetch(self._q["due_rows"], keys, limit) if keys else []
            except BaseException:
                await transaction.rollback()
                raise
            if not rows:
                await transaction.rollback()
                return None
        except _DRIVER_ERRORS as exc:
            raise self._outbox._unavailable(exc) from exc
        return PostgresClaim(self, transaction, [Row(*r) for r in rows])

    async def _lock(self, candidates: Sequence[Any], limit: int) -> list[str]:
        """Try-lock candidate keys in order, a chunk at a time, until they cover ``limit`` rows."""
        locked: list[str] = []
        budget = limit
        i = 0
        while budget > 0 and i < len(candidates):
            chunk: list[Any] = []
            need = budget
            while i < len(candidates) and need > 0:
                chunk.append(candidates[i])
                need -= candidates[i]["n"]
                i += 1
            got = {
                r[0]
                for r in await self._conn.fetch(
                    self._q["try_lock"], [c["key"] for c in chunk], self._outbox.schema
                )
            }
            for candidate in chunk:
                if candidate["key"] in got:
                    locked.append(candidate["key"])
                    budget -= candidate["n"]
        return locked

    async def close(self) -> None:
        """Close the connection (which releases any lock it still holds)."""
        await self._conn.close()


class PostgresClaim:
    """Rows whose keys this relay holds until its transaction ends."""

    def __init__(self, source: PostgresSource, transaction: Any, rows: list[Row]) -> None:
        self.rows = rows
        self._source = source
        self._transaction = transaction

    def alive(self) -> bool:
        """Whether the connection, and so the locks, still stand."""
        return not self._source._conn.is_closed()

    async def settle(self, published: Sequence[int], retries: Sequence[Retry]) -> None:
        """Delete the published rows, put the failed keys off, and commit."""
        conn, q = self._source._conn, self._source._q
        try:
            if published:
                await conn.execute(q["delete"], list(published))
            if retries:
                await conn.execute(
                    q["retry_later"],
                    [r.id for r in retries],
                    [r.delay for r in retries],
                    [_error_text(r.error) for r in retries],
                )
            await self._transaction.commit()
        except _DRIVER_ERRORS as exc:
            raise self._source._outbox._unavailable(exc) from exc

    async def abandon(self) -> None:
        """Roll back; every row stays."""
        if not self._source._conn.is_closed():
            await self._transaction.rollback()


def _error_text(error: str) -> str:
    return error.replace("\x00", "")[:_MAX_ERROR_TEXT]
