"""The PostgreSQL store: asyncpg pool, group commit through one function call per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

import asyncpg

from tidings.codec import decode_json, encode_json
from tidings.errors import (
    ConfigurationError,
    DuplicateEventId,
    StoreUnavailable,
    TidingsError,
    WrongExpectedVersion,
)
from tidings.events import (
    AppendResult,
    AuditRecord,
    Filter,
    RecordedEvent,
    StreamInfo,
    expected_from_code,
)
from tidings.sql import load_queries, migrations
from tidings.store import redact
from tidings.store.base import DEFAULT_PAGE_SIZE, StoreFront, check_limit, check_position
from tidings.store.planner import Group

log = logging.getLogger("tidings.store.postgres")

_OPTIONS = {
    "schema",
    "min_size",
    "max_size",
    "statement_cache_size",
    "page_size",
    "max_batch_events",
    "max_event_bytes",
    "writers",
}
_DRIVER_ERRORS: tuple[type[BaseException], ...]
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)
_DRIVER_ERRORS = (*_CONNECTION_ERRORS, asyncpg.exceptions.PostgresError)
_MAX_PENDING = 10_000


def _event(row: Any) -> RecordedEvent:
    position, id_, stream, version, type_, data, metadata, time = row
    return RecordedEvent(
        id_, stream, type_, decode_json(data), decode_json(metadata), version, position, time
    )


class _Pending:
    __slots__ = ("future", "group")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()


class PostgresStore(StoreFront):
    """An event store in a PostgreSQL database (``postgresql://user@host/db``).

    URL options: ``schema`` (default ``tidings``), ``min_size``/``max_size`` of the pool,
    ``statement_cache_size=0`` behind a transaction-mode pooler such as PgBouncer.
    Concurrent appends are committed together, one function call per batch.
    """

    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool,
        schema: str,
        *,
        page_size: int,
        max_batch_events: int,
        writers: int,
        max_event_bytes: int | None,
    ) -> None:
        kwargs = {} if max_event_bytes is None else {"max_event_bytes": max_event_bytes}
        super().__init__(url, **kwargs)
        self.schema = schema
        self.page_size = page_size
        self.max_batch_events = max_batch_events
        self._pool = pool
        self._q = load_queries("postgres", schema)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=_MAX_PENDING)
        self._inflight = 0
        self._idle = asyncio.Event()
        self._writers = [
            asyncio.create_task(self._write_loop(), name=f"tidings-pg-writer-{i}")
            for i in range(writers)
        ]

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresStore:
        """Connect a pool to the database a ``postgresql://`` URL names, migrating its schema."""
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OPTIONS]
        # Other URL parameters (sslmode, application_name...) are the driver's.
        unknown = options.keys() - _OPTIONS - {k for k, _ in query}
        if unknown:
            raise ConfigurationError(f"unknown option(s) {sorted(unknown)} for {redact(url)}")
        schema = str(options.get("schema", "tidings"))
        if not schema or len(schema) > 63:
            raise ConfigurationError(f"schema name {schema!r} is not usable")
        dsn = parts._replace(scheme="postgresql", query=urlencode(query)).geturl()
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=options.get("min_size", 2),
                max_size=options.get("max_size", 10),
                statement_cache_size=options.get("statement_cache_size", 100),
                timeout=10,
            )
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(redact(url), f"{type(exc).__name__}: {exc}") from exc
        try:
            await _migrate(pool, schema)
        except BaseException:
            await pool.close()
            raise
        return cls(
            url,
            pool,
            schema,
            page_size=options.get("page_size", DEFAULT_PAGE_SIZE),
            max_batch_events=options.get("max_batch_events", 5_000),
            writers=options.get("writers", 2),
            max_event_bytes=options.get("max_event_bytes"),
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        error = StoreUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    # -- writing ----------------------------------------------------------------------

    async def _commit(self, group: Group) -> list[AppendResult]:
        self._check_open()
        pending = _Pending(group)
        self._inflight += 1
        try:
            await self._queue.put(pending)  # waits when _MAX_PENDING appends are queued
            return await pending.future
        finally:
            self._inflight -= 1
            if self._closed and not self._inflight:
                self._idle.set()

    async def _write_loop(self) -> None:
        while True:
            pending = await self._queue.get()
            batch, size = [pending], _size(pending.group)
            while size < self.max_batch_events and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                size += _size(item.group)
            try:
                outcomes = await self._write_batch([p.group for p in batch])
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(TidingsError("the store closed during the append"))
                raise
            except Exception as exc:  # keep the writer alive; fail only this batch
                if not isinstance(exc, _DRIVER_ERRORS):
                    log.exception("append batch failed")
                error = self._unavailable(exc)
                outcomes = [error] * len(batch)
            for p, outcome in zip(batch, outcomes, strict=True):
                if p.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)

    async def _write_batch(self, groups: list[Group]) -> list[list[AppendResult] | TidingsError]:
        try:
            return await self._call_append(groups)
        except asyncpg.exceptions.UniqueViolationError:
            # Two groups of this batch share an event id: land them one by one, so the
            # later one sees the earlier as stored and replays or conflicts on its own.
            outcomes: list[list[AppendResult] | TidingsError] = []
            for group in groups:
                try:
                    outcomes.extend(await self._call_append([group]))
                except asyncpg.exceptions.UniqueViolationError as exc:
                    outcomes.append(self._unavailable(exc))
            return outcomes

    async def _call_append(self, groups: list[Group]) -> list[list[AppendResult] | TidingsError]:
        a_group, a_stream, a_expected, a_count, a_check = [], [], [], [], []
        e_app, e_id, e_type, e_data, e_meta = [], [], [], [], []
        g_user: list[str | None] = []
        g_extra: list[str | None] = []
        g_created: list[datetime | None] = []
        for gi, group in enumerate(groups, 1):
            audit = group.audit
            g_user.append(None if audit is None else audit.user)
            g_extra.append(None if audit is None else encode_json(audit.extra, "audit extra"))
            g_created.append(
                None if audit is None else datetime.fromtimestamp(group.created_ms / 1000, UTC)
            )
            for append in group.appends:
                a_group.append(gi)
                a_stream.append(append.stream)
                a_expected.append(append.expected)
                a_count.append(len(append.events))
                a_check.append(append.ids_given)
                index = len(a_stream)
                for event in append.events:
                    e_app.append(index)
                    e_id.append(event.id)
                    e_type.append(event.type)
                    e_data.append(event.data)
                    e_meta.append(event.metadata)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self._q["append_batch"],
                a_group,
                a_stream,
                a_expected,
                a_count,
                a_check,
                e_app,
                e_id,
                e_type,
                e_data,
                e_meta,
                g_user,
                g_extra,
                g_created,
            )
        outcomes: list[list[AppendResult] | TidingsError] = []
        index = 0
        for group in groups:
            results: list[AppendResult] = []
            error: TidingsError | None = None
            for append in group.appends:
                status, first, last, position, actual, detail = rows[index]
                index += 1
                if status in (0, 1):
                    results.append(AppendResult(append.stream, first, last, position))
                elif status == 2 and error is None:
                    error = WrongExpectedVersion(
                        append.stream, expected_from_code(append.expected), actual
                    )
                elif status == 3 and error is None:
                    bad_id, _, reason = detail.partition(" ")
                    error = DuplicateEventId(UUID(bad_id), append.stream, reason)
            outcomes.append(results if error is None else error)
        return outcomes

    # -- reading ----------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        self._check_open()
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(query, *args))
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield a stream's events from a version, forwards or backwards."""
        remaining = check_limit(limit)
        if from_version is None:
            version = (1 << 62) if backwards else 0
        else:
            version = check_position(from_version, "from_version")
        query = self._q["read_stream_backward" if backwards else "read_stream_forward"]
        while remaining is None or remaining > 0:
            size = self.page_size if remaining is None else min(remaining, self.page_size)
            rows = await self._fetch(query, stream, version, size)
            for row in rows:
                yield _event(row)
            if len(rows) < size:
                return
            version = rows[-1][3] + (-1 if backwards else 1)
            if version < 0:
                return
            if remaining is not None:
                remaining -= len(rows)

    async def read_all(
        self, from_position: int = 0, filter: Filter | None = None, limit: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """Yield events of the global log with a position above ``from_position``."""
        remaining = check_limit(limit)
        position = check_position(from_position, "from_position")
        query, args = self._read_all_query(filter)
        while remaining is None or remaining > 0:
            size = self.page_size if remaining is None else min(remaining, self.page_size)
            rows = await self._fetch(query, position, *args, size)
            events = [_event(r) for r in rows]
            for event in events:
                yield event
            if len(rows) < size:
                return
            position = events[-1].position
            if remaining is not None:
                remaining -= len(rows)

    def _read_all_query(self, filter: Filter | None) -> tuple[str, list[Any]]:
        base = self._q["read_all"]
        if filter is None or filter.is_empty:
            return base, []
        clauses: list[str] = []
        args: list[Any] = []
        if filter.categories is not None:
            args.append(list(filter.categories))
            clauses.append(f"category = ANY (${len(args) + 1}::text[])")
        if filter.stream_prefix is not None:
            args.append(filter.stream_prefix)
            clauses.append(f"starts_with(stream, ${len(args) + 1})")
        if filter.types is not None:
            args.append(list(filter.types))
            clauses.append(f"type = ANY (${len(args) + 1}::text[])")
        query = base.replace(
            "WHERE position > $1", "WHERE position > $1 AND " + " AND ".join(clauses)
        )
        return query.replace("LIMIT $2", f"LIMIT ${len(args) + 2}"), args

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        rows = await self._fetch(self._q["stream_version"], stream)
        return int(rows[0][0]) if rows else None

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        rows = await self._fetch(self._q["head"])
        return int(rows[0][0])

    async def list_streams(
        self, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[StreamInfo]:
        """Yield streams in name order with their last version."""
        remaining = check_limit(limit)
        cursor = after or ""
        while remaining is None or remaining > 0:
            size = self.page_size if remaining is None else min(remaining, self.page_size)
            rows = await self._fetch(self._q["list_streams"], cursor, prefix, size)
            for name, version in rows:
                yield StreamInfo(name, version)
            if len(rows) < size:
                return
            cursor = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        position = event.position if isinstance(event, RecordedEvent) else int(event)
        rows = await self._fetch(self._q["audit_of"], position)
        if not rows:
            return None
        id_, user, extra, created, arrived = rows[0]
        return AuditRecord(id_, user, decode_json(extra), created, arrived)

    # -- lifecycle --------------------------------------------------------------------

    async def close(self) -> None:
        """Let queued appends finish, stop the writers and close the pool."""
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            await self._idle.wait()
        for task in self._writers:
            task.cancel()
        for task in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pool.close()


def _size(group: Group) -> int:
    return sum(len(a.events) for a in group.appends)


async def _migrate(pool: asyncpg.Pool, schema: str) -> None:
    """Bring the schema up to date, one migrator at a time (advisory transaction lock)."""
    q = load_queries("postgres", schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["migrate_lock"], schema)
        await conn.execute(q["create_schema"])
        await conn.execute(q["create_migrations"])
        applied = {r[0] for r in await conn.fetch(q["applied_migrations"])}
        for migration in migrations("postgres", schema):
            if migration.version not in applied:
                await conn.execute(migration.sql)
                await conn.execute(q["record_migration"], migration.version, migration.name)
