"""Pull consumers on every store: batches handed out again until acked, acks forward only
and never past what was handed out, long polls woken by appends, resume after a reopen,
and consumer groups splitting streams and taking over."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

import tidings
from tidings import Filter, NewEvent
from tidings.errors import NotFound
from tidings.subscriptions import subscribe
from tidings.subscriptions.pull import (
    AckBeyondHandedOut,
    LeaseLost,
    PullConflict,
    PullConsumers,
    PullDefinition,
)


def ev(n: int) -> NewEvent:
    return NewEvent("Happened", {"n": n})


async def append_each(store: tidings.EventStore, streams: list[str]) -> None:
    for n, stream in enumerate(streams):
        await store.append(stream, [ev(n)])


async def test_a_batch_comes_again_until_it_is_acked(store: tidings.EventStore) -> None:
    await append_each(store, [f"order-{n}" for n in range(5)])
    consumers = PullConsumers(store)
    await consumers.create("billing", PullDefinition.of())
    first = await consumers.next("billing", limit=3)
    assert [e.position for e in first.events] == [1, 2, 3]
    assert (first.last_position, first.checkpoint) == (3, 0)
    again = await consumers.next("billing", limit=3)
    assert [e.id for e in again.events] == [e.id for e in first.events]
    assert await consumers.ack("billing", 3) == 3
    rest = await consumers.next("billing", limit=3)
    assert [e.position for e in rest.events] == [4, 5]
    assert rest.checkpoint == 3


async def test_an_ack_never_moves_backwards(store: tidings.EventStore) -> None:
    await append_each(store, [f"order-{n}" for n in range(4)])
    consumers = PullConsumers(store)
    await consumers.create("billing", PullDefinition.of())
    await consumers.next("billing")
    assert await consumers.ack("billing", 3) == 3
    assert await consumers.ack("billing", 1) == 3  # older: a no-op
    assert await consumers.ack("billing", 3) == 3  # the same again: a no-op
    assert (await consumers.info("billing")).checkpoint == 3
    assert [e.position for e in (await consumers.next("billing")).events] == [4]


async def test_an_ack_never_passes_what_was_handed_out(store: tidings.EventStore) -> None:
    await append_each(store, [f"order-{n}" for n in range(5)])
    consumers = PullConsumers(store)
    await consumers.create("billing", PullDefinition.of())
    with pytest.raises(AckBeyondHandedOut) as nothing_yet:
        await consumers.ack("billing", 1)
    assert nothing_yet.value.limit == 0
    await consumers.next("billing", limit=2)
    with pytest.raises(AckBeyondHandedOut) as info:
        await consumers.ack("billing", 3)
    assert info.value.limit == 2
    assert (await consumers.info("billing")).checkpoint == 0
    assert await consumers.ack("billing", 2) == 2


async def test_the_same_definition_is_found_another_is_a_conflict(
    store: tidings.EventStore,
) -> None:
    consumers = PullConsumers(store)
    definition = PullDefinition.of(Filter(categories=["order", "invoice"]), start="end")
    first, created = await consumers.create("billing", definition)
    await store.append("order-1", [ev(1)])
    # the same, names in another order, after the head moved: the same consumer
    same = PullDefinition.of(Filter(categories=["invoice", "order"]), start="end")
    again, created_again = await consumers.create("billing", same)
    assert (created, created_again) == (True, False)
    assert again.checkpoint == first.checkpoint == 0
    assert again.definition == first.definition
    with pytest.raises(PullConflict):
        await consumers.create("billing", PullDefinition.of(Filter(categories=["order"])))
    with pytest.raises(PullConflict):
        await consumers.create("billing", PullDefinition.of(definition.filter, start="beginning"))


async def test_a_library_subscription_name_is_refused(store: tidings.EventStore) -> None:
    async def handler(events: list[tidings.RecordedEvent]) -> None:
        return None

    await store.append("order-1", [ev(1)])
    async with subscribe(store, "runner", handler):
        async with asyncio.timeout(5):
            while not [i for i in await store.subscriptions() if i.name == "runner"]:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    with pytest.raises(PullConflict):
        await PullConsumers(store).create("runner", PullDefinition.of())


async def test_bad_definitions_and_polls_are_invalid_input(store: tidings.EventStore) -> None:
    consumers = PullConsumers(store)
    for bad in (
        lambda: PullDefinition.of(start="middle"),
        lambda: PullDefinition.of(start=-1),
        lambda: PullDefinition.of(partitions=0),
        lambda: PullDefinition.of(lease_ttl=0.01),
        lambda: PullDefinition.of(Filter(categories=[])),
    ):
        with pytest.raises(tidings.InvalidInput):
            bad()
    with pytest.raises(tidings.InvalidInput):
        PullDefinition.of(Filter(stream_pattern="("))
    await consumers.create("billing", PullDefinition.of())
    with pytest.raises(tidings.InvalidInput):
        await consumers.next("billing", limit=0)
    with pytest.raises(tidings.InvalidInput):
        await consumers.next("billing", wait=31)
    with pytest.raises(tidings.InvalidInput):
        await consumers.ack("billing", -1)
    with pytest.raises(NotFound):
        await consumers.next("nobody")
    with pytest.raises(NotFound):
        await consumers.ack("nobody", 1)


async def test_a_filter_hands_out_its_events_and_steps_over_the_rest(
    store: tidings.EventStore,
) -> None:
    await append_each(store, ["order-1", "stock-1", "order-2", "stock-2", "stock-3"])
    consumers = PullConsumers(store)
    await consumers.create("orders", PullDefinition.of(Filter(categories=["order"])))
    batch = await consumers.next("orders")
    assert [e.stream for e in batch.events] == ["order-1", "order-2"]
    assert await consumers.ack("orders", batch.last_position or 0) == 3
    empty = await consumers.next("orders")
    assert (empty.events, empty.last_position, empty.checkpoint) == ([], None, 5)
    info = await consumers.info("orders")
    assert (info.checkpoint, info.head, info.lag) == (5, 5, 0)


async def test_a_long_poll_is_woken_by_an_append(store: tidings.EventStore) -> None:
    consumers = PullConsumers(store)
    await consumers.create("billing", PullDefinition.of())
    started = time.monotonic()
    polling = asyncio.create_task(consumers.next("billing", wait=10))
    await asyncio.sleep(0.2)
    assert not polling.done()
    await store.append("order-1", [ev(1)])
    batch = await asyncio.wait_for(polling, 5)
    assert [e.stream for e in batch.events] == ["order-1"]
    assert time.monotonic() - started < 5
    assert (await consumers.next("billing", wait=0.2)).events  # not acked: again


async def test_a_long_poll_ends_empty_at_its_wait_or_stop(store: tidings.EventStore) -> None:
    consumers = PullConsumers(store)
    await consumers.create("billing", PullDefinition.of())
    started = time.monotonic()
    assert (await consumers.next("billing", wait=0.3)).events == []
    assert 0.25 < time.monotonic() - started < 3
    stop = asyncio.Event()
    polling = asyncio.create_task(consumers.next("billing", wait=20, stop=stop))
    await asyncio.sleep(0.1)
    stop.set()
    assert (await asyncio.wait_for(polling, 3)).events == []


async def test_info_list_reset_and_delete(store: tidings.EventStore) -> None:
    await append_each(store, [f"order-{n}" for n in range(6)])
    consumers = PullConsumers(store)
    await consumers.create("b", PullDefinition.of(Filter(categories=["order"])))
    await consumers.create("a", PullDefinition.of(start=2))
    await consumers.next("b", limit=4)
    await consumers.ack("b", 4)
    infos = await consumers.list_all()
    assert [i.name for i in infos] == ["a", "b"]
    a, b = infos
    assert (a.checkpoint, a.lag, a.handed_out, a.definition.start) == (2, 4, 2, 2)
    assert (b.checkpoint, b.head, b.lag, b.handed_out, b.parked) == (4, 6, 2, 4, 0)
    assert b.definition.categories == ("order",)
    await consumers.reset("b", 1)
    with pytest.raises(AckBeyondHandedOut):  # what was handed out before does not count
        await consumers.ack("b", 4)
    assert [e.position for e in (await consumers.next("b", limit=2)).events] == [2, 3]
    await consumers.delete("b")
    with pytest.raises(NotFound):
        await consumers.info("b")
    with pytest.raises(NotFound):
        await consumers.delete("b")
    assert [i.name for i in await store.subscriptions()] == ["a"]
    assert (await consumers.create("b", PullDefinition.of()))[1]  # the name is free again


@pytest.mark.durable
async def test_acks_and_hand_outs_survive_a_reopen(store_url: str) -> None:
    async with await tidings.connect(store_url) as store:
        await append_each(store, [f"order-{n}" for n in range(5)])
        consumers = PullConsumers(store)
        await consumers.create("billing", PullDefinition.of())
        await consumers.next("billing", limit=4)
        await consumers.ack("billing", 2)
    async with await tidings.connect(store_url) as store:
        consumers = PullConsumers(store)
        batch = await consumers.next("billing", limit=1)
        assert [e.position for e in batch.events] == [3]
        assert await consumers.ack("billing", 4) == 4  # handed out before the reopen
        with pytest.raises(AckBeyondHandedOut):
            await consumers.ack("billing", 5)
        assert [e.position for e in (await consumers.next("billing")).events] == [5]


@pytest.mark.durable
async def test_two_processes_on_one_database_agree(store_url: str) -> None:
    async with await tidings.connect(store_url) as one, await tidings.connect(store_url) as two:
        await append_each(one, [f"order-{n}" for n in range(3)])
        await PullConsumers(one).create("billing", PullDefinition.of())
        await PullConsumers(one).next("billing", limit=2)
        assert await PullConsumers(two).ack("billing", 2) == 2
        with pytest.raises(AckBeyondHandedOut):
            await PullConsumers(two).ack("billing", 3)
        assert [e.position for e in (await PullConsumers(one).next("billing")).events] == [3]


async def poll_and_ack(
    consumers: PullConsumers, member: str, seen: list[tuple[str, int, str]]
) -> int:
    batch = await consumers.next("crew", limit=7, member=member)
    seen.extend((member, e.position, e.stream) for e in batch.events)
    if batch.last_position is not None:
        await consumers.ack("crew", batch.last_position, member=member)
    return len(batch.events)


async def test_two_members_split_the_streams_in_order(store: tidings.EventStore) -> None:
    consumers = PullConsumers(store)
    await consumers.create("crew", PullDefinition.of(partitions=8, lease_ttl=10))
    await consumers.next("crew", member="a")  # a alone: every partition
    await consumers.next("crew", member="b")  # b joins: nothing free yet
    await consumers.next("crew", member="a")  # a gives up its share beyond 4
    await consumers.next("crew", member="b")  # b takes them
    for r in range(5):
        await asyncio.gather(*(store.append(f"order-{s}", [ev(r)]) for s in range(20)))
    seen: list[tuple[str, int, str]] = []
    while await poll_and_ack(consumers, "a", seen) + await poll_and_ack(consumers, "b", seen):
        pass
    assert sorted(p for _, p, _ in seen) == list(range(1, 101))  # each once
    by_stream: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for member, position, stream in seen:
        by_stream[stream].append((member, position))
    for stream, handled in by_stream.items():
        assert len({m for m, _ in handled}) == 1, f"{stream} went to both members"
        assert [p for _, p in handled] == sorted(p for _, p in handled), stream
    assert {m for m, _, _ in seen} == {"a", "b"}
    info = await consumers.info("crew")
    assert (info.checkpoint, info.grouped, info.members) == (100, True, 2)
    with pytest.raises(PullConflict):  # a group is polled by members
        await consumers.next("crew")
    with pytest.raises(PullConflict):
        await consumers.ack("crew", 100)


async def test_a_silent_member_is_taken_over_and_its_batch_handed_out_again(
    store: tidings.EventStore,
) -> None:
    consumers = PullConsumers(store)
    await consumers.create("crew", PullDefinition.of(partitions=4, lease_ttl=0.5))
    await append_each(store, [f"order-{n}" for n in range(8)])
    first = await consumers.next("crew", member="a")
    assert [e.position for e in first.events] == list(range(1, 9))
    assert (await consumers.next("crew", member="b")).events == []  # a's leases hold
    with pytest.raises(AckBeyondHandedOut):
        await consumers.ack("crew", 9, member="a")
    await asyncio.sleep(0.8)  # a neither polls nor acks for longer than its lease
    again = await consumers.next("crew", member="b", wait=3)
    assert [e.id for e in again.events] == [e.id for e in first.events]
    with pytest.raises(LeaseLost):  # too late: b holds every partition
        await consumers.ack("crew", 8, member="a")
    assert await consumers.ack("crew", 8, member="b") == 8
    assert (await consumers.next("crew", member="b")).events == []
    assert (await consumers.info("crew")).checkpoint == 8


@pytest.mark.durable
async def test_a_store_made_before_pull_consumers_migrates(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tidings.sql
    import tidings.store.postgres as pg_module
    import tidings.store.sqlite as sqlite_module

    real = tidings.sql.migrations

    def before(dialect: str, schema: str | None = None) -> list[tidings.sql.Migration]:
        return [m for m in real(dialect, schema) if m.name != "pull_consumers"]

    monkeypatch.setattr(pg_module, "migrations", before)
    monkeypatch.setattr(sqlite_module, "migrations", before)
    async with await tidings.connect(store_url) as store:
        await append_each(store, ["order-1", "order-2"])
    monkeypatch.undo()
    async with await tidings.connect(store_url) as store:
        consumers = PullConsumers(store)
        await consumers.create("billing", PullDefinition.of())
        batch = await consumers.next("billing")
        assert [e.stream for e in batch.events] == ["order-1", "order-2"]
        assert await consumers.ack("billing", 2) == 2
