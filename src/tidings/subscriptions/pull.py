"""Pull consumers: durable subscriptions a client polls, acknowledging what it handled.

consumers = PullConsumers(store)
await consumers.create("billing", PullDefinition.of(Filter(categories=["order"])))
batch = await consumers.next("billing", limit=100, wait=10)   # long-polls up to 10 s
...handle batch.events...
await consumers.ack("billing", batch.last_position)

A pull consumer is a named definition (filter, start) with a checkpoint in the store's
database (``checkpoints``, ``pullstore``). ``next`` hands out the events after the
checkpoint; until they are acked the same batch comes again (at least once). ``ack``
moves the checkpoint forward only (an older ack is a no-op) and never past what was
handed out: the highest position handed out is kept in the database, so every process
on one database agrees on it. A poll that finds nothing for the consumer moves the
checkpoint over the stretch it read (there was nothing in it to hand out).

With ``member=``, callers share the consumer as a consumer group (``pullgroup``): each
poll and ack is the member's heartbeat, the batch holds only its partitions' events in
log order, and a member silent for ``lease_ttl`` loses its partitions to the others,
who hand its unacked events out again. A consumer turns into a group when a member
first polls; from then on a poll or ack without a member is a conflict.
"""

from __future__ import annotations

import asyncio

from tidings.errors import NotFound
from tidings.store.base import StoreFront
from tidings.subscriptions.checkpoints import open_checkpoints
from tidings.subscriptions.pulldefs import (
    MAX_WAIT,
    AckBeyondHandedOut,
    LeaseLost,
    PullBatch,
    PullConflict,
    PullDefinition,
    PullInfo,
    PullRow,
    check_member,
    check_name,
    check_poll,
    check_position,
    decode_definition,
    encode_definition,
    grouped,
)
from tidings.subscriptions.pullgroup import PullGroup
from tidings.subscriptions.pullstore import open_pull, open_pull_groups

__all__ = [
    "MAX_WAIT",
    "AckBeyondHandedOut",
    "LeaseLost",
    "PullBatch",
    "PullConflict",
    "PullConsumers",
    "PullDefinition",
    "PullInfo",
]


