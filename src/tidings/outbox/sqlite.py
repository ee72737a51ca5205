"""The outbox on SQLite: its table, saves through the application's connection, relay claims.

A relay claims rows in a short ``BEGIN IMMEDIATE`` transaction: it marks them with a
token of its own and a lease, which keeps every other relay (in any process) off those
keys, and commits. It publishes with no lock held, so the application's writers never
wait for a publish, then deletes what it published in a second short transaction. A
relay that dies leaves its keys held until the lease runs out; a relay never publishes
once its lease may have run out (see ``SQLiteClaim.alive``).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tidings.errors import StoreUnavailable
from tidings.outbox.relay import Claim, Retry, Row
from tidings.sql import load_queries

T = TypeVar("T")
Q = load_queries("sqlite", None, "outbox.sql")
_MAX_ERROR_TEXT = 2000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SQLiteOutbox:
    """The outbox table ``tidings_outbox`` in the file a ``sqlite:///path`` URL names."""

    dialect = "sqlite"

    def __init__(self, url: str, path: str, busy_timeout_ms: int) -> None:
        self.url = url
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        return conn

    async def create(self) -> None:
        """Create the table and indexes if missing, under the write lock."""
        await asyncio.to_thread(self._create)

    def _create(self) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for name in ("create_table", "create_key_index", "create_held_index"):
                    conn.execute(Q[name])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        finally:
            conn.close()

    async def save(self, driver: str, conn: Any, key: str, channel: str, payload: bytes) -> None:
        """Insert one message through the application's connection, on the calling thread.

        A ``sqlite3`` connection belongs to the thread that made it, so this does not
        hop to another thread.
        """
        self.save_sync(driver, conn, key, channel, payload)

    def save_sync(self, driver: str, conn: Any, key: str, channel: str, payload: bytes) -> None:
        """Insert one message through a ``sqlite3`` connection."""
        conn.execute(Q["save"], (key, channel, payload, _now_ms()))

    async def count(self) -> int:
        """How many messages wait in the table."""

        def count() -> int:
            conn = self._connect()
            try:
                return int(conn.execute(Q["count"]).fetchone()[0])
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.url, str(exc)) from exc
            finally:
                conn.close()

        return await asyncio.to_thread(count)

    async def source(self) -> SQLiteSource:
        """A connection of its own for one relay, used from one thread of its own."""
        source = SQLiteSource(self)
        await source._call(source._open)
        return source


class SQLiteSource:
    """One relay's connection and thread: every call on it runs there, one after another."""

    def __init__(self, outbox: SQLiteOutbox) -> None:
        self._outbox = outbox
        self._conn: sqlite3.Connection | None = None
        # One thread: a call left running by a cancelled await finishes before the next.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-outbox-sqlite")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            raise StoreUnavailable(self._outbox.url, str(exc)) from exc

    def _open(self) -> None:
        self._conn = self._outbox._connect()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._outbox._connect()
        return self._conn

    async def claim(self, limit: int, lease: float) -> Claim | None:
        """Hold the keys of up to ``limit`` due rows, oldest first, for ``lease`` seconds."""
        deadline = time.monotonic() + lease / 2
        token = uuid.uuid4().hex
        rows = await self._call(self._claim, limit, lease, token)
        return SQLiteClaim(self, rows, token, deadline) if rows else None

    def _claim(self, limit: int, lease: float, token: str) -> list[Row]:
        conn = self._db()
        # Look without the lock first: an idle relay never blocks the application's writers.
        if conn.execute(Q["due_rows"], (_now_ms(), 1)).fetchone() is None:
            return []
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = _now_ms()
            rows = [Row(*r) for r in conn.execute(Q["due_rows"], (now, limit))]
            held = now + int(lease * 1000)
            conn.executemany(Q["hold"], [(held, token, r.id) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rows

    def _settle(
        self, token: str, rows: list[Row], published: Sequence[int], retries: Sequence[Retry]
    ) -> None:
        conn = self._db()
        done = set(published) | {r.id for r in retries}
        now = _now_ms()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(Q["delete"], [(i, token) for i in published])
            conn.executemany(
                Q["retry_later"],
                [
                    (now + int(r.delay * 1000), r.error[:_MAX_ERROR_TEXT], r.id, token)
                    for r in retries
                ],
            )
            conn.executemany(Q["release"], [(r.id, token) for r in rows if r.id not in done])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _release(self, token: str, rows: list[Row]) -> None:
        conn = self._db()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(Q["release"], [(r.id, token) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connection and end the thread."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._call(close)
        finally:
            self._thread.shutdown(wait=False)


class SQLiteClaim:
    """Rows held by a claim token until settled, released or the lease runs out."""

    def __init__(self, source: SQLiteSource, rows: list[Row], token: str, deadline: float) -> None:
        self.rows = rows
        self._source = source
        self._token = token
        self._deadline = deadline

    def alive(self) -> bool:
        """Whether the lease still has time left (then no other relay takes these keys)."""
        return time.monotonic() < self._deadline

    async def settle(self, published: Sequence[int], retries: Sequence[Retry]) -> None:
        """Delete the published rows, put the failed keys off, release the rest."""
        await self._source._call(self._source._settle, self._token, self.rows, published, retries)

    async def abandon(self) -> None:
        """Release the rows: they are published again, by this relay or another."""
        await self._source._call(self._source._release, self._token, self.rows)
