"""A satellite's sync loop: push the pending transactions in order, pull its categories,
rebase; then wait for the server's head to move (a long poll) or for a local write.

The long poll is only a wake-up: what is replicated goes through the pull cursor,
which lands in the local file with the events it passes. A round that cannot reach the
server marks the satellite offline and is retried with backoff; a push whose reply was
lost is simply pushed again (the server answers ``duplicate`` with its stored verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec

from tidings.client.store import RemoteStore
from tidings.errors import StoreChanged, TidingsError
from tidings.events import Expected, NewEvent
from tidings.satellite.local import LocalFile, PulledPage, State, decoded
from tidings.store.rows import time_from_ms
from tidings.wire import expected_from_wire
from tidings.wire_sync import PushResult, Verdict

log = logging.getLogger("tidings.satellite")
PUSH_BATCH = 500
PULL_PAGE = 1000
_FIRST_BACKOFF = 0.25
_MAX_BACKOFF = 10.0


class LocalAppend(NamedTuple):
    """One append of a local transaction: the stream, its events, the expected version."""

    stream: str
    events: list[NewEvent]
    expected_version: Expected


class Conflict(msgspec.Struct, frozen=True):
    """A local transaction the server refused: a stale expected version (``verdict``
    is ``conflict``, with ``stream``, ``expected`` and ``actual``) or a rejection (with
    ``reason``). It stays until the app drops it or decides again."""

    seq: int
    appends: list[LocalAppend]
    verdict: Verdict
    decided: datetime

    @property
    def stream(self) -> str | None:
        """The stream whose version was not the expected one (None for a rejection)."""
        return self.verdict.stream

    @property
    def actual(self) -> int | None:
        """That stream's version on the server when the transaction was decided."""
        return self.verdict.actual


class SatelliteStatus(msgspec.Struct, frozen=True):
    """Where a satellite stands: online or not, when it last synced, its pending
    transactions (of which ``accepted`` await their confirmed copies), its conflicts,
    the server position it has replicated up to, and the last error."""

    satellite_id: str
    online: bool
    last_sync: datetime | None
    pending: int
    accepted: int
    conflicts: int
    position: int
    server_identity: str | None
    last_error: str | None


