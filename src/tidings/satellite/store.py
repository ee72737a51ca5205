"""``Satellite``: an event store that replicates a server's categories into a local
SQLite file, records local transactions (offline too) and syncs them exactly once.

Reads of a stream show the replica (the server's confirmed events) with the pending
local transactions on top, each pending event marked by the metadata key
``tidings.pending`` (its local seq) and position 0 (not in the server's log yet); the
global log (``read_all``, subscriptions, views on ``replica``) is the confirmed part
only, with the server's positions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import msgspec

from tidings.client.store import RemoteStore, WireAppend, WireAudit, wire_appends
from tidings.codec import PreparedAppend, decode_json
from tidings.errors import (
    AccessDenied,
    ConfigurationError,
    InvalidEvent,
    InvalidInput,
    NotFound,
    Offline,
    StoreUnavailable,
    TidingsError,
    WrongExpectedVersion,
)
from tidings.events import (
    AppendResult,
    AuditRecord,
    Expected,
    Filter,
    NewEvent,
    RecordedEvent,
    StreamInfo,
    expected_from_code,
)
from tidings.satellite.local import LocalFile
from tidings.satellite.syncer import Conflict, LocalAppend, SatelliteStatus, Syncer, standing
from tidings.sql import load_queries
from tidings.store.base import StoreFront
from tidings.store.planner import Group
from tidings.store.rooms import Room
from tidings.store.rows import sqlite_events, time_from_ms
from tidings.store.sqlite import SQLiteStore
from tidings.wire import expected_from_wire
from tidings.wire_sync import Verdict

log = logging.getLogger("tidings.satellite")
Authority = Callable[[list[LocalAppend]], bool]
"""Whether a write may be accepted while the server cannot be reached."""
PENDING = "tidings.pending"
"""The metadata key that marks a pending event: the seq of its local transaction."""
_STORE_Q = load_queries("sqlite")
_SAT_Q = load_queries("sqlite", None, "satellite.sql")


class _PushTransaction(msgspec.Struct, omit_defaults=True):
    seq: int
    appends: list[WireAppend]
    audit: WireAudit | None = None


_encoder = msgspec.json.Encoder()


class Satellite(StoreFront):
    """A local replica of a server's categories that keeps taking writes offline.

    ``local`` is a ``sqlite:///`` file, ``server`` the server's ``http(s)://`` URL,
    ``token`` a key or JWT with ``sync:<satellite id>`` and read and append on the
    categories. ``authority(appends)`` says which writes may be accepted offline (none
    given: every write). ``on_conflict(conflict)`` (sync or async) hears of every
    transaction the server refused. Use it as ``async with Satellite(...) as sat:``.
    """

    def __init__(
        self,
        local: str,
        server: str,
        categories: Sequence[str],
        *,
        token: str | None = None,
        authority: Authority | None = None,
        satellite_id: str | None = None,
        on_conflict: Callable[[Conflict], Awaitable[None] | None] | None = None,
        timeout: float = 10.0,
        long_poll: float = 25.0,
    ) -> None:
        if not local.startswith("sqlite:///"):
            raise ConfigurationError(
                f"a satellite's local store is a sqlite:/// file, not {local!r}"
            )
        if isinstance(categories, str) or not categories or not all(categories):
            raise ConfigurationError("a satellite replicates one or more named categories")
        super().__init__(f"satellite+{local}")
        self.local_url = local
        self.server_url = server
        self.categories = tuple(categories)
        self.authority = authority
        self.timeout = timeout
        self._wanted_id = satellite_id
        self._on_conflict = on_conflict
        self._long_poll = long_poll
        self._token = token
        self._replica: SQLiteStore | None = None
        self._file: LocalFile | None = None
        self._syncer: Syncer | None = None
        self._commit_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> Satellite:
        """Open the local file and start syncing in the background."""
        replica = await SQLiteStore.open(self.local_url)
        self._replica = replica
        self._file = LocalFile(replica.path)
        try:
            state = await self._file.open(self._wanted_id, self.categories)
        except BaseException:
            await self._file.close()
            await replica.close()
            raise
        self.satellite_id = state.satellite_id
        self.identity = state.server_identity
        remote = RemoteStore(self.server_url, token=self._token, timeout=self.timeout)
        self._syncer = Syncer(
            self._file, remote, state, self._committed, self._on_conflict, self._long_poll
        )
        self._syncer.start()
        return self

    async def __aenter__(self) -> Satellite:
        return await self.open()

    def _committed(self, position: int, identity: str | None) -> None:
        """The replica grew: wake readers of the log."""
        self.identity = identity
        self._watch.committed(position)
        self.replica.committed_elsewhere(position)

    @property
    def replica(self) -> SQLiteStore:
        """The local SQLite store of confirmed events (server positions): run
        subscriptions, views and read models on it."""
        if self._replica is None:
            raise InvalidInput("the satellite is not open: use async with Satellite(...)")
        return self._replica

    @property
    def home(self) -> StoreFront:
        """The replica: features run on the satellite keep their tables in its file."""
        return self.replica

    @property
    def _sync(self) -> Syncer:
        if self._syncer is None:
            raise InvalidInput("the satellite is not open: use async with Satellite(...)")
        return self._syncer

    async def close(self) -> None:
        """Stop syncing and close the local file (pending transactions stay in it)."""
        if self._closed:
            return
        self._closed = True
        if self._syncer is not None:
            await self._syncer.stop()
        if self._file is not None:
            await self._file.close()
        if self._replica is not None:
            await self._replica.close()

    # -- sync -------------------------------------------------------------------------

    async def sync(self, timeout: float | None = None) -> SatelliteStatus:  # noqa: ASYNC109
        """Push, pull and rebase now, and wait until a whole round has run; the status
        after it. ``StoreUnavailable`` if the server cannot be reached."""
        await self._sync.round(timeout)
        return await self.status()

    async def status(self) -> SatelliteStatus:
        """Online or not, last sync, pending and conflict counts, replicated position."""
        return await self._sync.status()

    @property
    def last_status(self) -> SatelliteStatus | None:
        """The status as of the last sync round (None before the first): what
        ``tidings.metrics.Metrics.watch_satellite`` exposes, read without I/O."""
        return None if self._syncer is None else self._syncer.last_status

    async def conflicts(self) -> list[Conflict]:
        """The transactions the server refused, oldest first, until dropped."""
        return await self._sync.conflicts()

    def conflict_feed(self) -> AsyncIterator[Conflict]:
        """Every recorded conflict, then each new one as it is recorded."""
        return self._sync.feed()

    async def drop_conflict(self, seq: int) -> bool:
        """Forget a refused transaction (resolved by the app); whether there was one."""
        return await self._sync.drop_conflict(seq)

    async def redecide(
        self, conflict: Conflict, decide: Callable[[Satellite], Awaitable[Any]]
    ) -> Any:
        """Resolve a conflict by deciding again on the state as it is now: run
        ``decide(satellite)`` (a command handler: read, decide, append with expected
        versions), then drop the conflict; what ``decide`` returned."""
        result = await decide(self)
        await self.drop_conflict(conflict.seq)
        return result

    # -- writes -----------------------------------------------------------------------

    async def _commit(self, group: Group) -> list[AppendResult]:
        if group.checkpoint is not None:
            raise InvalidInput("a satellite's transactions do not move named checkpoints")
        sync, file = self._sync, self._file
        assert file is not None
        appends = group.appends
        allowed = self.authority is None or self.authority(local_appends(appends))
        if not sync.online and not allowed:
            raise Offline(f"the server {self.server_url} cannot be reached: {sync.last_error}")
        audit = None if group.audit is None else WireAudit(group.audit.user, group.audit.extra)
        parts = wire_appends(appends, every_id=True)
        async with self._commit_lock:
            seq, results = await file.record(
                appends, lambda n: _encoder.encode(_PushTransaction(n, parts, audit))
            )
        if not sync.online:
            return results
        verdict = await sync.push_now(seq, self.timeout)
        if verdict is None:  # the server went away meanwhile: the transaction is pending
            if not allowed:
                raise Offline(
                    f"the server {self.server_url} went away; local transaction {seq} is "
                    "pending and will be pushed when it is back",
                    pending=seq,
                )
            return results
        return _outcome(verdict, results)

    # -- reads ------------------------------------------------------------------------

    async def _stream_page(
        self, stream: str, version: int, size: int, backwards: bool
    ) -> list[RecordedEvent]:
        query = _STORE_Q["read_stream_backward" if backwards else "read_stream_forward"]

        def read(conn: sqlite3.Connection) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
            conn.execute("BEGIN")  # one snapshot: the replica and the overlay agree
            try:
                rows = conn.execute(query, (stream, version, size)).fetchall()
                overlay = _overlay(conn, stream)
            finally:
                conn.execute("COMMIT")
            return sqlite_events(rows), overlay

        confirmed, overlay = await self.replica.read(read)
        if backwards:
            above = [e for e in reversed(overlay) if e.version <= version]
            return (above + confirmed)[:size]
        below = [e for e in overlay if e.version >= version]
        return (confirmed + below)[:size]

    async def stream_version(self, stream: str) -> int | None:
        """A stream's last version with the pending transactions on top (None: none)."""
        self._check_open()

        def read(conn: sqlite3.Connection) -> int | None:
            conn.execute("BEGIN")
            try:
                overlay = _overlay(conn, stream)
                if overlay:
                    return overlay[-1].version
                last = conn.execute(_STORE_Q["stream_version"], (stream,)).fetchone()
                return None if last is None else int(last[0])
            finally:
                conn.execute("COMMIT")

        return await self.replica.read(read)

    async def _log_page(
        self, after: int, filter: Filter | None, size: int, raw: bool = False
    ) -> list[RecordedEvent]:
        return await self.replica._log_page(after, filter, size, raw)

    async def _streams_page(self, prefix: str | None, after: str, size: int) -> list[StreamInfo]:
        return await self.replica._streams_page(prefix, after, size)

    async def _checkpoint(self, name: str) -> int | None:
        return await self.replica.checkpoint(name)

    async def head(self) -> int:
        """The last replicated server position (0 before the first pull)."""
        return await self.replica.head()

    async def audit(self, event: RecordedEvent | int) -> AuditRecord | None:
        """None: audit records stay on the server."""
        return None

    def room(self, file: str) -> Room:
        """The replica's room (features keep their tables in the local file)."""
        return self.replica.room(file)

    def subscribe(self, name: str, handler: Any, **options: Any) -> Any:
        """A durable subscription to the confirmed log, checkpointed in the local file."""
        return self.replica.subscribe(name, handler, **options)


