"""The SQLite store: one file, no server; one writer thread doing group commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from tidings.codec import decode_json, encode_json
from tidings.errors import ConfigurationError, InvalidInput, StoreUnavailable, TidingsError
from tidings.events import (
    AppendResult,
    AuditRecord,
    Filter,
    RecordedEvent,
    StreamInfo,
    category_of,
)
from tidings.sql import Migration, load_queries, migrations, padded, row_counts, split_statements
from tidings.store.base import (
    DEFAULT_PAGE_SIZE,
    StoreFront,
)
from tidings.store.batching import Outcome, Pending, Slots, settle
from tidings.store.planner import (
    Group,
    Plan,
    StoredIdentity,
    checkpoint_names,
    given_ids,
    plan_batch,
    streams_of,
)
from tidings.store.rooms import Room, SQLiteRoom
from tidings.store.rows import sqlite_events, time_from_ms
from tidings.store.sqlite_side import (
    Job,
    Lease,
    SideWrites,
    begin_immediate,
    is_busy,
    lending,
    run_side,
)

T = TypeVar("T")
_SYNC_MODES = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_MAX_VARS = 256  # an IN list's most values (a power of two: see padded)
_ROWS_PER_INSERT = 100  # 1,000 variables a statement
Q = load_queries("sqlite")


class SQLiteStore(StoreFront):
    """An event store in one SQLite file (``sqlite:///path/to/file.db``).

    Durable by default: ``synchronous=full`` makes an acknowledged append survive a
    power loss; ``?synchronous=normal`` is faster and survives a process crash only.
    Appends from all tasks go to one writer thread, which commits them in batches.
    """

    def __init__(
        self,
        url: str,
        path: str,
        *,
        synchronous: str = "full",
        busy_timeout_ms: int = 10_000,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_batch_events: int = 5_000,
        max_event_bytes: int | None = None,
    ) -> None:
        kwargs = {} if max_event_bytes is None else {"max_event_bytes": max_event_bytes}
        super().__init__(url, **kwargs)
        if synchronous.lower() not in _SYNC_MODES:
            raise ConfigurationError(
                f"synchronous must be one of {sorted(_SYNC_MODES)}, not {synchronous!r}"
            )
        self.path = path
        self.synchronous = _SYNC_MODES[synchronous.lower()]
        self.busy_timeout_ms = busy_timeout_ms
        self._lock_wait = busy_timeout_ms / 1000  # seconds the writer waits for the lock
        self.page_size = page_size
        self.max_batch_events = max_batch_events
        self._loop = asyncio.get_running_loop()  # the store answers on the loop it opened on
        self._queue: queue.SimpleQueue[list[Pending] | Job[Any] | Lease | None] = (
            queue.SimpleQueue()
        )
        self._handoff: list[Pending] = []
        self._slots = Slots(10_000)  # bound on appends waiting for the writer
        self._writer: threading.Thread | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self.side = SideWrites(url, self._connect, self._submit_side, self._check_open)
        """Writes beside the log (checkpoints, leases, snapshots, views): see
        ``tidings.store.sqlite_side``."""

    @classmethod
    async def open(cls, url: str, **options: Any) -> SQLiteStore:
        """Open (creating and migrating if needed) the file a ``sqlite://`` URL names."""
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"sqlite URLs take a path, as sqlite:///file.db, not {url!r}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigurationError(f"sqlite URL {url!r} names no file")
        allowed = {
            "synchronous",
            "busy_timeout_ms",
            "page_size",
            "max_batch_events",
            "max_event_bytes",
        }
        unknown = options.keys() - allowed
        if unknown:
            raise ConfigurationError(f"unknown option(s) {sorted(unknown)} for {url}")
        store = cls(url, path, **options)
        try:
            await asyncio.get_running_loop().run_in_executor(None, store._start)
        except BaseException:
            await store.close()
            raise
        return store

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return self.side_connection()

    def side_connection(self, synchronous: str | None = None) -> sqlite3.Connection:
        """A new connection to the store's file, set up as the store's own (autocommit,
        busy timeout, ``synchronous``); the caller closes it. For reading, or for tools:
        writes beside the log should go through ``side`` (a second writing connection
        makes the store's writer wait for SQLite's lock)."""
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        try:
            conn.execute(f"PRAGMA synchronous = {synchronous or self.synchronous}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(self.url, str(exc)) from exc
        return conn

    def _start(self) -> None:
        parent = Path(self.path).parent
        if not parent.exists():
            raise StoreUnavailable(self.url, f"directory {parent} does not exist")
        conn = self._connect()
        self._writer_conn = conn
        try:
            mode = self._switch_to_wal(conn)
            if mode.lower() != "wal":
                raise StoreUnavailable(self.url, f"could not switch to WAL (journal_mode={mode})")
            self._migrate(conn)
            self.identity = str(conn.execute(Q["store_identity"]).fetchone()[0])
            # From here on the writer waits for other processes itself (begin_immediate).
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        self._writer = threading.Thread(
            target=self._write_loop, name="tidings-sqlite-writer", daemon=True
        )
        self._writer.start()

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

        Two processes opening a new file at once: the switch needs the file to itself,
        and SQLite answers "database is locked" at once, without its busy handler, when
        waiting could deadlock (this process holding a read lock while the other waits
        to write). So it is retried here, for up to the busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.001
        while True:
            try:
                mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return mode
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply missing migrations; take the write lock only when one is due, so that
        opening a store does not queue behind another process's writes."""
        due = self._due_migrations(conn)
        if not due:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(Q["create_migrations"])
            for migration in self._due_migrations(conn):  # again, under the lock
                for statement in split_statements(migration.sql):
                    conn.execute(statement)
                now_ms = time.time_ns() // 1_000_000
                conn.execute(Q["record_migration"], (migration.version, migration.name, now_ms))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _due_migrations(conn: sqlite3.Connection) -> list[Migration]:
        exists = conn.execute(Q["migrations_table_exists"]).fetchone()
        applied = {v for (v,) in conn.execute(Q["applied_migrations"])} if exists else set()
        return [m for m in migrations("sqlite") if m.version not in applied]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the calling thread, a page at a time.

        In WAL mode a read never waits for the writer, so a page is CPU work (about 5 ms
        for 1,000 events), and the event loop runs between pages. A reader thread would
        not free the loop (decoding holds the GIL) and costs a GIL hand-off per row:
        measured 127k events/s here against 99k through a thread.
        """
        self._check_open()
        if self._reader_conn is None:
            self._reader_conn = self._connect()
        try:
            return fn(self._reader_conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store's read connection (a quick read, for layers
        that keep tables beside the log)."""
        return await self._read(fn)

    def _submit_side(self, item: Job[Any] | Lease) -> None:
        self._check_open()
        self._hand_over()  # appends made before it go first
        self._queue.put(item)

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return await self._read(lambda c: c.execute(sql, params).fetchall())

    # -- writing ----------------------------------------------------------------------

    async def _commit(self, group: Group) -> list[AppendResult]:
        self._check_open()
        if lending.get():
            raise InvalidInput(
                "cannot append inside a subscription's SQLite transaction: it holds the"
                " store's write lock until the handler returns"
            )
        if not self._slots.take_now():
            await self._slots.take()
        try:
            pending = Pending(group, self._loop)
            if not self._handoff:
                self._loop.call_soon(self._hand_over)
            self._handoff.append(pending)
            return await pending.future
        finally:
            self._slots.give()

    def _hand_over(self) -> None:
        """Pass the appends made during one turn of the event loop to the writer at once.

        Scheduled by the first append of a turn, it runs after every task woken in that
        turn has made its append: one wake-up of the writer thread per batch, instead of
        one per append racing the event loop for the GIL.
        """
        handoff, self._handoff = self._handoff, []
        if handoff:
            self._queue.put(handoff)

    def _write_loop(self) -> None:
        stop = False
        side: Job[Any] | Lease | None = None
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            if not isinstance(first, list):
                run_side(self._writer_conn, first, self._loop, self.url, self._lock_wait)  # type: ignore[arg-type]
                continue
            batch = list(first)
            size = sum(p.size for p in batch)
            while size < self.max_batch_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if not isinstance(more, list):
                    side = more  # after the appends queued before it
                    break
                batch.extend(more)
                size += sum(p.size for p in more)
            outcomes = self._write_batch(batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(settle, batch, outcomes, self._watch.committed)
            if side is not None:
                run_side(self._writer_conn, side, self._loop, self.url, self._lock_wait)  # type: ignore[arg-type]
                side = None

    def _write_batch(self, batch: list[Pending]) -> list[Outcome]:
        conn = self._writer_conn
        assert conn is not None
        groups = [p.group for p in batch]
        try:
            begin_immediate(conn, self._lock_wait)
            try:
                head, last_ms = conn.execute(Q["head"]).fetchone()
                plan = self._plan(conn, groups, head)
                if plan.writes:
                    self._write_plan(conn, groups, plan, last_ms)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = StoreUnavailable(self.url, f"append failed: {exc}")
            error.__cause__ = exc
            return [error] * len(batch)
        except Exception as exc:  # a bug: fail the batch loudly, keep the writer alive
            return [TidingsError(f"append failed: {exc!r}")] * len(batch)
        return list(plan.outcomes)

    def _plan(self, conn: sqlite3.Connection, groups: list[Group], head: int) -> Plan:
        versions: dict[str, int] = {}
        names = sorted(streams_of(groups))
        for chunk in _chunks(names):
            sql = f"SELECT name, version FROM tidings_streams WHERE name IN ({_marks(chunk)})"
            versions.update(conn.execute(sql, chunk).fetchall())
        stored: dict[UUID, StoredIdentity] = {}
        ids = [i.bytes for i in given_ids(groups)]
        for id_chunk in _chunks(ids):
            sql = (
                "SELECT id, stream, version, position, type, data, metadata FROM tidings_events"
                f" WHERE id IN ({_marks(id_chunk)})"
            )
            for id_, *rest in conn.execute(sql, id_chunk):
                stored[UUID(bytes=id_)] = StoredIdentity(*rest)
        marks = {
            name: row[0]
            for name in checkpoint_names(groups)
            if (row := conn.execute(Q["checkpoint"], (name,)).fetchone()) is not None
        }
        return plan_batch(groups, versions, stored, head, marks)

    def _write_plan(
        self, conn: sqlite3.Connection, groups: list[Group], plan: Plan, last_ms: int
    ) -> None:
        now_ms = max(time.time_ns() // 1_000_000, last_ms)
        audit_ids: dict[int, int] = {}
        for index in plan.landed_groups:
            audit = groups[index].audit
            if audit is not None:
                cursor = conn.execute(
                    Q["insert_audit"],
                    (
                        audit.user,
                        encode_json(audit.extra, "audit extra"),
                        groups[index].created_ms,
                        now_ms,
                    ),
                )
                assert cursor.lastrowid is not None
                audit_ids[index] = cursor.lastrowid
        audit_of = audit_ids.get
        categories = {name: category_of(name) for name in plan.versions}
        params: list[Any] = []
        add = params.extend
        for r in plan.rows:
            add(
                (
                    r.position,
                    r.id.bytes,
                    r.stream,
                    r.version,
                    r.type,
                    r.data,
                    r.metadata,
                    now_ms,
                    categories[r.stream],
                    audit_of(r.group),
                )
            )
        # Many rows per statement: one step, one release of the GIL, instead of one per
        # row (which, with a busy event loop, waits up to a switch interval each time).
        start = 0
        for count in row_counts(len(plan.rows), _ROWS_PER_INSERT):
            conn.execute(_insert_events(count), params[start * 10 : (start + count) * 10])
            start += count
        if plan.checkpoints:
            conn.executemany(
                Q["move_checkpoint"], [(n, p, now_ms) for n, p in plan.checkpoints.items()]
            )
        if not plan.rows:
            return
        versions = [value for item in plan.versions.items() for value in item]
        start = 0
        for count in row_counts(len(plan.versions), _ROWS_PER_INSERT):
            conn.execute(_upsert_streams(count), versions[2 * start : 2 * (start + count)])
            start += count
        conn.execute(Q["set_head"], (plan.head, now_ms))

    # -- reading ----------------------------------------------------------------------

    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        query = Q["read_stream_backward" if backwards else "read_stream_forward"]
        return await self._read(
            lambda c: sqlite_events(c.execute(query, (stream, version, size)).fetchall())
        )

    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        sql, args = _read_all_query(filter)
        return await self._read(
            lambda c: sqlite_events(c.execute(sql, (after, *args, size)).fetchall(), raw)
        )

    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        rows = await self._rows(Q["list_streams"], (after, prefix, prefix, prefix, size))
        return [StreamInfo(name, version) for name, version in rows]

    async def _checkpoint(self, name: str) -> int | None:
        row = await self._read(lambda c: c.execute(Q["checkpoint"], (name,)).fetchone())
        return None if row is None else int(row[0])

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version, or None if it does not exist."""
        row = await self._read(lambda c: c.execute(Q["stream_version"], (stream,)).fetchone())
        return None if row is None else int(row[0])

    async def head(self) -> int:
        """The last committed position, 0 when the store is empty."""
        row = await self._read(lambda c: c.execute(Q["head"]).fetchone())
        return int(row[0])

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """The audit record of the transaction that wrote an event (or position), if any."""
        position = event.position if isinstance(event, RecordedEvent) else int(event)
        row = await self._read(lambda c: c.execute(Q["audit_of"], (position,)).fetchone())
        if row is None:
            return None
        id_, user, extra, created_ms, arrived_ms = row
        return AuditRecord(
            id_, user, decode_json(extra), time_from_ms(created_ms), time_from_ms(arrived_ms)
        )

    # -- lifecycle --------------------------------------------------------------------

    def _identity(self) -> str:
        return "sqlite://" + os.path.realpath(self.path)

    def room(self, file: str) -> Room:
        """The named queries of ``file`` on this store's database (``tidings.store.rooms``)."""
        self._check_open()
        return SQLiteRoom(self, file)

    async def close(self) -> None:
        """Let the writer finish every queued append, then close the file."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            self._hand_over()  # appends still waiting for their turn go before the stop
            self._queue.put(None)
            await loop.run_in_executor(None, self._writer.join)
            await asyncio.sleep(0)  # let the last appends' callers see their results
        await self._watch.close()  # after the last commits, so that their head goes out
        self.side.close()
        for conn in [self._reader_conn, self._writer_conn]:
            if conn is not None:
                conn.close()


def _read_all_query(filter: Filter | None) -> tuple[str, list[Any]]:
    if filter is None:
        return Q["read_all"], []
    clauses: list[str] = []
    args: list[Any] = []
    if filter.categories is not None:
        clauses.append(f"category IN ({_marks(filter.categories)})")
        args.extend(filter.categories)
    if filter.stream_prefix is not None:
        clauses.append("substr(stream, 1, ?) = ?")
        args.extend([len(filter.stream_prefix), filter.stream_prefix])
    if filter.types is not None:
        clauses.append(f"type IN ({_marks(filter.types)})")
        args.extend(filter.types)
    sql = Q["read_all"].replace(
        "WHERE position > ?", "WHERE position > ? AND " + " AND ".join(clauses)
    )
    return sql, args


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_events(rows: int) -> str:
    """The event insert for ``rows`` rows in one statement."""
    head, _, values = Q["insert_event"].partition("VALUES")
    row = values.strip().rstrip(";")
    return f"{head}VALUES {', '.join([row] * rows)}"


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _upsert_streams(rows: int) -> str:
    """The streams' version upsert for ``rows`` streams in one statement."""
    head, _, rest = Q["upsert_stream"].partition("VALUES")
    row, _, conflict = rest.partition("ON CONFLICT")
    values = ", ".join([row.strip()] * rows)
    return f"{head}VALUES {values} ON CONFLICT{conflict.rstrip().rstrip(';')}"


def _marks(values: Any) -> str:
    return ", ".join("?" * len(values))


def _chunks(values: list[T]) -> list[list[T]]:
    """``values`` in IN lists of at most ``_MAX_VARS``, each padded to one of a few sizes."""
    return [padded(values[i : i + _MAX_VARS]) for i in range(0, len(values), _MAX_VARS)]
