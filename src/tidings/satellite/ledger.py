"""The server side of satellite sync: pushed transactions applied exactly once, in order,
each with a stored verdict; pulls of the satellite's categories with those verdicts.

Written once against the ``EventStore`` protocol, with nothing of its own to store: a
satellite's verdicts are events of its verdict stream ``$sync-<satellite id>``, the
verdict of sequence number ``n`` at version ``n - 1``. A transaction lands together
with its verdict, appended with the expected version ``n - 2``; so the store's own
optimistic concurrency makes a sequence number decided at most once, in order, across
retries, racing pushes and nodes, on every backend (ADR 26).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from tidings.errors import DuplicateEventId, InvalidInput, TidingsError, WrongExpectedVersion
from tidings.events import (
    NO_STREAM,
    AppendResult,
    Audit,
    Expected,
    Filter,
    NewEvent,
    RecordedEvent,
    category_of,
)
from tidings.store.base import EventStore, Transaction
from tidings.wire import expected_from_wire, expected_to_wire
from tidings.wire_sync import PushedTransaction, SyncPage, Verdict, decode_transaction

VERDICT_CATEGORY = "$sync"
VERDICT_TYPE = "tidings.sync.verdict"
MAX_VERDICTS = 1000  # per pull
MAX_TRANSACTION_TAIL = 100_000  # events a pull may add to finish a transaction
MAX_RUN = 500  # transactions of a push committed at once

MayAppend = Callable[[str], bool]
"""Whether the pushing caller may append to a category."""


def verdict_stream(satellite_id: str) -> str:
    """The stream that holds a satellite's verdicts."""
    return f"{VERDICT_CATEGORY}-{satellite_id}"


