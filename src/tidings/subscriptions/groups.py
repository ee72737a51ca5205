"""Consumer groups: one member's share of a subscription, split by stream.

A group's work is cut into a fixed number of partitions, a stream belonging to
partition ``crc32(stream) % partitions``; each partition has its own checkpoint and
a lease in the database (``groupstore``). Every ``lease_ttl / 4`` seconds a member
beats: it shows it is alive, renews its leases, gives up idle partitions beyond its
fair share ``ceil(partitions / live members)`` and takes free or expired ones up to
it. So members join and leave at any time, and a dead member's share is taken over
once its leases run out.

A member reads the log once, from the lowest checkpoint it holds, and hands each
partition's events to the handler in log order, a batch at a time. A checkpoint moves
only by a fenced compare-and-set (owner, live lease, expected position): a member
that lost a lease cannot move it, drops the partition, and the new owner repeats the
batch (at least once). A partition is given up only while no handler call is in
flight for it, so healthy members never handle the same event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from functools import partial
from typing import TYPE_CHECKING, Any

from tidings.events import RecordedEvent
from tidings.subscriptions.checkpoints import Checkpoints
from tidings.subscriptions.groupstore import open_groups
from tidings.subscriptions.runner import SubscriptionConflict, _Stop

if TYPE_CHECKING:
    from tidings.subscriptions.runner import Subscription

log = logging.getLogger("tidings.subscriptions.groups")

IDLE = 1.0
"""Seconds without events after which idle partitions' checkpoints catch up with the
reader (so that a partition whose streams are quiet does not hold the group back)."""


def partition_of(stream: str, partitions: int) -> int:
    """The partition of ``stream``: stable across processes and runs."""
    return zlib.crc32(stream.encode()) % partitions


class GroupMember:
    """Runs ``sub`` as member ``sub.member`` of its group until the subscription stops."""

    def __init__(self, sub: Subscription, checkpoints: Checkpoints, start: int) -> None:
        self.sub = sub
        self.member = sub.member or ""
        self.checkpoints = checkpoints
        self.start = start
        self.groups = open_groups(sub.store)
        self.owned = sub.owned
        """Partitions events are routed to (partition -> checkpoint)."""
        self.joining: dict[int, int] = {}
        """Partitions gained behind the reader: routed once it restarts lower."""
        self.busy: set[int] = set()
        self.seen = 0
        """The last position taken from the reader: every event up to it is done."""
        self.reading = False
        self.woken = asyncio.Event()
        self.renewed_at = float("-inf")

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Join, work until the subscription is asked to stop, then leave."""
        sub = self.sub
        loop = asyncio.get_running_loop()
        try:
            await self.groups.ensure(sub.name, sub.partitions, self.start)
            await self._beat()
            beats = loop.create_task(self._beats(), name=f"tidings.group.{sub.name}.beats")
            try:
                while not sub._stopping.is_set():
                    await self._follow()
            except _Stop:
                pass  # asked to stop while waiting to retry a batch
            finally:
                beats.cancel()
                await asyncio.gather(beats, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await self.groups.leave(sub.name, self.member)
        finally:
            self.owned.clear()
            self.joining.clear()
            await self.groups.close()

    async def _beats(self) -> None:
        """Heartbeats until cancelled; a member that cannot beat for a whole lease lets go."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sub.lease_ttl / 4)
            try:
                await self._beat()
            except Exception as exc:
                log.warning(
                    "group %s member %s: heartbeat failed: %r", self.sub.name, self.member, exc
                )
                if loop.time() - self.renewed_at >= self.sub.lease_ttl:
                    self._lose_all()

    async def _beat(self) -> None:
        started = asyncio.get_running_loop().time()
        sub = self.sub
        taken = await self.groups.beat(
            sub.name, self.member, sub.lease_ttl, sub.partitions, self._rebalance
        )
        self.renewed_at = started
        for partition, position in taken.items():
            self._gain(partition, position)

    def _rebalance(self, held: dict[int, int], target: int) -> list[int]:
        """Match memory to the leases the database holds for us; pick idle extras to free."""
        for partition in [p for p in (*self.owned, *self.joining) if p not in held]:
            log.info("group %s member %s lost partition %d", self.sub.name, self.member, partition)
            self._lose(partition)
        for partition, position in held.items():
            # A partition we hold but do not route (a refused move, a failed beat) is
            # taken up again from its stored checkpoint, once no handler works on it.
            if partition not in (*self.owned, *self.joining, *self.busy):
                self._gain(partition, position)
        extra = len(held) - target
        if extra <= 0:
            return []
        idle = [p for p in sorted(held, reverse=True) if p not in self.busy]
        gone = idle[:extra]
        for partition in gone:  # before the release commits: no new batch starts on it
            self._lose(partition)
        return gone

    def _gain(self, partition: int, position: int) -> None:
        if self.reading and position >= self.seen:
            self.owned[partition] = position  # the reader has not passed its next event
        else:
            self.joining[partition] = position
            self.woken.set()

    def _lose(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.joining.pop(partition, None)

    def _lose_all(self) -> None:
        self.owned.clear()
        self.joining.clear()

    def _fresh(self) -> bool:
        """Whether our leases are surely still live (the last beat went through)."""
        return asyncio.get_running_loop().time() - self.renewed_at < self.sub.lease_ttl

    # -- reading and routing ----------------------------------------------------------

    async def _follow(self) -> None:
        """One pass of the reader, from the lowest checkpoint held, until the set of
        partitions needs a lower start (or the subscription stops)."""
        sub = self.sub
        loop = asyncio.get_running_loop()
        self.owned.update(self.joining)
        self.joining.clear()
        self.woken.clear()
        stopping = loop.create_task(sub._stopping.wait())
        woken = loop.create_task(self.woken.wait())
        if not self.owned:
            try:
                await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stopping, woken):
                    task.cancel()
                await asyncio.gather(stopping, woken, return_exceptions=True)
            return
        start = min(self.owned.values())
        self.seen, self.reading = start, True
        try:
            async with sub.feed(start, f"tidings.group.{sub.name}.reader") as feed:
                while not sub._stopping.is_set() and not self.joining and self.owned:
                    if not await feed.wait([stopping, woken], IDLE):
                        if woken.done():
                            return  # a partition joined behind the reader: start lower
                        if not stopping.done():
                            await self._catch_up_idle()
                        continue
                    batch = await feed.batch(sub.batch_size, sub.batch_timeout)
                    self.seen = batch[-1].position
                    await self._route(batch)
        finally:
            self.reading = False
            stopping.cancel()
            woken.cancel()
            await asyncio.gather(stopping, woken, return_exceptions=True)

    async def _route(self, batch: list[RecordedEvent]) -> None:
        """Hand each owned partition its events of ``batch``, in log order."""
        by_partition: dict[int, list[RecordedEvent]] = {}
        for event in batch:
            by_partition.setdefault(partition_of(event.stream, self.sub.partitions), []).append(
                event
            )
        for partition, events in by_partition.items():
            if not self._fresh():
                # Our leases may have run out: another member may work on them now.
                self._lose_all()
                return
            checkpoint = self.owned.get(partition)
            if checkpoint is None:
                continue  # not ours (or given up): its owner reads it
            events = [e for e in events if e.position > checkpoint]
            if events:
                await self._handle(partition, events)

    async def _handle(self, partition: int, events: list[RecordedEvent]) -> None:
        self.busy.add(partition)
        try:
            await self.sub._handle(self.checkpoints, events, partial(self._move, partition))
        except SubscriptionConflict:
            # The lease was lost (or the checkpoint reset): whoever holds the partition
            # now starts from its stored checkpoint, before this batch.
            log.info(
                "group %s member %s: partition %d moved away at %d",
                self.sub.name,
                self.member,
                partition,
                events[0].position,
            )
            self._lose(partition)
        finally:
            self.busy.discard(partition)

    async def _move(self, partition: int, to: int, work: Any) -> None:
        """The fenced checkpoint move of one partition (a ``runner.Mover``)."""
        old = self.owned.get(partition)
        if old is None or not await self.groups.move(
            self.sub.name, partition, old, to, self.member, work
        ):
            raise SubscriptionConflict(f"partition {partition} of {self.sub.name} moved away")
        if partition in self.owned:
            self.owned[partition] = to
        self.sub.position = min(self.owned.values(), default=None)

    async def _catch_up_idle(self) -> None:
        """Move the checkpoints of partitions with nothing pending up to the reader."""
        for partition, position in list(self.owned.items()):
            if position < self.seen and partition not in self.busy and self._fresh():
                try:
                    await self._move(partition, self.seen, None)
                except SubscriptionConflict:
                    self._lose(partition)
