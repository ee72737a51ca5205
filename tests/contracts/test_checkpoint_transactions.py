"""Named checkpoints moved by transactions: compare-and-set, atomic with the appends.

The step of a process that reads one log and writes to another exactly once: each
output transaction names its input's position, and an input handled already is refused.
"""

from __future__ import annotations

import asyncio

import pytest

import tidings
from tidings import NO_STREAM, NewEvent

pytestmark = pytest.mark.remote


def ev(n: int = 1) -> NewEvent:
    return NewEvent("Handled", {"n": n})


async def test_a_transaction_moves_its_checkpoint_with_its_appends(
    store: tidings.EventStore,
) -> None:
    assert await store.checkpoint("upstream") is None
    async with store.transaction() as tx:
        tx.append("out-1", [ev()], expected_version=NO_STREAM)
        tx.move_checkpoint("upstream", 7)
    assert [r.last_version for r in tx.results] == [0]
    assert await store.checkpoint("upstream") == 7
    assert await store.checkpoint("other") is None


async def test_a_checkpoint_moves_alone_in_a_transaction_without_appends(
    store: tidings.EventStore,
) -> None:
    async with store.transaction() as tx:
        tx.move_checkpoint("upstream", 3)
    assert tx.results == []
    assert await store.checkpoint("upstream") == 3
    assert await store.head() == 0


@pytest.mark.parametrize("again", [5, 4, 0])
async def test_a_checkpoint_not_below_the_new_position_refuses_the_whole_transaction(
    store: tidings.EventStore, again: int
) -> None:
    async with store.transaction() as tx:
        tx.append("out-1", [ev()])
        tx.move_checkpoint("upstream", 5)
    with pytest.raises(tidings.CheckpointConflict) as info:
        async with store.transaction() as tx:
            tx.append("out-2", [ev()])
            tx.append("out-1", [ev()])
            tx.move_checkpoint("upstream", again)
    assert (info.value.name, info.value.position, info.value.current) == ("upstream", again, 5)
    assert await store.head() == 1
    assert await store.stream_version("out-2") is None
    assert await store.checkpoint("upstream") == 5


async def test_a_version_conflict_leaves_the_checkpoint_where_it_was(
    store: tidings.EventStore,
) -> None:
    await store.append("out-1", [ev()])
    with pytest.raises(tidings.WrongExpectedVersion):
        async with store.transaction() as tx:
            tx.append("out-1", [ev()], expected_version=NO_STREAM)
            tx.move_checkpoint("upstream", 1)
    assert await store.checkpoint("upstream") is None


async def test_racing_handlers_of_the_same_input_write_its_output_once(
    store: tidings.EventStore,
) -> None:
    """Every input is handled by three racing workers: each output lands exactly once,
    and a conflict fails only its own transaction (appends beside it land)."""

    async def handle(position: int, worker: int) -> bool:
        try:
            async with store.transaction() as tx:
                tx.append(f"out-{position}", [ev(worker)])
                tx.move_checkpoint("upstream", position)
        except tidings.CheckpointConflict:
            return False
        return True

    landed = []
    for position in range(1, 21):
        others = [store.append("noise-1", [ev()]) for _ in range(2)]
        results = await asyncio.gather(*(handle(position, w) for w in range(3)), *others)
        landed.append(sum(1 for r in results[:3] if r is True))
    assert landed == [1] * 20
    assert await store.checkpoint("upstream") == 20
    streams = [s.name async for s in store.list_streams(prefix="out-")]
    assert len(streams) == 20
    for name in streams:
        assert await store.stream_version(name) == 0
    assert await store.stream_version("noise-1") == 39


async def test_checkpoints_refuse_bad_names_and_positions_at_once(
    refusing_store: tidings.EventStore,
) -> None:
    store = refusing_store
    for name in ["", "x" * 256, "a\x00b", 7]:
        with pytest.raises(tidings.InvalidInput):
            store.transaction().move_checkpoint(name, 1)  # type: ignore[arg-type]
        with pytest.raises(tidings.InvalidInput):
            await store.checkpoint(name)  # type: ignore[arg-type]
    for position in [-1, True, 1.5, "3"]:
        with pytest.raises(tidings.InvalidInput):
            store.transaction().move_checkpoint("upstream", position)  # type: ignore[arg-type]
    tx = store.transaction()
    tx.move_checkpoint("a", 1)
    with pytest.raises(tidings.InvalidInput):
        tx.move_checkpoint("b", 1)
    assert await store.checkpoint("a") is None
    assert await store.head() == 0


@pytest.mark.durable
async def test_a_checkpoint_outlives_the_store_closing(store_url: str) -> None:
    async with await tidings.connect(store_url) as store, store.transaction() as tx:
        tx.append("out-1", [ev()])
        tx.move_checkpoint("upstream", 9)
    async with await tidings.connect(store_url) as store:
        assert await store.checkpoint("upstream") == 9
        with pytest.raises(tidings.CheckpointConflict):
            async with store.transaction() as tx:
                tx.move_checkpoint("upstream", 9)
