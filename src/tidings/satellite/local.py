"""A satellite's file: its replica of the server's events, its pending local transactions
and its conflicts, written on a connection of its own with ``synchronous=FULL``.

The file is a tidings SQLite store (so reads, subscriptions and views run on it as on
any store) whose events are the server's, with the server's positions, versions, times
and ids. Beside them: the pending transactions (``tidings_satellite_pending``, the
overlay readers see on top of the replica), the ones the server refused, and where
replication stands. Every change is one SQLite transaction: a pulled page lands with
the cursor that passes it and the removal of the pending transactions it confirms, so
the cursor never passes what is not on disk and a pending event never vanishes before
its confirmed copy is there.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import msgspec

from tidings.codec import PreparedAppend
from tidings.errors import ConfigurationError, NotFound, StoreUnavailable
from tidings.events import AppendResult, category_of
from tidings.sql import load_queries, row_counts
from tidings.store.planner import check_expected
from tidings.store.sqlite_side import begin_immediate
from tidings.wire_sync import Verdict

T = TypeVar("T")
Q = load_queries("sqlite", None, "satellite.sql")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_LOCK_WAIT = 30.0


class Pulled(msgspec.Struct):
    """A server event as a pull carries it, its data and metadata kept as JSON bytes."""

    id: UUID
    stream: str
    type: str
    data: msgspec.Raw
    metadata: msgspec.Raw
    version: int
    position: int
    time: datetime


class PulledPage(msgspec.Struct):
    """``GET /sync/pull``'s reply, as the satellite reads it."""

    events: list[Pulled]
    cursor: int
    head: int
    last_seq: int
    verdicts: list[Verdict]
    identity: str | None


class State(NamedTuple):
    """Where the satellite stands, as its file says."""

    satellite_id: str
    categories: tuple[str, ...]
    server_identity: str | None
    cursor: int
    last_seq: int
    decided_seq: int
    synced_ms: int | None


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def now_ms() -> int:
    """The time now, in ms since the epoch."""
    return time.time_ns() // 1_000_000


