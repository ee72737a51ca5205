"""A pull consumer shared by members: the consumer group part of ``pull``.

The partitions, leases and members are those of ``groups``/``groupstore``. A member's
poll (and its ack) is its heartbeat: it renews the member's leases, gives up idle
partitions beyond its fair share and takes free or expired ones. A partition with
events handed out to the member and not acked is not idle: it is given up only once
acked, or taken from the member once its lease runs out (then its new owner hands the
unacked events out again). What was handed out is kept per partition with the member
it went to, so an ack moves a partition only as far as that member was handed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import cast

from tidings.events import RecordedEvent
from tidings.store.base import StoreFront
from tidings.subscriptions.groups import partition_of
from tidings.subscriptions.groupstore import GroupStore
from tidings.subscriptions.pulldefs import (
    AckBeyondHandedOut,
    LeaseLost,
    PullBatch,
    PullDefinition,
)
from tidings.subscriptions.pullstore import PullStore

SCAN_LIMIT = 10_000
"""Events a member's poll reads past its checkpoints at most, looking for its own."""


class PullGroup:
    """Polls and acks of consumer group members, on one store."""

    def __init__(self, store: StoreFront, rows: PullStore, groups: GroupStore) -> None:
        self.store = store
        self.rows = rows
        self.groups = groups

    async def join(self, name: str, definition: PullDefinition, start: int) -> None:
        """Turn ``name`` into a consumer group, its partitions at ``start``."""
        await self.rows.mark_grouped(name)
        await self.groups.ensure(name, definition.partitions, start)

    async def beat(
        self, name: str, definition: PullDefinition, member: str, handed: dict[int, int]
    ) -> dict[int, int]:
        """One heartbeat of ``member``: the partitions it holds after it (-> checkpoint).
        Partitions handed out past their checkpoint (``handed``) are not given up."""
        held: dict[int, int] = {}
        gone: list[int] = []

        def rebalance(found: dict[int, int], target: int) -> list[int]:
            held.clear()
            held.update(found)
            idle = [p for p in sorted(found, reverse=True) if handed.get(p, -1) <= found[p]]
            gone[:] = idle[: max(0, len(found) - target)]
            return list(gone)

        taken = await self.groups.beat(
            name, member, definition.lease_ttl, definition.partitions, rebalance
        )
        owned = {p: c for p, c in held.items() if p not in gone}
        owned.update(taken)
        return owned

    async def next(
        self, name: str, definition: PullDefinition, member: str, limit: int
    ) -> tuple[PullBatch, int]:
        """One poll of ``member``: its batch, and the position the log was read up to."""
        handed = await self.rows.handed_to(name, member)
        owned = await self.beat(name, definition, member, handed)
        if not owned:
            low, _ = await self.rows.group_state(name)
            return PullBatch([], None, low or 0), await self.store.head()
        start = min(owned.values())
        events, scanned = await self._scan(start, definition, owned, limit)
        if events:
            behind = [p for p in sorted(owned) if handed.get(p, -1) < scanned]
            if behind:
                await self.rows.hand_out_partitions(name, member, behind, scanned)
            return PullBatch(events, events[-1].position, start), scanned
        for partition, position in owned.items():
            # Nothing of this partition up to ``scanned``: its checkpoint steps over it.
            if position < scanned and await self.groups.move(
                name, partition, position, scanned, member, None
            ):
                owned[partition] = scanned
        return PullBatch([], None, min(owned.values())), scanned

    async def _scan(
        self, start: int, definition: PullDefinition, owned: dict[int, int], limit: int
    ) -> tuple[list[RecordedEvent], int]:
        """The events of ``owned`` partitions past their checkpoints, up to ``limit``,
        and the position read up to (every event of theirs up to it is in the list)."""
        count = definition.partitions
        events: list[RecordedEvent] = []
        scanned, seen = start, 0
        head = await self.store.head()  # committed before the read: the read sees it all
        size = max(self.store.page_size, limit)
        pages = cast(
            AsyncGenerator[list[RecordedEvent], None],
            self.store.read_all_pages(start, definition.filter, page_size=size),
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                for event in page:
                    checkpoint = owned.get(partition_of(event.stream, count))
                    if checkpoint is not None and event.position > checkpoint:
                        events.append(event)
                        if len(events) == limit:
                            return events, event.position
                scanned, seen = page[-1].position, seen + len(page)
                if seen >= SCAN_LIMIT:
                    return events, scanned
        return events, max(scanned, head)

    async def ack(self, name: str, definition: PullDefinition, member: str, position: int) -> int:
        """Move each of ``member``'s partitions to ``position``, no further than it was
        handed to the member; returns the member's lowest checkpoint."""
        handed = await self.rows.handed_to(name, member)
        owned = await self.beat(name, definition, member, handed)
        if not owned:
            raise LeaseLost(f"member {member!r} of {name!r} holds no partition (leases lost)")
        top = max(max(c, handed.get(p, c)) for p, c in owned.items())
        if position > top:
            raise AckBeyondHandedOut(name, position, top)
        for partition, checkpoint in owned.items():
            to = min(position, handed.get(partition, checkpoint))
            if to > checkpoint and await self.groups.move(
                name, partition, checkpoint, to, member, None
            ):
                owned[partition] = to
        return min(owned.values())
