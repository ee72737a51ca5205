"""The PostgreSQL store: asyncpg pool, group commit through one function call per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

import asyncpg

from tidings.codec import decode_json, encode_json
from tidings.errors import ConfigurationError, StoreUnavailable, TidingsError
from tidings.events import (
    AppendResult,
    AuditRecord,
    Filter,
    RecordedEvent,
    StreamInfo,
)
from tidings.sql import load_queries, migrations
from tidings.store import redact
from tidings.store.base import (
    DEFAULT_PAGE_SIZE,
    StoreFront,
)
from tidings.store.batching import Outcome, Pending, settle
from tidings.store.planner import (
    RELATIVE_HEAD,
    Group,
    Plan,
    StoredIdentity,
    checkpoint_names,
    given_ids,
    plan_batch,
    streams_of,
)
from tidings.store.rooms import PostgresRoom, Room
from tidings.store.rows import postgres_events, time_from_ms

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
    "command_timeout",
}
DEFAULT_COMMAND_TIMEOUT = 60.0
_MIGRATION_TIMEOUT = 86_400.0
_RESET_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
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
_OPTIMISTIC_ROUNDS = 3
_MAX_KNOWN_STREAMS = 100_000


class PostgresStore(StoreFront):
    """An event store in a PostgreSQL database (``postgresql://user@host/db``).

    URL options: ``schema`` (default ``tidings``), ``min_size``/``max_size`` of the pool,
    ``statement_cache_size=0`` behind a transaction-mode pooler such as PgBouncer,
    ``command_timeout`` (seconds a statement may take, 60; 0 for none): past it the
    call raises ``StoreUnavailable`` and the connection is replaced, so a connection
    that went silent (half-open) cannot hang a read or an append for good.
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
        self.calls = PoolCalls(self._acquire)
        """The pool's query methods for tidings' own statements, here and in the layers
        that keep tables beside the log (checkpoints, leases, snapshots, views)."""
        self._q = load_queries("postgres", schema)
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=_MAX_PENDING)
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle_writers = 0
        self._known: dict[str, int] = {}  # stream versions of this store's last writes
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
        command_timeout = _seconds(options.get("command_timeout", DEFAULT_COMMAND_TIMEOUT))
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=options.get("min_size", 2),
                max_size=options.get("max_size", 10),
                statement_cache_size=options.get("statement_cache_size", 100),
                timeout=10,
                command_timeout=command_timeout,
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(redact(url), f"{type(exc).__name__}: {exc}") from exc
        try:
            await _migrate(pool, schema)
            identity = await _identity_of(pool, schema)
        except BaseException:
            await pool.close()
            raise
        store = cls(
            url,
            pool,
            schema,
            page_size=options.get("page_size", DEFAULT_PAGE_SIZE),
            max_batch_events=options.get("max_batch_events", 400),
            writers=options.get("writers", 2),
            max_event_bytes=options.get("max_event_bytes"),
        )
        store.identity = identity
        return store

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection for tidings' own statements. One that stopped answering
        (``command_timeout`` passed: a half-open connection, say) is closed rather than
        given back, since asyncpg would wait on it for the cancelled statement's end."""
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except TimeoutError:
                conn.terminate()
                raise

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection for code that is not tidings' own (a handler writing beside
        its checkpoint). Its session is reset when it comes back: whatever the code set
        (settings, advisory locks, prepared statements) does not reach the next user."""
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except TimeoutError:
                conn.terminate()  # it stopped answering: see _acquire
                raise
            finally:
                if not conn.is_closed():
                    try:
                        await conn.reset(timeout=_RESET_TIMEOUT)
                    except Exception:
                        conn.terminate()  # the pool replaces it

    def _identity(self) -> str:
        parts = urlsplit(self.url)
        return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}#{self.schema}"

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        error = StoreUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    # -- writing ----------------------------------------------------------------------

    async def _commit(self, group: Group) -> list[AppendResult]:
        self._check_open()
        pending = Pending(group, asyncio.get_running_loop())
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
            self._idle_writers += 1
            try:
                pending = await self._queue.get()
            finally:
                self._idle_writers -= 1
            # Leave half of what waits to an idle writer: it plans and sends its batch
            # while this one commits, so the client and the server work at once.
            take = self._queue.qsize() // 2 if self._idle_writers else self._queue.qsize()
            batch, size = [pending], pending.size
            while size < self.max_batch_events and take > 0:
                item = self._queue.get_nowait()
                batch.append(item)
                size += item.size
                take -= 1
            outcomes: list[Outcome]
            try:
                outcomes = list(await self._write_batch([p.group for p in batch]))
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
            settle(batch, outcomes, self._watch.committed)

    async def _write_batch(self, groups: list[Group]) -> list[list[AppendResult] | TidingsError]:
        """Plan on known stream versions, then write if no stream moved meanwhile.

        The versions come from this store's own last writes when it has them all, else
        from a read. Optimistic rounds keep the head lock only for the final statement;
        after a few rounds lost to concurrent writers of the same streams, plan under it.
        """
        async with self._acquire() as conn:
            if any(g.checkpoint is not None for g in groups):
                return await self._write_locked(conn, groups)
            plan = self._plan_from_known(groups)
            rounds = 0
            while rounds < _OPTIMISTIC_ROUNDS:
                if plan is None:
                    plan = await self._plan(conn, groups)
                    rounds += 1
                if not plan.rows:
                    return plan.outcomes
                try:
                    head = await self._apply(conn, groups, plan)
                except asyncpg.exceptions.UniqueViolationError:
                    plan = None  # an id given here was stored meanwhile: plan again
                    continue
                if head >= 0:
                    self._known.update(plan.versions)
                    return plan.absolute(head)
                for name in plan.assumed:  # another writer moved these streams
                    self._known.pop(name, None)
                plan = None
            return await self._write_locked(conn, groups)

    async def _write_locked(
        self, conn: asyncpg.Connection, groups: list[Group]
    ) -> list[list[AppendResult] | TidingsError]:
        """Plan and write under the head lock: after lost optimistic rounds, and for a
        batch that moves named checkpoints (read and moved under the same lock, which
        every writer takes, so no other transaction moves them in between)."""
        async with conn.transaction():
            await conn.execute(self._q["lock_head"])
            names = checkpoint_names(groups)
            marks = (
                dict(await conn.fetch(self._q["checkpoints_for_update"], names)) if names else {}
            )
            plan = await self._plan(conn, groups, marks)
            if not plan.writes:
                return plan.outcomes
            head = await self._apply(conn, groups, plan) if plan.rows else 0
            if plan.checkpoints:
                await conn.execute(
                    self._q["move_checkpoints"],
                    list(plan.checkpoints),
                    list(plan.checkpoints.values()),
                    time.time_ns() // 1_000_000,
                )
            self._known.update(plan.versions)
            return plan.absolute(head)

    def _plan_from_known(self, groups: list[Group]) -> Plan | None:
        """A plan on the versions this store last wrote, if it knows every stream's.

        Safe because ``apply_batch`` checks each assumed version under the head lock;
        but a plan with a failed group is not trusted (the conflict may be with a stale
        version), and given ids need the stored events: both go through a read.
        """
        if len(self._known) > _MAX_KNOWN_STREAMS:
            self._known.clear()
        versions = {}
        for name in streams_of(groups):
            version = self._known.get(name)
            if version is None:
                return None
            versions[name] = version
        if given_ids(groups):
            return None
        plan = plan_batch(groups, versions, {}, RELATIVE_HEAD)
        if any(isinstance(outcome, TidingsError) for outcome in plan.outcomes):
            return None
        return plan

    async def _plan(
        self, conn: asyncpg.Connection, groups: list[Group], marks: dict[str, int] | None = None
    ) -> Plan:
        rows = await conn.fetch(self._q["stream_versions"], list(streams_of(groups)))
        versions = {name: version for name, version in rows}
        stored: dict[UUID, StoredIdentity] = {}
        ids = given_ids(groups)
        if ids:
            for id_, *rest in await conn.fetch(self._q["stored_events"], ids):
                stored[id_] = StoredIdentity(*rest)
        return plan_batch(groups, versions, stored, RELATIVE_HEAD, marks)

    async def _apply(self, conn: asyncpg.Connection, groups: list[Group], plan: Plan) -> int:
        audited = [i for i in plan.landed_groups if groups[i].audit is not None]
        audits = [groups[i].audit for i in audited]
        rows = plan.rows
        head: int = await conn.fetchval(
            self._q["write_batch"],
            list(plan.assumed),
            list(plan.assumed.values()),
            [plan.versions[name] for name in plan.assumed],
            [r.id for r in rows],
            [r.stream for r in rows],
            [r.version for r in rows],
            [r.type for r in rows],
            # One JSON array text each: the driver would check and encode every element
            # of an array apart (~0.9 µs an event for data, ~0.4 for metadata).
            "[" + ",".join([r.data for r in rows]) + "]",
            "[" + ",".join([r.metadata for r in rows]) + "]",
            # Only audited batches need each event's group: the shorter array is padded
            # with nulls, which join no audit record.
            [r.group for r in rows] if audited else [],
            audited,
            [a.user for a in audits if a is not None],
            [encode_json(a.extra, "audit extra") for a in audits if a is not None],
            [time_from_ms(groups[i].created_ms) for i in audited],
        )
        return head

    # -- reading ----------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        self._check_open()
        try:
            return await self.calls.fetch(query, *args)
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(exc) from exc

    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        query = self._q["read_stream_backward" if backwards else "read_stream_forward"]
        return postgres_events(await self._fetch(query, stream, version, size))

    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        query, args = self._read_all_query(filter)
        return postgres_events(await self._fetch(query, after, *args, size), raw)

    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        rows = await self._fetch(self._q["list_streams"], after, prefix, size)
        return [StreamInfo(name, version) for name, version in rows]

    def _read_all_query(self, filter: Filter | None) -> tuple[str, list[Any]]:
        base = self._q["read_all"]
        if filter is None:
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

    async def _checkpoint(self, name: str) -> int | None:
        rows = await self._fetch(self._q["checkpoint"], name)
        return int(rows[0][0]) if rows else None

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        rows = await self._fetch(self._q["stream_version"], stream)
        return int(rows[0][0]) if rows else None

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        rows = await self._fetch(self._q["head"])
        return int(rows[0][0])

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        position = event.position if isinstance(event, RecordedEvent) else int(event)
        rows = await self._fetch(self._q["audit_of"], position)
        if not rows:
            return None
        id_, user, extra, created, arrived = rows[0]
        return AuditRecord(id_, user, decode_json(extra), created, arrived)

    # -- lifecycle --------------------------------------------------------------------

    def room(self, file: str) -> Room:
        """The named queries of ``file`` on this store's database (``tidings.store.rooms``)."""
        self._check_open()
        return PostgresRoom(self, file)

    async def close(self) -> None:
        """Let queued appends finish, stop the writers and close the pool."""
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            await self._idle.wait()
        await self._watch.close()  # after the last commits, so that their head goes out
        for task in self._writers:
            task.cancel()
        for task in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            # A graceful close waits for every connection to say goodbye; one that went
            # silent never does.
            await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "the pool did not close in %.0f s; its connections were cut", _CLOSE_TIMEOUT
            )
            self._pool.terminate()