class PullConsumers:
    """The pull consumers of one store: define them, hand out batches, take acks."""

    def __init__(self, store: StoreFront) -> None:
        self.store = store
        self._rows = open_pull(store)
        self._checkpoints = open_checkpoints(store)
        self._group = PullGroup(store, self._rows, open_pull_groups(store))

    # -- definitions ------------------------------------------------------------------

    async def create(self, name: str, definition: PullDefinition) -> tuple[PullInfo, bool]:
        """Define ``name`` (its checkpoint at ``definition.start``), or find it defined
        the same way; True when this call created it. ``PullConflict`` when the name is
        taken by another definition or by a library ``Subscription``."""
        check_name(name)
        created = False
        row = await self._rows.load(name)
        if row is None:
            if await self._checkpoints.load(name) is not None:
                raise PullConflict(f"{name!r} is a subscription run by a library Subscription")
            start = definition.start
            if not isinstance(start, int):
                start = 0 if start == "beginning" else await self.store.head()
            created = await self._rows.create(name, encode_definition(definition), start)
            row = await self._load(name)
        if decode_definition(row.definition) != definition:
            raise PullConflict(f"subscription {name!r} exists with another definition")
        return await self.info(name), created

    async def definition(self, name: str) -> PullDefinition:
        """``name``'s definition; ``NotFound`` when it is not defined."""
        return decode_definition((await self._load(name)).definition)

    async def info(self, name: str) -> PullInfo:
        """``name``'s definition and state; ``NotFound`` when it is not defined."""
        found = await self._infos([(name, await self._load(name))])
        if not found:
            raise _unknown(name)
        return found[0]

    async def list_all(self) -> list[PullInfo]:
        """Every pull consumer, by name."""
        return await self._infos(await self._rows.rows())

    async def _infos(self, rows: list[tuple[str, PullRow]]) -> list[PullInfo]:
        found = {r[0]: r for r in await self._checkpoints.rows()}
        head = await self.store.head()
        infos = []
        for name, row in rows:
            stored = found.get(name)
            if stored is None:
                continue  # deleted meanwhile
            _, position, state, error, updated, parked, members, _ = stored
            if row.grouped:  # the group's own count (memory keeps it beside the store)
                low, members = await self._rows.group_state(name)
                position = position if low is None else low
            info = PullInfo(
                name=name,
                definition=decode_definition(row.definition),
                checkpoint=position,
                head=head,
                lag=max(0, head - position),
                state=state,
                last_error=error,
                updated=updated,
                parked=parked,
                handed_out=row.handed,
                grouped=row.grouped,
                members=members,
            )
            infos.append(info)
        return infos

    async def reset(self, name: str, position: int = 0) -> None:
        """Move the checkpoint (every partition's, for a group) to ``position``; only
        what is handed out from there on may be acked."""
        check_position(position)
        await self._load(name)
        await self._rows.reset(name, position)

    async def delete(self, name: str) -> None:
        """Remove ``name``'s definition, checkpoint, parked events and group rows;
        ``NotFound`` when it is not defined."""
        if not await self._rows.delete(name):
            raise _unknown(name)

    # -- polling and acks -------------------------------------------------------------

    async def next(
        self,
        name: str,
        limit: int = 100,
        wait: float = 0.0,
        member: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> PullBatch:
        """Up to ``limit`` events after the checkpoint (a member's partitions' only),
        waiting up to ``wait`` seconds for one (or until ``stop`` is set)."""
        check_poll(limit, wait)
        check_member(member)
        row = await self._load(name)
        definition = decode_definition(row.definition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if member is None:
                if row.grouped:
                    raise grouped(name)
                batch, scanned = await self._single(name, definition, row.handed, limit)
            else:
                group = self._group
                if not row.grouped:
                    await group.join(name, definition, await self._checkpoint(name))
                    row = row._replace(grouped=True)
                batch, scanned = await group.next(name, definition, member, limit)
            left = deadline - loop.time()
            if batch.events or left <= 0 or (stop is not None and stop.is_set()):
                return batch
            if member is not None:  # beat again before the leases run out
                left = min(left, definition.lease_ttl / 3)
            await self._wait(scanned + 1, left, stop)

    async def _single(
        self, name: str, definition: PullDefinition, handed: int, limit: int
    ) -> tuple[PullBatch, int]:
        """One poll without a member: the batch, and the position the log was read up to."""
        checkpoint = await self._checkpoint(name)
        head = await self.store.head()  # committed before the read: the read sees it all
        events = [e async for e in self.store.read_all(checkpoint, definition.filter, limit=limit)]
        if len(events) == limit:
            scanned = events[-1].position
        else:
            scanned = max(head, checkpoint, events[-1].position if events else 0)
        if events:
            if scanned > handed:
                await self._rows.hand_out(name, scanned)
            return PullBatch(events, events[-1].position, checkpoint), scanned
        if scanned > checkpoint and await self._checkpoints.advance(
            name, checkpoint, scanned, None
        ):
            checkpoint = scanned  # nothing of ours in the stretch read: step over it
        return PullBatch([], None, checkpoint), scanned

    async def _wait(self, position: int, timeout: float, stop: asyncio.Event | None) -> None:  # noqa: ASYNC109
        """Until the log reaches ``position`` (the store's live wake-ups, no polling of
        ours), ``timeout`` passes or ``stop`` is set."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.store.wait_for(position, timeout))]
        if stop is not None:
            tasks.append(loop.create_task(stop.wait()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def ack(self, name: str, position: int, member: str | None = None) -> int:
        """Move the checkpoint to ``position`` (a member's partitions, each as far as it
        was handed to the member); returns the checkpoint. An older ack changes
        nothing; ``AckBeyondHandedOut`` past what was handed out."""
        check_position(position)
        check_member(member)
        row = await self._load(name)
        if member is not None:
            definition = decode_definition(row.definition)
            return await self._group.ack(name, definition, member, position)
        if row.grouped:
            raise grouped(name)
        while True:
            if await self._rows.ack(name, position):
                return position
            checkpoint = await self._checkpoint(name)
            if position <= checkpoint:
                return checkpoint
            handed = (await self._load(name)).handed
            if position > handed:
                raise AckBeyondHandedOut(name, position, handed)
            # the checkpoint moved between the two reads (another ack, a reset): again

    # -- helpers ----------------------------------------------------------------------

    async def _load(self, name: str) -> PullRow:
        row = await self._rows.load(name)
        if row is None:
            raise _unknown(name)
        return row

    async def _checkpoint(self, name: str) -> int:
        position = await self._checkpoints.load(name)
        if position is None:
            raise _unknown(name)
        return position


def _unknown(name: str) -> NotFound:
    return NotFound(f"there is no pull subscription named {name!r}")
