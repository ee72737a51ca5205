"""One stream's delivery loop: batches from the checkpoint, one in flight, retried until
delivered, blocked or parked; the checkpoint moves only past what was delivered (or
parked, under ``skip``).

Every write names the runner's node and the stream's generation, so a runner whose
stream was changed, stopped or taken over writes nothing more: its write changes no
row and it stops (``Lost``). Before a batch is sent its number and last position are
stored, so a runner that takes over after a crash sends that very batch again, with
the same number and id, before any new one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidings.delivery.definitions import Definition, Effective, effective, parse
from tidings.delivery.records import Row
from tidings.delivery.webhook import RESPONSE_KEPT, Batch, Outcome
from tidings.events import Filter, RecordedEvent
from tidings.store.rooms import Step
from tidings.subscriptions.feed import LogFeed

if TYPE_CHECKING:
    from tidings.delivery.streams import EventStreams

log = logging.getLogger("tidings.delivery")

IDLE_CHECK = 2.0
"""Seconds without a batch after which a filtered-out stretch moves the checkpoint."""

Deliver = Callable[[Batch], Awaitable[Outcome]]
"""Sends one batch once (a webhook post, a consumer's ack) and says how it went."""


class Lost(Exception):
    """The stream changed under the runner (stopped, reset, redefined, taken over)."""


class Stopping(Exception):
    """The node asked the runner to stop while a batch waits for its next attempt."""


def batch_id(stream_id: str, number: int) -> str:
    """The id of a stream's batch ``number``: the same on every attempt and every node."""
    return str(uuid.uuid5(_namespace(stream_id), str(number)))


@functools.lru_cache(maxsize=4096)
def _namespace(stream_id: str) -> uuid.UUID:
    return uuid.UUID(stream_id)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Runner:
    """Delivers one stream, as ``owner``, at the generation of ``row``."""

    def __init__(self, streams: EventStreams, row: Row, owner: str, deliver: Deliver) -> None:
        self.streams = streams
        self.row = row
        self.owner = owner
        self.generation = row.generation
        self.deliver = deliver
        self.definition: Definition = parse(row.definition)
        self.settings: Effective = effective(self.definition, streams.defaults)
        self.filter: Filter = self.definition.filter.to_filter()
        self.checkpoint = row.checkpoint
        self.failing_since_ms = row.failing_since_ms
        self._room = streams.room
        self._stopping = asyncio.Event()
        self._writing: asyncio.Task[None] | None = None
        self._complete = False
        """Whether the stored status says caught up (set once per idle spell)."""

    def stop(self) -> None:
        """Stop after the attempt in progress (a batch waiting to be retried stays in
        flight: whoever runs the stream next sends it again, with the same id)."""
        self._stopping.set()

    def _key(self) -> tuple[str, str, int]:
        return (self.row.id, self.owner, self.generation)

    async def _write(self, query: str, *args: object) -> None:
        """A write that must land as this runner; ``Lost`` when it does not."""
        await self._settle()
        if not await self._room.run(query, *self._key(), *args):
            raise Lost(query)

    async def _settle(self) -> None:
        """Wait for the landing write in flight, if any (``Lost`` if it found the stream
        changed). Writes land one at a time, in batch order."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _land(self, args: tuple[object, ...]) -> None:
        if not await self._room.run("landed", *args):
            raise Lost("landed")

    async def run(self) -> None:
        """Deliver until stopped (cancelled), changed under it (``Lost``) or halted."""
        store = self.streams.store
        size = self.settings.batch_size
        number = self.row.batch_number
        start = self.checkpoint
        pending: list[RecordedEvent] | None = None
        inflight = self.row.inflight_last
        if inflight is not None and inflight > self.checkpoint:
            pending = [
                e async for e in store.read_all(self.checkpoint, self.filter, limit=size)
                if e.position <= inflight
            ]  # fmt: skip
            # The feed goes on after what is resent, not after the old batch's end: a
            # redefinition (a smaller batch_size, a wider filter) may resend less of it.
            start = pending[-1].position if pending else self.checkpoint
            pending = pending or None
        name = f"eventstream {self.row.name}"
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            for request in await self._room.rows("redeliveries", self.row.id):
                number = await self._redeliver(request, number)
            # Raw: events are passed on, not looked into, so their JSON is not decoded.
            async with LogFeed(store, start, self.filter, max(size, 100), name, True) as feed:
                # The batch in flight keeps its own number: redelivered batches may
                # have taken later ones since it was handed out.
                own = self.row.inflight_number or self.row.batch_number
                await self._loop(feed, pending, own, number, stopping)
                await self._settle()
        except Stopping:
            await self._settle()
        finally:
            stopping.cancel()
            if self._writing is not None:  # cancelled: the write may or may not land
                self._writing.cancel()

    async def _loop(
        self,
        feed: LogFeed,
        pending: list[RecordedEvent] | None,
        pending_number: int,
        number: int,
        stopping: asyncio.Future[Any],
    ) -> None:
        """Send ``pending`` (the batch in flight, numbered ``pending_number``), then each
        new batch; ``number`` is the last number handed out."""
        size = self.settings.batch_size
        while not self._stopping.is_set():
            if pending is None:
                if not await feed.wait((stopping,), IDLE_CHECK):
                    if not self._stopping.is_set():
                        await self._idle(feed)
                    continue
                pending = await feed.batch(size, self.settings.batch_timeout)
                number += 1
                pending_number = number
                await self._write("hand_out", number, pending[-1].position)
            landed, pending = await self._send(pending, pending_number, feed, number + 1)
            if not landed:
                return  # halted
            if pending is not None:
                number += 1  # handed out with the checkpoint move
                pending_number = number

    async def _redeliver(self, request: tuple[Any, ...], number: int) -> int:
        """Send a requested range again (of the log up to the checkpoint, or of the parked
        events), in batches with new numbers, without moving the checkpoint; parked events
        that land are parked no more. A range that cannot be delivered within
        ``retry_timeout`` is given up (its attempts say so). The last number used."""
        request_id, first, last, parked = request
        store = self.streams.store
        size = self.settings.batch_size
        wanted: set[int] | None = None
        if parked:
            rows = await self._room.rows("parked_between", self.row.id, first, last)
            wanted = {int(p) for (p,) in rows}
        after = int(first) - 1
        while after < last and (wanted is None or wanted):
            read = [e async for e in store.read_all(after, self.filter, limit=size)]
            events = [e for e in read if e.position <= last]
            if not events:
                break
            after = events[-1].position
            if wanted is not None:
                events = [e for e in events if e.position in wanted]
                if not events:
                    continue
            number += 1
            await self._write("number_batch", number)
            batch = Batch(self.row.name, batch_id(self.row.id, number), number, events)
            if not await self._send_again(batch):
                log.warning("event stream %s: redelivery %s given up", self.row.name, request_id)
                break
            if wanted is not None:
                await self._room.run("unpark", self.row.id, events[0].position, after)
                wanted.difference_update(e.position for e in events)
        await self._room.run("redelivered", request_id)
        return number

    async def _send_again(self, batch: Batch) -> bool:
        """One redelivered batch, retried with backoff until ``retry_timeout``."""
        delay = self.streams.defaults.retry_first
        deadline = time.monotonic() + self.settings.retry_timeout
        while True:
            outcome = await self.deliver(batch)
            values = self._attempt(batch, outcome, _now_ms())[:-1]
            await self._room.run("redelivery_attempt", *values)
            if outcome.delivered:
                return True
            if outcome.outcome == "gone" or time.monotonic() >= deadline:
                return False
            await self._pause(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.streams.defaults.retry_max)

    async def _pause(self, seconds: float) -> None:
        """Sleep before the next attempt; ``Stopping`` if the node stops meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise Stopping

    async def _idle(self, feed: LogFeed) -> None:
        """Caught up: move the checkpoint over a stretch the filter left out, up to the
        head, when nothing the stream delivers lies in it."""
        store = self.streams.store
        head = await store.head()
        if feed.buffered:
            return
        if head <= self.checkpoint:
            if not self._complete:
                await self._write("mark", "complete")
                self._complete = True
            return
        first = [e async for e in store.read_all(self.checkpoint, self.filter, limit=1)]
        if first and first[0].position <= head:
            return  # the feed brings it
        await self._settle()
        if await self._room.run("skip_to", *self._key(), head):
            self.checkpoint = head
            self._complete = True

    async def _send(
        self, events: list[RecordedEvent], number: int, feed: LogFeed, next_number: int
    ) -> tuple[bool, list[RecordedEvent] | None]:
        """Deliver one batch until it lands or is parked (True) or the stream is halted
        (False); with it, the next batch when a full one is ready at once.

        A landed batch costs one transaction: the attempt, the checkpoint move and,
        when the next batch is full already, that batch's hand-out.
        """
        settings = self.settings
        batch = Batch(self.row.name, batch_id(self.row.id, number), number, events)
        delay = self.streams.defaults.retry_first
        first_failure: float | None = None
        while True:
            outcome = await self.deliver(batch)
            now_ms = _now_ms()
            if outcome.delivered:
                following = None if self._stopping.is_set() else feed.ready(settings.batch_size)
                await self._settle()
                self.checkpoint = events[-1].position
                self.failing_since_ms = None
                self._complete = False
                handed = (
                    (None, None) if following is None else (next_number, following[-1].position)
                )
                landed = self._land(
                    (*self._key(), events[-1].position, len(events), now_ms, *handed,
                     batch.batch_id, number, events[0].position,
                     *self._outcome(outcome), outcome.consumer),
                )  # fmt: skip
                if following is None:
                    await landed
                    return True, None
                # The next batch is full, so whoever takes over forms it again as it is
                # (the first batch_size events after this one): its hand-out need not be
                # stored before it is sent. This write runs while it is posted.
                self._writing = asyncio.get_running_loop().create_task(landed)
                return True, following
            await self._settle()
            await self._room.run("attempt", *self._attempt(batch, outcome, now_ms))
            if outcome.outcome == "gone":
                await self._halt(f"the receiver answered {outcome.status_code} Gone")
                return False, None
            if self.failing_since_ms is None:
                self.failing_since_ms = now_ms
            if now_ms - self.failing_since_ms >= settings.disable_after * 1000:
                await self._halt(
                    f"failing without a break for {settings.disable_after:g} s: {outcome.error}"
                )
                return False, None
            loop_now = time.monotonic()
            first_failure = loop_now if first_failure is None else first_failure
            if loop_now - first_failure >= settings.retry_timeout:
                if settings.error_handling == "skip":
                    await self._park(batch, outcome)
                    self.failing_since_ms = None  # as stored: parking ends the failing spell
                    return True, None
                await self._write("failing", "blocked", outcome.error, now_ms)
                await self._pause(settings.blocked_retry_delay)
                continue
            await self._write("failing", "retrying", outcome.error, now_ms)
            wait = random.uniform(delay / 2, delay)
            if outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, settings.retry_timeout))
            delay = min(delay * 2, self.streams.defaults.retry_max)
            await self._pause(wait)

    @staticmethod
    def _outcome(outcome: Outcome) -> tuple[object, ...]:
        response = (outcome.response or "")[:RESPONSE_KEPT] or None
        return (outcome.outcome, outcome.status_code, outcome.duration_ms, outcome.error, response)

    def _attempt(self, batch: Batch, outcome: Outcome, at_ms: int) -> tuple[object, ...]:
        """The arguments of the ``attempt`` query for one attempt."""
        events = batch.events
        return (
            self.row.id, at_ms, batch.batch_id, batch.batch_number, events[0].position,
            events[-1].position, len(events), *self._outcome(outcome), outcome.consumer, False,
        )  # fmt: skip

    async def _park(self, batch: Batch, outcome: Outcome) -> None:
        now_ms = _now_ms()
        reason = f"undelivered for {self.settings.retry_timeout:g} s: {outcome.error}"
        parked = [
            Step("park", (self.row.id, e.position, batch.batch_id, reason, now_ms))
            for e in batch.events
        ]
        last = batch.events[-1].position
        await self._settle()
        done = await self._room.steps(
            *parked, Step("passed", (*self._key(), last, now_ms), must_change=True)
        )
        if done is None:
            raise Lost("passed")
        log.warning("event stream %s parked %d events: %s", self.row.name, len(parked), reason)

    async def _halt(self, reason: str) -> None:
        await self._write("halt", reason, _now_ms())
        log.warning("event stream %s stopped: %s", self.row.name, reason)