class Ledger:
    """Applies a satellite's pushed transactions and serves its pulls, on one store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def last_seq(self, satellite_id: str) -> int:
        """The last sequence number decided for a satellite (0: none yet)."""
        version = await self.store.stream_version(verdict_stream(satellite_id))
        return 0 if version is None else version + 1

    async def push(
        self,
        satellite_id: str,
        transactions: Sequence[msgspec.Raw | PushedTransaction],
        may_append: MayAppend,
        user: str,
    ) -> tuple[list[Verdict], int]:
        """Decide each transaction in order, one database transaction each, never
        stopping at a failure; the verdicts and the satellite's last sequence number."""
        last = await self.last_seq(satellite_id)
        verdicts: list[Verdict] = []
        reused: int | None = None
        items = [
            item if isinstance(item, PushedTransaction) else decode_transaction(item)
            for item in transactions
        ]
        at = 0
        while at < len(items):
            found = items[at]
            if reused is not None and found.seq is not None:
                # Applying the ones after a reused seq would put them before it: its
                # satellite numbers it (and them) again after ``last`` and pushes again.
                reason = f"after seq {reused}, which is another transaction's"
                verdicts.append(Verdict(found.seq, "out_of_order", reason=reason))
                at += 1
                continue
            landed = await self._land_run(satellite_id, items, at, last, may_append, user)
            if landed:
                verdicts += landed
                at += len(landed)
                last += len(landed)
                continue
            verdict, last = await self._decide(satellite_id, found, may_append, user, last)
            if verdict.verdict == "out_of_order" and found.seq is not None and found.seq <= last:
                reused = found.seq
            verdicts.append(verdict)
            at += 1
        return verdicts, last

    async def _land_run(
        self,
        satellite_id: str,
        items: list[PushedTransaction | Verdict],
        at: int,
        last: int,
        may_append: MayAppend,
        user: str,
    ) -> list[Verdict]:
        """Commit the run of next-in-line transactions from ``items[at]`` at once, so that
        the store's group commit lands them in few database transactions; the accepted
        verdicts of the ones that landed, in order (a prefix of the run: each one's verdict
        expects the one before it). What did not land is decided one at a time after."""
        run: list[tuple[PushedTransaction, Transaction]] = []
        while at + len(run) < len(items) and len(run) < MAX_RUN:
            tx = items[at + len(run)]
            if not isinstance(tx, PushedTransaction) or tx.seq != last + len(run) + 1:
                break
            if _refusal(tx, may_append) is not None:
                break
            try:
                run.append((tx, self._prepared(satellite_id, tx, user)))
            except (InvalidInput, DuplicateEventId):
                break  # refused one at a time, with its reason
        if len(run) < 2:
            return []
        outcomes = await asyncio.gather(
            *(batch.commit() for _, batch in run), return_exceptions=True
        )
        landed: list[Verdict] = []
        for (tx, _), outcome in zip(run, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, TidingsError):
                    raise outcome
                break
            landed.append(_accepted(tx, outcome))
        for outcome in outcomes[len(landed) :]:  # decided again one at a time
            if isinstance(outcome, BaseException) and not isinstance(outcome, TidingsError):
                raise outcome
        return landed

    async def _decide(
        self,
        satellite_id: str,
        found: PushedTransaction | Verdict,
        may_append: MayAppend,
        user: str,
        last: int,
    ) -> tuple[Verdict, int]:
        seq = found.seq
        if seq is None:  # too malformed to know its place: nothing to store
            assert isinstance(found, Verdict)
            return found, last
        while True:
            if seq <= last:
                return await self._duplicate(satellite_id, found, last), last
            if seq > last + 1:
                return Verdict(seq, "out_of_order", reason=f"the next seq is {last + 1}"), last
            try:
                if isinstance(found, Verdict):  # malformed, but its place is known
                    return await self._record(satellite_id, found), seq
                return await self._apply(satellite_id, found, may_append, user), seq
            except _Raced:  # another push decided this seq first: it is a duplicate now
                last = await self.last_seq(satellite_id)

    def _prepared(self, satellite_id: str, tx: PushedTransaction, user: str) -> Transaction:
        """The store transaction that lands ``tx`` with its accepted verdict (validated:
        a bad event raises ``InvalidInput`` here, nothing sent)."""
        extra: dict[str, Any] = {} if tx.audit is None else dict(tx.audit.extra)
        extra.update({"satellite": satellite_id, "seq": tx.seq})
        audit = Audit(user if tx.audit is None else tx.audit.user, extra)
        shape = [[part.stream, len(part.events)] for part in tx.appends]
        batch = self.store.transaction(audit)
        for part in tx.appends:
            batch.append(part.stream, part.events, expected_from_wire(part.expected_version))
        record = {"seq": tx.seq, "verdict": "accepted", "appends": shape, "first": _first(tx)}
        batch.append(verdict_stream(satellite_id), [NewEvent(VERDICT_TYPE, record)], _after(tx.seq))
        return batch

    async def _apply(
        self, satellite_id: str, tx: PushedTransaction, may_append: MayAppend, user: str
    ) -> Verdict:
        """Land the transaction with its verdict, or store why it did not land."""
        seq = tx.seq
        reason = _refusal(tx, may_append)
        if reason is not None:
            return await self._record(satellite_id, Verdict(seq, "rejected", reason=reason), tx)
        try:
            results = await self._prepared(satellite_id, tx, user).commit()
        except WrongExpectedVersion as exc:
            if exc.stream == verdict_stream(satellite_id):
                raise _Raced from exc
            expected = expected_to_wire(exc.expected)
            conflict = Verdict(
                seq, "conflict", stream=exc.stream, expected=expected, actual=exc.actual
            )
            return await self._record(satellite_id, conflict, tx)
        except (InvalidInput, DuplicateEventId) as exc:
            return await self._record(satellite_id, Verdict(seq, "rejected", reason=str(exc)), tx)
        return _accepted(tx, results)

    async def _record(
        self, satellite_id: str, verdict: Verdict, tx: PushedTransaction | None = None
    ) -> Verdict:
        """Store a verdict of a transaction that did not land (its seq is decided)."""
        assert verdict.seq is not None
        if tx is not None:
            verdict.first = _first(tx)
        record = msgspec.to_builtins(verdict)
        try:
            await self.store.append(
                verdict_stream(satellite_id),
                [NewEvent(VERDICT_TYPE, record)],
                _after(verdict.seq),
            )
        except WrongExpectedVersion as exc:
            raise _Raced from exc
        return verdict

    async def _duplicate(
        self, satellite_id: str, found: PushedTransaction | Verdict, last: int
    ) -> Verdict:
        """The stored verdict of a seq decided before; ``out_of_order`` when it was decided
        for another transaction (other event ids: a satellite file restored from an older
        copy numbers new transactions again from where the copy stood)."""
        seq = found.seq
        assert seq is not None
        stream = verdict_stream(satellite_id)
        events = [e async for e in self.store.read_stream(stream, seq - 1, limit=1)]
        if not events:
            return Verdict(seq, "duplicate")
        first = events[0].data.get("first")
        if isinstance(found, PushedTransaction) and first is not None and first != _first(found):
            reason = (
                f"seq {seq} was decided for another transaction (a satellite file restored "
                f"from an older copy?): number it after {last} and push it again"
            )
            return Verdict(seq, "out_of_order", reason=reason)
        return Verdict(seq, "duplicate", stored=await self._stored(events[0]))

    async def verdicts(
        self, satellite_id: str, after: int, limit: int = MAX_VERDICTS
    ) -> list[Verdict]:
        """The stored verdicts of the sequence numbers after ``after``, in order."""
        if after < 0:
            raise InvalidInput(f"seq_after must be >= 0, not {after}")
        stream = verdict_stream(satellite_id)
        found = [e async for e in self.store.read_stream(stream, after, limit=limit)]
        return [await self._stored(e) for e in found]

    async def _stored(self, event: RecordedEvent) -> Verdict:
        data = event.data
        if data.get("verdict") != "accepted":
            return msgspec.convert(data, Verdict)
        return Verdict(
            data["seq"],
            "accepted",
            results=await self._results(event.position, data["appends"]),
            position=event.position,
            first=data.get("first"),
        )

    async def _results(self, position: int, shape: list[list[Any]]) -> list[AppendResult] | None:
        """Where an accepted transaction's appends landed: its events sit right before
        its verdict, the last of the transaction (a transaction's positions are
        contiguous). None if the log does not show that shape (an append replayed by id)."""
        total = sum(count for _, count in shape)
        events = [e async for e in self.store.read_all(position - total - 1, limit=total)]
        results: list[AppendResult] = []
        for stream, count in shape:
            part, events = events[:count], events[count:]
            if len(part) != count or any(e.stream != stream for e in part):
                return None
            results.append(
                AppendResult(stream, part[0].version, part[-1].version, part[-1].position)
            )
        return results

    async def pull(
        self,
        satellite_id: str,
        categories: Sequence[str],
        cursor: int,
        limit: int,
        seq_after: int,
    ) -> SyncPage:
        """The next events of ``categories`` after ``cursor``, a page that does not end
        inside a transaction that has an audit record, and the verdicts after ``seq_after``."""
        head = await self.store.head()
        found = Filter(categories)
        events = [e async for e in self.store.read_all(cursor, found, limit=limit)]
        if limit and len(events) == limit:
            events += await self._finish_transaction(events[-1], found)
            following = events[-1].position
        else:
            following = max(head, cursor, events[-1].position if events else 0)
        last = await self.last_seq(satellite_id)
        verdicts = await self.verdicts(satellite_id, seq_after) if seq_after < last else []
        return SyncPage(events, following, head, last, verdicts, self.store.identity)

    async def _finish_transaction(self, last: RecordedEvent, found: Filter) -> list[RecordedEvent]:
        """The events of ``last``'s transaction that come after it (none without audit)."""
        record = await self.store.audit(last)
        if record is None:
            return []
        tail: list[RecordedEvent] = []
        after, size = last.position, 1  # most pages end at a boundary: look at one first
        while len(tail) < MAX_TRANSACTION_TAIL:
            page = [e async for e in self.store.read_all(after, found, limit=size)]
            for event in page:
                other = await self.store.audit(event)
                if other is None or other.id != record.id:
                    return tail
                tail.append(event)
            if len(page) < size:
                return tail
            after, size = page[-1].position, min(size * 10, 1000)
        return tail