class PoolCalls:
    """``execute``/``fetch``/``fetchval``/``fetchrow``/``acquire`` as on an asyncpg pool,
    but a connection that stops answering is closed, not given back (``_acquire``)."""

    def __init__(
        self, acquire: Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]
    ) -> None:
        self.acquire = acquire

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement; its status."""
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run a query; its rows."""
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run a query; the first column of its first row."""
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """Run a query; its first row."""
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)


def _seconds(value: Any) -> float | None:
    """``command_timeout``: seconds > 0, or 0 / "none" for no limit."""
    if isinstance(value, str) and value.lower() == "none":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"command_timeout must be seconds, not {value!r}") from None
    if seconds < 0 or seconds != seconds:
        raise ConfigurationError(f"command_timeout must be seconds >= 0, not {value!r}")
    return seconds or None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: none. tidings' own statements leave no session state (settings
    are ``SET LOCAL``, locks are transaction locks), and asyncpg rolls back an open
    transaction itself; the default reset cost a round trip on every release (384 →
    142 µs for a one-row query here). Connections lent to other code are reset by
    ``PostgresStore.lend``."""
    return None


async def _identity_of(pool: asyncpg.Pool, schema: str) -> str | None:
    """The store's identity (migration 10); None for a schema held below that version,
    as only tests of older migrations hold one."""
    try:
        identity = await pool.fetchval(load_queries("postgres", schema)["store_identity"])
    except asyncpg.exceptions.UndefinedTableError:
        return None
    return str(identity)


async def _migrate(pool: asyncpg.Pool, schema: str) -> None:
    """Bring the schema up to date, one migrator at a time (advisory transaction lock)."""
    q = load_queries("postgres", schema)
    # Waiting for another node's migration, or migrating a large table, may take longer
    # than command_timeout: migrations have a day.
    t = _MIGRATION_TIMEOUT
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q["migrate_lock"], schema, timeout=t)
        await conn.execute(q["create_schema"], timeout=t)
        await conn.execute(q["create_migrations"], timeout=t)
        applied = {r[0] for r in await conn.fetch(q["applied_migrations"], timeout=t)}
        for migration in migrations("postgres", schema):
            if migration.version not in applied:
                await conn.execute(migration.sql, timeout=t)
                await conn.execute(
                    q["record_migration"], migration.version, migration.name, timeout=t
                )