class LocalFile:
    """The satellite's tables of one SQLite store file, on a thread of their own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidings-satellite")
        self._conn: sqlite3.Connection | None = None
        self._categories: frozenset[str] = frozenset()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 0")
            self._conn = conn
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"sqlite:///{self.path}", f"satellite write failed: {exc}"
            ) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], synchronous: str = "FULL") -> T:
        """``fn`` in one write transaction, durable as ``synchronous`` says."""

        def write(conn: sqlite3.Connection) -> T:
            if synchronous != "FULL":
                conn.execute(f"PRAGMA synchronous = {synchronous}")
            try:
                begin_immediate(conn, _LOCK_WAIT)
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if synchronous != "FULL":
                    conn.execute("PRAGMA synchronous = FULL")
            return result

        return await self._run(write)

    async def open(self, satellite_id: str | None, categories: Sequence[str]) -> State:
        """The satellite's state, made on first use; a file made for another satellite id
        or other categories is refused."""
        wanted = ",".join(categories)
        self._categories = frozenset(categories)

        def load(conn: sqlite3.Connection) -> State:
            row = conn.execute(Q["state"]).fetchone()
            if row is None:
                conn.execute(Q["create_state"], (satellite_id or str(uuid.uuid4()), wanted))
                row = conn.execute(Q["state"]).fetchone()
            state = State(row[0], tuple(row[1].split(",")), *row[2:])
            if satellite_id is not None and state.satellite_id != satellite_id:
                raise ConfigurationError(
                    f"{self.path} is the file of satellite {state.satellite_id!r}, "
                    f"not {satellite_id!r}"
                )
            if ",".join(state.categories) != wanted:
                raise ConfigurationError(
                    f"{self.path} replicates {list(state.categories)}, not {list(categories)}: "
                    "use a new file for other categories"
                )
            return state

        return await self._write(load)

    async def state(self) -> State:
        """Where the satellite stands now."""
        row = await self._run(lambda c: c.execute(Q["state"]).fetchone())
        if row is None:
            raise NotFound(f"{self.path} is not a satellite's file")
        return State(row[0], tuple(row[1].split(",")), *row[2:])

    async def record(
        self, planned: Sequence[PreparedAppend], body: Callable[[int], bytes]
    ) -> tuple[int, list[AppendResult]]:
        """Record a local transaction after checking its expected versions against the
        replica with the pending transactions on top: its seq and provisional results
        (position 0: not in the server's log yet). ``WrongExpectedVersion`` writes nothing."""

        def record(conn: sqlite3.Connection) -> tuple[int, list[AppendResult]]:
            versions: dict[str, int | None] = {}
            results: list[AppendResult] = []
            for part in planned:
                if part.stream not in versions:
                    versions[part.stream] = _overlay_version(conn, part.stream)
                current = versions[part.stream]
                check_expected(part, current)
                first = 0 if current is None else current + 1
                last = first + len(part.events) - 1
                versions[part.stream] = last
                results.append(AppendResult(part.stream, first, last, 0))
            seq = int(conn.execute(Q["state"]).fetchone()[4]) + 1
            conn.execute(Q["insert_pending"], (seq, body(seq).decode(), now_ms()))
            counts: dict[str, int] = {}
            for part in planned:
                counts[part.stream] = counts.get(part.stream, 0) + len(part.events)
            conn.executemany(Q["insert_pending_stream"], [(s, seq, n) for s, n in counts.items()])
            conn.execute(Q["set_last_seq"], (seq,))
            return seq, results

        return await self._write(record)

    async def undecided(self, after: int, limit: int) -> list[tuple[int, str]]:
        """Pending transactions after seq ``after`` the server has not accepted yet."""
        return await self._run(lambda c: c.execute(Q["undecided"], (after, limit)).fetchall())

    async def decide(self, verdicts: Sequence[Verdict]) -> list[tuple[int, Verdict]]:
        """Record the server's verdicts: accepted ones wait for their confirmed copies,
        conflicts and rejections move to the conflict list. The refused ones, as
        (seq, verdict), for the conflict callbacks."""

        def decide(conn: sqlite3.Connection) -> list[tuple[int, Verdict]]:
            refused: list[tuple[int, Verdict]] = []
            top = 0
            for given in verdicts:
                verdict = given.stored if given.verdict == "duplicate" else given
                if verdict is None or given.seq is None:
                    continue
                seq = given.seq
                if verdict.verdict == "out_of_order":
                    continue  # undecided still
                top = max(top, seq)  # decided on the server, whatever became of it here
                mine = conn.execute(Q["pending_body"], (seq,)).fetchone()
                if mine is None or not _same_transaction(verdict, mine[0]):
                    continue  # not pending here, or another history's transaction
                if verdict.verdict == "accepted":
                    conn.execute(Q["accept"], (_in_replica_at(verdict, self._categories), seq))
                elif verdict.verdict in ("conflict", "rejected"):
                    encoded = msgspec.json.encode(verdict).decode()
                    conn.execute(Q["insert_conflict"], (seq, mine[0], encoded, now_ms()))
                    conn.execute(Q["drop_pending"], (seq,))
                    conn.execute(Q["drop_pending_streams"], (seq,))
                    refused.append((seq, verdict))
            conn.execute(Q["set_decided"], (top,))
            return refused

        return await self._write(decide)

    async def renumber(self, first: int, after: int) -> list[tuple[int, int]]:
        """Number the undecided pending transactions from seq ``first`` on again, in their
        order, right after the server's last decided seq ``after``: their seqs were
        decided for other transactions (this file was restored from an older copy). How
        Verdicts up to ``after`` are another history's: none is asked for again. The moves,
        as (old seq, new seq)."""

        def renumber(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            rows = conn.execute(Q["undecided_from"], (first,)).fetchall()
            for offset, (seq, _) in enumerate(rows, 1):  # out of the way of the new numbers
                conn.execute(Q["move_pending"], (-offset, None, seq))
                conn.execute(Q["move_pending_streams"], (-offset, seq))
            for offset, (_, body) in enumerate(rows, 1):
                found: Any = msgspec.json.decode(body)
                found["seq"] = after + offset
                moved = msgspec.json.encode(found).decode()
                conn.execute(Q["move_pending"], (after + offset, moved, -offset))
                conn.execute(Q["move_pending_streams"], (after + offset, -offset))
            if rows:
                conn.execute(Q["set_last_seq"], (after + len(rows),))
                conn.execute(Q["set_decided"], (after,))
            return [(seq, after + offset) for offset, (seq, _) in enumerate(rows, 1)]

        return await self._write(renumber)

    async def land(self, page: PulledPage) -> list[int]:
        """Write a pulled page, its cursor and verdicts in one transaction; the seqs of
        the accepted transactions it confirms (dropped from the overlay with it)."""

        def land(conn: sqlite3.Connection) -> list[int]:
            versions: dict[str, int] = {}
            values: list[Any] = []
            for e in page.events:
                stream = e.stream
                versions[stream] = e.version
                values += (
                    e.position,
                    e.id.bytes,
                    stream,
                    e.version,
                    e.type,
                    str(e.data, "utf-8"),
                    str(e.metadata, "utf-8"),
                    round(e.time.timestamp() * 1000),
                    stream.partition("-")[0],
                )
            # Many rows a statement: one step and one release of the GIL for them all; a
            # step a row waits for the event loop's thread (decoding the next page) each time.
            start = 0
            for count in row_counts(len(values) // _INSERT_WIDTH, _ROWS_PER_INSERT):
                end = start + count * _INSERT_WIDTH
                conn.execute(_insert_events(count), values[start:end])
                start = end
            conn.executemany(Q["upsert_stream"], list(versions.items()))
            if page.events:
                last = page.events[-1]
                conn.execute(Q["set_head"], (last.position, _ms(last.time)))
            conn.execute(Q["set_cursor"], (page.cursor, now_ms()))
            confirmed = [r[0] for r in conn.execute(Q["confirmed_seqs"], (page.cursor,))]
            for seq in confirmed:
                conn.execute(Q["drop_pending"], (seq,))
                conn.execute(Q["drop_pending_streams"], (seq,))
            return confirmed

        # The replica may be pulled again: a page lands with synchronous=NORMAL. A power
        # loss can take back the last pages with their cursor (and the pending rows they
        # dropped), which the next pull lands again; local transactions and verdicts,
        # which cannot be pulled again, commit with FULL.
        return await self._write(land, synchronous="NORMAL")

    async def set_identity(self, identity: str) -> None:
        """Remember the server store the replica comes from."""
        await self._write(lambda c: c.execute(Q["set_identity"], (identity,)))

    async def pending_of(self, stream: str) -> list[tuple[int, str]]:
        """The pending transactions that write ``stream``, in order, as (seq, body)."""
        return await self._run(lambda c: c.execute(Q["pending_of_stream"], (stream,)).fetchall())

    async def pending_count(self, stream: str) -> int:
        """How many pending events ``stream`` has."""
        row = await self._run(
            lambda c: c.execute(Q["pending_count_of_stream"], (stream,)).fetchone()
        )
        return int(row[0])

    async def counts(self) -> tuple[int, int, int]:
        """Pending transactions, how many of them are accepted, and conflicts."""

        def counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
            pending, accepted = conn.execute(Q["pending_counts"]).fetchone()
            (conflicts,) = conn.execute(Q["conflict_count"]).fetchone()
            return int(pending), int(accepted), int(conflicts)

        return await self._run(counts)

    async def conflicts(self) -> list[tuple[int, str, str, int]]:
        """Every recorded conflict as (seq, body, verdict, decided_ms)."""
        return await self._run(lambda c: c.execute(Q["conflicts"]).fetchall())

    async def drop_conflict(self, seq: int) -> bool:
        """Forget a conflict; whether there was one."""
        return bool(await self._write(lambda c: c.execute(Q["drop_conflict"], (seq,)).rowcount))

    async def close(self) -> None:
        """Close the connection and stop the thread."""

        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self._run(close)
            self._conn = None
        self._pool.shutdown(wait=True)


_INSERT_WIDTH = 9  # the columns of insert_event
_ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_events(rows: int) -> str:
    """``insert_event`` for ``rows`` rows in one statement."""
    head, _, values = Q["insert_event"].partition("VALUES")
    return f"{head}VALUES {', '.join([values.strip().rstrip(';')] * rows)}"


def _same_transaction(verdict: Verdict, body: str) -> bool:
    """Whether ``verdict`` is about the pending transaction ``body`` (its first event's
    id, when the verdict names one): a file restored from an older copy gives its seqs
    to new transactions, and the server's verdicts on the old ones are not about them."""
    if verdict.first is None:
        return True
    found: Any = msgspec.json.decode(body)
    for part in found["appends"]:
        for event in part["events"]:
            return bool(event.get("id") == verdict.first)
    return True


def _in_replica_at(verdict: Verdict, categories: frozenset[str]) -> int | None:
    """The cursor past which an accepted transaction's events are all in the replica: its
    last event in the replicated categories. Not its verdict's position (the
    transaction's last, in ``$sync``): a full pull page ends before the verdict, and
    the transaction would be shown twice, confirmed and pending, until the next page.
    The verdict's position when the appends' places are not known, or none replicates."""
    mine = [r.position for r in verdict.results or () if category_of(r.stream) in categories]
    return max(mine) if mine else verdict.position


def _overlay_version(conn: sqlite3.Connection, stream: str) -> int | None:
    row = conn.execute("SELECT version FROM tidings_streams WHERE name = ?", (stream,)).fetchone()
    pending = int(conn.execute(Q["pending_count_of_stream"], (stream,)).fetchone()[0])
    if row is None:
        return None if pending == 0 else pending - 1
    return int(row[0]) + pending


def decoded(body: str) -> Any:
    """A stored transaction body as JSON."""
    return msgspec.json.decode(body)