def _refusal(tx: PushedTransaction, may_append: MayAppend) -> str | None:
    """Why ``tx`` may not land whatever the store's state (None: it may)."""
    if not tx.appends:
        return "the transaction has no appends"
    for part in tx.appends:
        category = category_of(part.stream)
        if category == VERDICT_CATEGORY:
            return f"stream {part.stream!r}: the {VERDICT_CATEGORY} category is the server's"
        if not may_append(category):
            return f"forbidden: may not append to category {category!r}"
    return None


def _accepted(tx: PushedTransaction, results: list[AppendResult]) -> Verdict:
    """The verdict of ``tx`` landed with ``results`` (its verdict's result last)."""
    return Verdict(
        tx.seq, "accepted", results=results[:-1], position=results[-1].position, first=_first(tx)
    )


def _first(tx: PushedTransaction) -> str | None:
    """The id of a pushed transaction's first event, stored with its verdict so that a
    replay can be told from another transaction under the same seq."""
    for part in tx.appends:
        for event in part.events:
            return None if event.id is None else str(event.id)
    return None


class _Raced(Exception):
    """The verdict stream moved under us: another push decided this seq."""


def _after(seq: int) -> Expected:
    """The expected version of the verdict stream before ``seq``'s verdict."""
    return NO_STREAM if seq == 1 else seq - 2
