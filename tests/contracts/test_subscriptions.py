"""Durable subscriptions on every store: catch-up then live, checkpoints, errors, parking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import tidings
from tidings import Filter, NewEvent
from tidings.subscriptions import (
    Retry,
    parked,
    replay_parked,
    reset_subscription,
    subscribe,
    subscriptions,
)


def ev(n: int) -> NewEvent:
    return NewEvent("Happened", {"n": n})


async def fill(store: tidings.EventStore, count: int, stream: Callable[[int], str]) -> None:
    for start in range(0, count, 50):
        await asyncio.gather(
            *(store.append(stream(n), [ev(n)]) for n in range(start, min(count, start + 50)))
        )


class Seen:
    """A handler that records what it was given and can wait for a count."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.batches: list[int] = []
        self.changed = asyncio.Event()

    async def __call__(self, events: list[tidings.RecordedEvent]) -> None:
        self.positions.extend(e.position for e in events)
        self.batches.append(len(events))
        self.changed.set()

    async def until(self, count: int, timeout: float = 10) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.positions) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_catch_up_then_live_with_no_gap_and_no_repeat(store: tidings.EventStore) -> None:
    await fill(store, 250, lambda n: f"order-{n % 7}")
    seen = Seen()
    async with subscribe(store, "billing", seen, batch_size=100):
        await seen.until(250)
        await fill(store, 50, lambda n: f"order-{n % 3}")
        await seen.until(300)
    assert seen.positions == list(range(1, 301))
    assert max(seen.batches) <= 100
    [info] = await subscriptions(store)
    assert (info.name, info.checkpoint, info.head, info.lag) == ("billing", 300, 300, 0)
    assert info.state == "stopped" and info.last_error is None


async def test_a_restart_resumes_from_the_checkpoint(store: tidings.EventStore) -> None:
    await fill(store, 20, lambda n: f"order-{n}")
    first = Seen()
    async with subscribe(store, "billing", first):
        await first.until(20)
    await fill(store, 5, lambda n: f"order-{n}")
    again = Seen()
    async with subscribe(store, "billing", again, start="beginning"):  # start is used once only
        await again.until(5)
    assert again.positions == [21, 22, 23, 24, 25]


async def test_start_at_the_end_sees_only_new_events(store: tidings.EventStore) -> None:
    await fill(store, 10, lambda n: f"order-{n}")
    seen = Seen()
    async with subscribe(store, "late", seen, start="end"):
        await asyncio.sleep(0.1)
        await store.append("order-x", [ev(99)])
        await seen.until(1)
    assert seen.positions == [11]


async def test_a_filter_with_a_stream_pattern_picks_streams(store: tidings.EventStore) -> None:
    await fill(store, 30, lambda n: ["order-1", "order-22", "cart-3"][n % 3])
    seen = Seen()
    sub = subscribe(
        store, "orders", seen, filter=Filter(categories=["order"], stream_pattern=r"order-\d")
    )
    async with sub:
        await seen.until(10)
        await asyncio.sleep(0.1)
    assert seen.positions == list(range(1, 31, 3))


async def test_a_stream_pattern_in_read_all_keeps_limit_and_order(
    store: tidings.EventStore,
) -> None:
    await fill(store, 30, lambda n: f"{'order' if n % 2 else 'cart'}-{n}")
    pattern = Filter(stream_pattern=r"order-1\d")
    found = [e.stream async for e in store.read_all(filter=pattern, limit=3)]
    # concurrent appends land in any order: the first three matches in log order
    expected = [e.stream async for e in store.read_all() if pattern.matches(e)][:3]
    assert found == expected and len(found) == 3
    with pytest.raises(tidings.InvalidInput):
        Filter(stream_pattern="(")


async def test_a_blocked_subscription_retries_and_shows_its_error(
    store: tidings.EventStore,
) -> None:
    await fill(store, 3, lambda n: f"order-{n}")
    failures = 4
    seen = Seen()

    async def flaky(events: list[tidings.RecordedEvent]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("downstream is down")
        await seen(events)

    policy = Retry(attempts=2, backoff=0.05, backoff_max=0.05, then="block")
    async with subscribe(store, "blocky", flaky, on_error=policy) as sub:
        async with asyncio.timeout(5):
            while sub.state != "blocked":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        [info] = await subscriptions(store)
        assert info.state == "blocked" and "downstream is down" in (info.last_error or "")
        assert info.checkpoint == 0  # nothing moves past an unhandled event
        await seen.until(3)
    assert seen.positions == [1, 2, 3]
    assert sub.state == "stopped" and sub.position == 3


async def test_park_sets_a_failing_event_aside_once_and_replays_it(
    store: tidings.EventStore,
) -> None:
    await fill(store, 10, lambda n: f"order-{n}")
    seen = Seen()

    async def picky(events: list[tidings.RecordedEvent]) -> None:
        if any(e.data["n"] == 4 for e in events):  # type: ignore[index]
            raise ValueError("cannot take n=4")
        await seen(events)

    policy = Retry(attempts=2, backoff=0.01, then="park")
    for _ in range(2):  # a second run must not park it again
        async with subscribe(store, "picky", picky, on_error=policy, batch_size=4) as sub:
            await seen.until(9)
            async with asyncio.timeout(10):  # the bad event may be the last one handled
                while sub.position != 10:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    [bad] = [e.position async for e in store.read_all() if e.data["n"] == 4]  # type: ignore[index]
    assert sorted(set(seen.positions)) == [p for p in range(1, 11) if p != bad]
    [item] = await parked(store, "picky")
    assert item.position == bad and "cannot take n=4" in item.error
    [info] = await subscriptions(store)
    assert info.parked == 1 and info.checkpoint == 10

    replayed = Seen()
    assert await replay_parked(store, "picky", replayed) == 1
    assert replayed.positions == [bad]
    assert await parked(store, "picky") == []
    [info] = await subscriptions(store)
    assert info.checkpoint == 10  # replaying never moves the checkpoint back


async def test_reset_moves_the_checkpoint(store: tidings.EventStore) -> None:
    await fill(store, 6, lambda n: f"order-{n}")
    seen = Seen()
    async with subscribe(store, "again", seen):
        await seen.until(6)
    await reset_subscription(store, "again", position=3)
    async with subscribe(store, "again", seen):
        await seen.until(9)
    assert seen.positions == [1, 2, 3, 4, 5, 6, 4, 5, 6]
    with pytest.raises(tidings.InvalidInput):
        await reset_subscription(store, "nobody", 0)


async def test_bad_arguments_are_refused(store: tidings.EventStore) -> None:
    seen = Seen()
    for kwargs in ({"batch_size": 0}, {"start": "middle"}, {"start": -1}, {"filter": "order"}):
        with pytest.raises(tidings.InvalidInput):
            subscribe(store, "bad", seen, **kwargs)
    with pytest.raises(tidings.InvalidInput):
        subscribe(store, "", seen)
    with pytest.raises(tidings.InvalidInput):
        Retry(attempts=0)
