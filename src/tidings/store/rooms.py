"""Rooms: the tables a feature keeps beside the log, reached through named queries.

A feature that keeps state in the store's database (event-stream definitions, their
attempts and parked events) is written once against ``Room`` and never asks which
backend it runs on. Each dialect has the feature's queries in its own ``.sql`` file,
under the same names and with numbered parameters (``$1`` in PostgreSQL, ``:1`` in
SQLite, where a statement may use any of them), so one call site serves both. A SQLite
query may be several statements where PostgreSQL has one with a data-modifying ``WITH``:
they run in order, and the last one's rows and count are the query's.
``store.room("eventstreams.sql")`` hands the room out:

- PostgreSQL: statements on the store's pool, ``steps`` in one transaction;
- SQLite: reads on the store's read connection, writes through its side writes
  (``tidings.store.sqlite_side``), so they never fight the writer thread for the lock;
- memory: a private in-memory SQLite database holding the SQLite schema, living as
  long as the store object (the SQLite queries serve it unchanged).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from tidings.errors import StoreUnavailable
from tidings.sql import load_queries, migrations, split_statements


class Step(NamedTuple):
    """One statement of ``Room.steps``: a query name, its arguments, and whether it must
    change a row (when it changes none, the whole transaction is rolled back)."""

    query: str
    args: tuple[Any, ...] = ()
    must_change: bool = False


class Room(Protocol):
    """Named queries of one ``.sql`` file on a store's database."""

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """The rows the named query returns."""
        ...

    async def run(self, query: str, *args: Any) -> int:
        """Run the named statement in a transaction of its own; the rows it changed."""
        ...

    async def returning(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run the named writing statement (``... RETURNING``) in a transaction of its own;
        the rows it returns."""
        ...

    async def steps(self, *steps: Step) -> list[int] | None:
        """Run the statements in one transaction, in order; the rows each changed, or
        None (nothing written) when a ``must_change`` step changed none."""
        ...


class _Rollback(Exception):
    """A ``must_change`` step changed nothing."""


def _sqlite_queries(file: str) -> dict[str, list[str]]:
    return {name: split_statements(sql) for name, sql in load_queries("sqlite", None, file).items()}


def _sqlite_run(conn: sqlite3.Connection, statements: list[str], args: tuple[Any, ...]) -> Any:
    """Run a query's statements in order, binding ``:1``, ``:2``... to ``args``; the
    cursor of the last one."""
    named = {str(n): value for n, value in enumerate(args, 1)}
    cursor: Any = None
    for statement in statements:
        cursor = conn.execute(statement, named)
    return cursor


def _sqlite_steps(
    conn: sqlite3.Connection, q: dict[str, list[str]], steps: Sequence[Step]
) -> list[int]:
    counts = []
    for step in steps:
        count = _sqlite_run(conn, q[step.query], step.args).rowcount
        if step.must_change and count < 1:
            raise _Rollback
        counts.append(max(count, 0))
    return counts


class SQLiteRoom:
    """A room in a SQLite store's file."""

    def __init__(self, store: Any, file: str) -> None:
        self._side = store.side
        self._read = store.read
        self._q = _sqlite_queries(file)

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        statements = self._q[query]
        found: list[tuple[Any, ...]] = await self._read(
            lambda c: _sqlite_run(c, statements, args).fetchall()
        )
        return found

    async def run(self, query: str, *args: Any) -> int:  # noqa: D102
        statements = self._q[query]
        count: int = await self._side.write(lambda c: _sqlite_run(c, statements, args).rowcount)
        return max(count, 0)

    async def returning(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        statements = self._q[query]
        found: list[tuple[Any, ...]] = await self._side.write(
            lambda c: _sqlite_run(c, statements, args).fetchall()
        )
        return found

    async def steps(self, *steps: Step) -> list[int] | None:  # noqa: D102
        try:
            counts: list[int] = await self._side.write(lambda c: _sqlite_steps(c, self._q, steps))
        except _Rollback:  # the side write rolled its transaction back on the way out
            return None
        return counts


class MemoryRoom:
    """A room for the memory store: an in-memory SQLite database of its own."""

    def __init__(self, conn: sqlite3.Connection, file: str) -> None:
        self._conn = conn
        self._q = _sqlite_queries(file)

    @staticmethod
    def database() -> sqlite3.Connection:
        """A fresh in-memory database with every SQLite migration applied."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        for migration in migrations("sqlite"):
            for statement in split_statements(migration.sql):
                conn.execute(statement)
        return conn

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        found: list[tuple[Any, ...]] = _sqlite_run(self._conn, self._q[query], args).fetchall()
        return found

    async def run(self, query: str, *args: Any) -> int:  # noqa: D102
        statements = self._q[query]
        count: int = await self._in_transaction(
            lambda: _sqlite_run(self._conn, statements, args).rowcount
        )
        return count

    async def returning(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        statements = self._q[query]
        found: list[tuple[Any, ...]] = await self._in_transaction(
            lambda: _sqlite_run(self._conn, statements, args).fetchall()
        )
        return found

    async def steps(self, *steps: Step) -> list[int] | None:  # noqa: D102
        try:
            counts: list[int] = await self._in_transaction(
                lambda: _sqlite_steps(self._conn, self._q, steps)
            )
        except _Rollback:
            return None
        return counts

    async def _in_transaction(self, fn: Any) -> Any:
        self._conn.execute("BEGIN")
        try:
            result = fn()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return max(result, 0) if isinstance(result, int) else result


def _status_count(status: str) -> int:
    """Rows changed, from an asyncpg status string (``UPDATE 3``, ``INSERT 0 1``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresRoom:
    """A room in a PostgreSQL store's schema, on the store's pool; driver errors come
    out as ``StoreUnavailable``."""

    def __init__(self, store: Any, file: str) -> None:
        import asyncpg

        from tidings.store import redact

        self._calls = store.calls
        self._url = redact(store.url)
        self._q = load_queries("postgres", store.schema, file)
        self._driver_errors = (
            OSError,
            TimeoutError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.PostgresError,
        )

    @contextlib.contextmanager
    def _wrapped(self) -> Iterator[None]:
        try:
            yield
        except self._driver_errors as exc:
            raise StoreUnavailable(self._url, f"{type(exc).__name__}: {exc}") from exc

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        with self._wrapped():
            found = await self._calls.fetch(self._q[query], *args)
        return [tuple(r) for r in found]

    async def run(self, query: str, *args: Any) -> int:  # noqa: D102
        with self._wrapped():
            return _status_count(await self._calls.execute(self._q[query], *args))

    async def returning(self, query: str, *args: Any) -> list[tuple[Any, ...]]:  # noqa: D102
        return await self.rows(query, *args)  # autocommit: one statement, one transaction

    async def steps(self, *steps: Step) -> list[int] | None:  # noqa: D102
        with self._wrapped():
            return await self._steps(steps)

    async def _steps(self, steps: Sequence[Step]) -> list[int] | None:
        counts = []
        try:
            async with self._calls.acquire() as conn, conn.transaction():
                for step in steps:
                    count = _status_count(await conn.execute(self._q[step.query], *step.args))
                    if step.must_change and count < 1:
                        raise _Rollback
                    counts.append(count)
        except _Rollback:
            return None
        return counts