async def file_status(
    local: str, server: str | None = None, token: str | None = None
) -> SatelliteStatus:
    """The status of the satellite whose file is ``local`` (a ``sqlite:///`` URL), read
    from the file without syncing; with ``server``, ``online`` says whether that server
    answers now. ``NotFound`` if the file is not a satellite's."""
    path = local.removeprefix("sqlite:///")
    if not local.startswith("sqlite:///") or not await asyncio.to_thread(os.path.exists, path):
        raise NotFound(f"no satellite file at {local}")
    file = LocalFile(path)
    try:
        try:
            state = await file.state()
        except StoreUnavailable as exc:  # no satellite tables: not a tidings store
            raise NotFound(f"{local} is not a satellite's file") from exc
        counts = await file.counts()
    finally:
        await file.close()
    online, error = False, None
    if server is not None:
        remote = RemoteStore(server, token=token, timeout=5.0)
        try:
            await remote.head()
            online = True
        except TidingsError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await remote.close()
    return standing(state, counts, online, error)


def local_appends(appends: Sequence[PreparedAppend]) -> list[LocalAppend]:
    """The appends of a local transaction as an authority sees them."""
    return [
        LocalAppend(
            a.stream,
            [
                NewEvent(e.type, decode_json(e.data), decode_json(e.metadata), e.id)
                for e in a.events
            ],
            expected_from_code(a.expected),
        )
        for a in appends
    ]


