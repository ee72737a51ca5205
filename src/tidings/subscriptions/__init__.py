"""Durable subscriptions: named readers of the log with checkpoints in the store's database.

async def handler(events: list[tidings.RecordedEvent]) -> None: ...
sub = tidings.subscribe(store, "billing", handler, filter=tidings.Filter(categories=["order"]))
async with sub:          # or: await sub.run()
    ...

A consumer group: run the same subscription in several processes, each with its own
``member`` id; the streams are split between the live members (see ``groups``):
sub = tidings.subscribe(store, "billing", handler, member="node-1", partitions=16)

A pull consumer: a client polls batches and acks them (``pull``; over HTTP too):
consumers = PullConsumers(store)
await consumers.create("billing", PullDefinition.of(tidings.Filter(categories=["order"])))
batch = await consumers.next("billing", wait=10)
await consumers.ack("billing", batch.last_position)
"""

from __future__ import annotations

from tidings.errors import InvalidInput
from tidings.store.base import StoreFront
from tidings.store.features import provide
from tidings.subscriptions.checkpoints import ParkedEvent, SubscriptionInfo, open_checkpoints
from tidings.subscriptions.groupstore import open_groups, supports_groups
from tidings.subscriptions.pull import PullBatch, PullConsumers, PullDefinition, PullInfo
from tidings.subscriptions.runner import Handler, Retry, Subscription, SubscriptionConflict

__all__ = [
    "ParkedEvent",
    "PullBatch",
    "PullConsumers",
    "PullDefinition",
    "PullInfo",
    "Retry",
    "Subscription",
    "SubscriptionConflict",
    "SubscriptionInfo",
    "parked",
    "replay_parked",
    "reset_subscription",
    "subscribe",
    "subscriptions",
]


def _register() -> None:
    provide("subscribe", subscribe)
    provide("subscriptions", subscriptions)
    provide("reset_subscription", reset_subscription)


def subscribe(store: StoreFront, name: str, handler: Handler, **options: object) -> Subscription:
    """A durable subscription ``name`` on ``store`` (see ``Subscription`` for the options)."""
    return Subscription(store, name, handler, **options)  # type: ignore[arg-type]


async def subscriptions(store: StoreFront) -> list[SubscriptionInfo]:
    """Every subscription of ``store``: checkpoint, head, lag, state, last error, parked."""
    checkpoints = open_checkpoints(store)
    try:
        rows = await checkpoints.rows()
    finally:
        await checkpoints.close()
    head = await store.head()
    return [
        SubscriptionInfo(
            name, position, head, max(0, head - position), state, error, at, count, members, parts
        )
        for name, position, state, error, at, count, members, parts in rows
    ]


async def reset_subscription(store: StoreFront, name: str, position: int = 0) -> None:
    """Move the checkpoint of ``name`` to ``position`` (a running runner follows it)."""
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise InvalidInput(f"position must be an int >= 0, not {position!r}")
    checkpoints = open_checkpoints(store)
    try:
        if not await checkpoints.reset(name, position):
            raise InvalidInput(f"there is no subscription named {name!r}")
    finally:
        await checkpoints.close()
    if supports_groups(store):  # a consumer group: every partition's checkpoint
        groups = open_groups(store)
        try:
            await groups.reset(name, position)
        finally:
            await groups.close()


async def parked(store: StoreFront, name: str) -> list[ParkedEvent]:
    """The events subscription ``name`` parked, in log order."""
    checkpoints = open_checkpoints(store)
    try:
        return await checkpoints.parked(name)
    finally:
        await checkpoints.close()


async def replay_parked(store: StoreFront, name: str, handler: Handler) -> int:
    """Hand each parked event of ``name`` to ``handler`` again, in log order, forgetting
    those it takes; the checkpoint does not move. Returns how many were handled; stops
    at the first that fails again (raising its error)."""
    checkpoints = open_checkpoints(store)
    done = 0
    try:
        for item in await checkpoints.parked(name):
            events = [e async for e in store.read_all(item.position - 1, limit=1)]
            if events and events[0].id == item.event_id:
                await handler(events)
            await checkpoints.unpark(name, item.position)
            done += 1
    finally:
        await checkpoints.close()
    return done


_register()