class Syncer:
    """The background sync of one satellite (see the module's docstring)."""

    def __init__(
        self,
        file: LocalFile,
        remote: RemoteStore,
        state: State,
        committed: Callable[[int, str | None], None],
        on_conflict: Callable[[Conflict], Awaitable[None] | None] | None,
        long_poll: float,
    ) -> None:
        self.file = file
        self.remote = remote
        self.satellite_id = state.satellite_id
        self.categories = ",".join(state.categories)
        self.online = False
        self.last_error: str | None = "not synced yet"
        self._committed = committed
        self._on_conflict = on_conflict
        self._long_poll = long_poll
        self._kick = asyncio.Event()
        self._push_waiters: dict[int, asyncio.Future[Verdict | None]] = {}
        self._round_waiters: list[asyncio.Future[None]] = []
        self._conflict_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.last_status: SatelliteStatus | None = None
        """The status as of the end of the last round (for metrics, read without I/O)."""
        self.pull_page = PULL_PAGE
        self.fault: Callable[[str], None] | None = None
        """For fault tests: called at ``"push"`` (before a push is sent), ``"pushed"``
        (the server has decided, its reply not yet recorded) and ``"pulled"`` (a page
        landed); what it raises ends the round there, as a crash would."""

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=f"tidings-satellite-{self.satellite_id}")

    async def stop(self) -> None:
        """Stop the loop and close the connection to the server."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._callbacks):
            task.cancel()
        self._settle_pushes(None)
        self._settle_rounds(TidingsError("the satellite is closed"))
        await self.remote.close()

    async def round(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Wait for a whole round that starts after this call (its error, if it failed)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._round_waiters.append(waiter)
        self._kick.set()
        await asyncio.wait_for(waiter, timeout)

    async def push_now(self, seq: int, timeout: float) -> Verdict | None:  # noqa: ASYNC109
        """Push at once and wait for the verdict on ``seq``; None if the server cannot be
        reached (or does not answer in ``timeout`` seconds)."""
        waiter: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._push_waiters[seq] = waiter
        self._kick.set()
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:  # under its seq, or the one it was numbered again with
            for key in [k for k, w in self._push_waiters.items() if w is waiter]:
                del self._push_waiters[key]

    # -- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stopping:
            waiting, self._round_waiters = self._round_waiters, []
            self._kick.clear()
            try:
                await self._push()
                await self._pull()
            except StoreChanged as exc:
                await self._went_offline(exc, waiting)
                log.error("satellite %s: %s; sync stopped", self.satellite_id, exc)
                return
            except Exception as exc:  # offline, or a server that refuses: retry later
                await self._went_offline(exc, waiting)
                log.warning("satellite %s offline: %s", self.satellite_id, exc)
                await self._pause(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.online, self.last_error, backoff = True, None, _FIRST_BACKOFF
            await self._note_status()
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)
            if not self._kick.is_set():
                await self._idle()

    async def _note_status(self) -> None:
        with contextlib.suppress(TidingsError):
            self.last_status = await self.status()

    async def _went_offline(self, exc: BaseException, waiting: list[asyncio.Future[None]]) -> None:
        self.online = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        await self._note_status()
        self._settle_pushes(None)
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(exc)

    def _settle_pushes(self, verdict: Verdict | None) -> None:
        for waiter in self._push_waiters.values():
            if not waiter.done():
                waiter.set_result(verdict)

    def _settle_rounds(self, exc: BaseException) -> None:
        for waiter in self._round_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._round_waiters = []

    async def _pause(self, seconds: float) -> None:
        """Sleep, or less if a local write or a sync() call kicks."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), seconds)

    async def _idle(self) -> None:
        """Wait for the server's head to pass the cursor, or for a kick."""
        state = await self.file.state()
        poll = asyncio.create_task(self.remote.wait_for(state.cursor + 1, timeout=self._long_poll))
        kick = asyncio.create_task(self._kick.wait())
        try:
            await asyncio.wait({poll, kick}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (poll, kick):
                task.cancel()
            for task in (poll, kick):
                with contextlib.suppress(asyncio.CancelledError, TimeoutError, TidingsError):
                    await task

    async def _push(self) -> None:
        while True:
            rows = await self.file.undecided(0, PUSH_BATCH)
            if not rows:
                return
            body = b"".join(
                (
                    b'{"satellite_id":',
                    msgspec.json.encode(self.satellite_id),
                    b',"transactions":[',
                    b",".join(row[1].encode() for row in rows),
                    b"]}",
                )
            )
            self._at("push")
            reply = await self.remote.request("POST", "/sync/push", PushResult, body=body)
            self._at("pushed")
            await self._decided(reply.verdicts)
            stuck = [v.seq for v in reply.verdicts if v.verdict == "out_of_order" and v.seq]
            if stuck:
                # Seqs another history decided (this file restored from an older copy):
                # the rest go again, numbered after the server's last, in their order.
                moved = await self.file.renumber(min(stuck), reply.last_seq)
                log.warning(
                    "satellite %s: %d pending transactions numbered again after seq %d",
                    self.satellite_id,
                    len(moved),
                    reply.last_seq,
                )
                waiting = {old: self._push_waiters.pop(old, None) for old, _ in moved}
                for old, new in moved:  # a writer waiting for its verdict follows it
                    waiter = waiting[old]
                    if waiter is not None:
                        self._push_waiters[new] = waiter
                if not moved:
                    raise TidingsError(
                        f"the server has decided up to seq {reply.last_seq} of satellite "
                        f"{self.satellite_id} and cannot take {min(stuck)}"
                    )
                continue
            if len(rows) < PUSH_BATCH:
                return

    async def _pull(self) -> None:
        """Pull pages until caught up; the next page is asked for while one lands."""
        state = await self.file.state()
        cursor, decided, identity = state.cursor, state.decided_seq, state.server_identity
        fetch = asyncio.ensure_future(self._fetch(cursor, decided))
        try:
            while True:
                page = await fetch
                if page.identity is not None and page.identity != identity:
                    if identity is not None:
                        raise StoreChanged(identity, page.identity)
                    await self.file.set_identity(page.identity)
                    identity = page.identity
                decided = max([decided, *(v.seq for v in page.verdicts if v.seq is not None)])
                if page.events:
                    fetch = asyncio.ensure_future(self._fetch(page.cursor, decided))
                if page.verdicts:
                    await self._decided(page.verdicts)
                if page.events or page.cursor != cursor:
                    await self.file.land(page)
                    cursor = page.cursor
                    if page.events:
                        self._committed(page.events[-1].position, identity)
                    self._at("pulled")
                if not page.events:
                    return
        finally:
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, TidingsError):
                    await fetch

    async def _fetch(self, cursor: int, decided: int) -> PulledPage:
        params = {
            "satellite_id": self.satellite_id,
            "categories": self.categories,
            "cursor": cursor,
            "seq_after": decided,
            "limit": self.pull_page,
        }
        return await self.remote.request("GET", "/sync/pull", PulledPage, params=params)

    def _at(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    async def _decided(self, verdicts: list[Verdict]) -> None:
        refused = await self.file.decide(verdicts)
        told: set[int] = set()
        for verdict in verdicts:
            if verdict.verdict == "out_of_order":
                continue  # not decided: it goes again (a writer waiting for it times out)
            waiter = self._push_waiters.get(verdict.seq) if verdict.seq is not None else None
            if waiter is not None and not waiter.done():
                waiter.set_result(verdict)
                told.add(verdict.seq)  # type: ignore[arg-type]
        for seq, _ in refused:
            if seq in told:  # the writer hears of it as an error: nothing to keep
                await self.file.drop_conflict(seq)
                continue
            self._conflict_seen.set()
            self._conflict_seen = asyncio.Event()
            if self._on_conflict is not None:
                found = [c for c in await self.conflicts() if c.seq == seq]
                if found:
                    self._call_back(found[0])

    def _call_back(self, conflict: Conflict) -> None:
        assert self._on_conflict is not None
        try:
            outcome = self._on_conflict(conflict)
        except Exception:
            log.exception("satellite %s: on_conflict failed", self.satellite_id)
            return
        if inspect.isawaitable(outcome):

            async def wait() -> None:
                try:
                    await outcome
                except Exception:
                    log.exception("satellite %s: on_conflict failed", self.satellite_id)

            task = asyncio.create_task(wait(), name=f"tidings-satellite-conflict-{conflict.seq}")
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    # -- what the app reads ---------------------------------------------------------

    async def status(self) -> SatelliteStatus:
        """The satellite's status now."""
        return standing(
            await self.file.state(), await self.file.counts(), self.online, self.last_error
        )

    async def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        return [_conflict(*row) for row in await self.file.conflicts()]

    async def drop_conflict(self, seq: int) -> bool:
        """Forget a conflict."""
        return await self.file.drop_conflict(seq)

    async def feed(self) -> AsyncIterator[Conflict]:
        """Every recorded conflict, then each new one."""
        last = 0
        while True:
            seen = self._conflict_seen
            for conflict in await self.conflicts():
                if conflict.seq > last:
                    last = conflict.seq
                    yield conflict
            await seen.wait()


def standing(
    state: State, counts: tuple[int, int, int], online: bool, error: str | None
) -> SatelliteStatus:
    """A status from the file's state and counts (pending, accepted, conflicts)."""
    pending, accepted, conflicts = counts
    synced = None if state.synced_ms is None else time_from_ms(state.synced_ms)
    return SatelliteStatus(
        state.satellite_id,
        online,
        synced,
        pending,
        accepted,
        conflicts,
        state.cursor,
        state.server_identity,
        error,
    )


def _conflict(seq: int, body: str, verdict: str, decided_ms: int) -> Conflict:
    found: Any = decoded(body)
    appends = [
        LocalAppend(
            part["stream"],
            [NewEvent(e["type"], e["data"], e["metadata"], UUID(e["id"])) for e in part["events"]],
            expected_from_wire(part.get("expected_version")),
        )
        for part in found["appends"]
    ]
    return Conflict(
        seq, appends, msgspec.json.decode(verdict, type=Verdict), time_from_ms(decided_ms)
    )