def _overlay(conn: sqlite3.Connection, stream: str) -> list[RecordedEvent]:
    """The pending events of ``stream`` stacked on its confirmed version, in the read
    transaction of ``conn``; one whose confirmed copy (the same id) is in the replica
    already is left out, so no event shows twice."""
    pending = conn.execute(_SAT_Q["pending_of_stream_full"], (stream,)).fetchall()
    if not pending:
        return []
    last = conn.execute(_STORE_Q["stream_version"], (stream,)).fetchone()
    parts: list[tuple[int, int, Any]] = []
    for seq, body, created_ms in pending:
        found: Any = msgspec.json.decode(body)
        for part in found["appends"]:
            if part["stream"] == stream:
                parts.extend((seq, created_ms, e) for e in part["events"])
    ids = [UUID(e["id"]).bytes for _, _, e in parts]
    marks = ",".join("?" * len(ids))
    there = {row[0] for row in conn.execute(_CONFIRMED_IDS.format(marks=marks), ids)}
    events: list[RecordedEvent] = []
    version = -1 if last is None else int(last[0])
    for (seq, created_ms, e), key in zip(parts, ids, strict=True):
        if key in there:
            continue
        version += 1
        meta = dict(e.get("metadata") or {})
        meta[PENDING] = seq
        events.append(
            RecordedEvent(
                UUID(bytes=key),
                stream,
                e["type"],
                e["data"],
                meta,
                version,
                0,
                time_from_ms(created_ms),
            )
        )
    return events


_CONFIRMED_IDS = "SELECT id FROM tidings_events WHERE id IN ({marks})"


def _outcome(verdict: Verdict, results: list[AppendResult]) -> list[AppendResult]:
    """What an online write returns, or raises, for the verdict on it."""
    if verdict.verdict == "duplicate" and verdict.stored is not None:
        verdict = verdict.stored
    if verdict.verdict == "accepted":
        return verdict.results or results
    if verdict.verdict == "conflict" and verdict.stream is not None:
        expected: Expected = expected_from_wire(verdict.expected)
        raise WrongExpectedVersion(verdict.stream, expected, verdict.actual)
    reason = verdict.reason or verdict.verdict
    if reason.startswith("forbidden"):
        raise AccessDenied(403, "forbidden", reason)
    raise InvalidEvent(f"the server rejected the transaction: {reason}")
