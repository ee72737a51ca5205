"""Live reads on every store: wait_for, read_all(follow=True), and waking across nodes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import tidings
from tidings import Filter, NewEvent

pytestmark = pytest.mark.remote


def ev(n: int) -> NewEvent:
    return NewEvent("Happened", {"n": n})


async def collect(
    store: tidings.EventStore, count: int, **kw: object
) -> list[tidings.RecordedEvent]:
    out: list[tidings.RecordedEvent] = []
    async for event in store.read_all(follow=True, **kw):  # type: ignore[arg-type]
        out.append(event)
        if len(out) == count:
            break
    return out


async def test_wait_for_returns_at_once_for_a_committed_position(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [ev(1), ev(2)])
    assert await store.wait_for(2, timeout=0.5) >= 2
    assert await store.wait_for(0) >= 2


async def test_wait_for_times_out_with_timeout_error(
    refusing_store: tidings.EventStore,
) -> None:
    store = refusing_store
    with pytest.raises(TimeoutError):
        await store.wait_for(1, timeout=0.1)
    assert await store.head() == 0


async def test_wait_for_wakes_on_a_commit(store: tidings.EventStore) -> None:
    waiter = asyncio.create_task(store.wait_for(3, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.append("order-1", [ev(1), ev(2), ev(3)])
    assert await waiter >= 3


async def test_wait_for_refuses_a_bad_position(refusing_store: tidings.EventStore) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidInput):
        await store.wait_for(-1)
    assert await store.head() == 0


async def test_follow_yields_the_past_then_new_events_in_order(store: tidings.EventStore) -> None:
    await store.append("order-1", [ev(0), ev(1)])
    reader = asyncio.create_task(collect(store, 6))
    await asyncio.sleep(0.05)
    for n in range(2, 6):
        await store.append(f"order-{n % 2}", [ev(n)])
    events = await asyncio.wait_for(reader, 5)
    assert [e.data["n"] for e in events] == list(range(6))  # type: ignore[index]
    assert [e.position for e in events] == list(range(1, 7))


async def test_follow_with_a_filter_passes_over_other_events(store: tidings.EventStore) -> None:
    await store.append("cart-1", [ev(0)])
    reader = asyncio.create_task(collect(store, 3, filter=Filter(categories=["order"])))
    await asyncio.sleep(0.05)
    for n in range(1, 7):
        await store.append(f"{'order' if n % 2 else 'cart'}-1", [ev(n)])
    events = await asyncio.wait_for(reader, 5)
    assert [e.data["n"] for e in events] == [1, 3, 5]  # type: ignore[index]


async def test_follow_with_a_limit_ends_after_it(store: tidings.EventStore) -> None:
    await store.append("order-1", [ev(0)])
    reader = asyncio.create_task(
        collect_all(store.read_all(follow=True, limit=3))  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.05)
    await store.append("order-1", [ev(1), ev(2), ev(3)])
    events = await asyncio.wait_for(reader, 5)
    assert [e.position for e in events] == [1, 2, 3]


async def collect_all(it: object) -> list[tidings.RecordedEvent]:
    return [e async for e in it]  # type: ignore[attr-defined]


async def test_a_transaction_wakes_followers(store: tidings.EventStore) -> None:
    reader = asyncio.create_task(collect(store, 2))
    await asyncio.sleep(0.05)
    async with store.transaction() as tx:
        tx.append("order-1", [ev(0)])
        tx.append("order-2", [ev(1)])
    assert len(await asyncio.wait_for(reader, 5)) == 2


async def test_many_followers_and_writers_see_every_event_once(store: tidings.EventStore) -> None:
    total = 4 * 25
    readers = [asyncio.create_task(collect(store, total)) for _ in range(3)]
    await asyncio.sleep(0.05)

    async def writer(w: int) -> None:
        for n in range(25):
            await store.append(f"w{w}-1", [ev(w * 100 + n)])

    await asyncio.gather(*(writer(w) for w in range(4)))
    for events in await asyncio.wait_for(asyncio.gather(*readers), 10):
        assert [e.position for e in events] == list(range(1, total + 1))


# -- two nodes on one database -----------------------------------------------------------


@pytest.mark.durable
async def test_another_node_wakes_a_follower_through_the_notifier(store_url: str) -> None:
    bus = f"memory://live{uuid.uuid4().hex[:8]}"
    writer = await tidings.connect(store_url, notify=bus)
    follower = await tidings.connect(store_url, notify=bus, poll_interval=60)
    try:
        reader = asyncio.create_task(collect(follower, 5))
        await asyncio.sleep(0.05)
        for n in range(5):
            await writer.append("order-1", [ev(n)])
        # the follower polls once a minute: only the notification can wake it in time
        events = await asyncio.wait_for(reader, 5)
        assert [e.data["n"] for e in events] == list(range(5))  # type: ignore[index]
        assert await follower.wait_for(5, timeout=2) >= 5
    finally:
        await writer.close()
        await follower.close()


@pytest.mark.durable
async def test_without_notifications_a_follower_still_sees_everything_by_polling(
    store_url: str,
) -> None:
    writer = await tidings.connect(store_url, notify=None)
    follower = await tidings.connect(store_url, notify=None, poll_interval=0.1)
    try:
        reader = asyncio.create_task(collect(follower, 5))
        await asyncio.sleep(0.05)
        for n in range(5):
            await writer.append("order-1", [ev(n)])
        events = await asyncio.wait_for(reader, 5)
        assert [e.position for e in events] == [1, 2, 3, 4, 5]
    finally:
        await writer.close()
        await follower.close()


@pytest.mark.postgres
async def test_postgres_nodes_wake_each_other_by_listen_notify(pg_url: str) -> None:
    writer = await tidings.connect(pg_url)
    follower = await tidings.connect(pg_url, poll_interval=60)
    try:
        reader = asyncio.create_task(collect(follower, 3))
        await asyncio.sleep(0.1)
        for n in range(3):
            await writer.append("order-1", [ev(n)])
        assert len(await asyncio.wait_for(reader, 5)) == 3
    finally:
        await writer.close()
        await follower.close()


async def test_notify_must_be_a_url_a_notifier_or_none() -> None:
    with pytest.raises(tidings.ConfigurationError):
        await tidings.connect("memory://", notify=42)  # type: ignore[arg-type]


async def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(tidings.ConfigurationError):
        await tidings.connect("memory://", poll_interval=0)


@pytest.mark.durable
async def test_a_closing_writer_still_tells_other_nodes_of_its_last_commits(
    store_url: str,
) -> None:
    bus = f"memory://close{uuid.uuid4().hex[:8]}"
    follower = await tidings.connect(store_url, notify=bus, poll_interval=60)
    try:
        reader = asyncio.create_task(collect(follower, 20))
        await asyncio.sleep(0.05)
        writer = await tidings.connect(store_url, notify=bus)
        await asyncio.gather(*(writer.append(f"order-{n}", [ev(n)]) for n in range(20)))
        await writer.close()
        assert len(await asyncio.wait_for(reader, 5)) == 20
    finally:
        await follower.close()
