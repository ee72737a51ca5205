"""Many live readers of one store: each sees every event once, in order, and they share
the reads of the newest events."""

from __future__ import annotations

import asyncio

import pytest

import tidings
from tidings import Filter, NewEvent


async def follow(
    store: tidings.EventStore, count: int, after: int, filter: Filter | None = None
) -> list[int]:
    seen: list[int] = []
    async for event in store.read_all(from_position=after, filter=filter, follow=True):
        seen.append(event.position)
        if len(seen) == count:
            break
    return seen


async def test_many_live_readers_each_see_every_event_once_in_order_under_writers(
    store: tidings.EventStore,
) -> None:
    await store.append("warm-1", [NewEvent("Warmed", {})])
    start = await store.head()
    writers, appends = 4, 60  # each append: two events, "even-" and "odd-" streams alternate

    async def writer(w: int) -> None:
        for n in range(appends):
            kind = "even" if n % 2 == 0 else "odd"
            await store.append(f"{kind}-{w}", [NewEvent("Happened", {"n": n})] * 2)

    total = writers * appends * 2
    evens = total // 2
    readers = [asyncio.ensure_future(follow(store, total, start)) for _ in range(20)]
    readers += [
        asyncio.ensure_future(follow(store, evens, start, Filter(categories=["even"])))
        for _ in range(10)
    ]
    await asyncio.sleep(0.05)  # the readers are live before the writers start
    await asyncio.gather(*(writer(w) for w in range(writers)))
    seen = await asyncio.wait_for(asyncio.gather(*readers), 30)
    log = [e async for e in store.read_all(from_position=start)]
    every = [e.position for e in log]
    even = [e.position for e in log if e.stream.startswith("even-")]
    assert len(every) == total
    assert all(s == every for s in seen[:20])
    assert all(s == even for s in seen[20:])


async def test_live_readers_at_the_head_share_the_reads_of_new_events(
    store: tidings.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    log_page = store._log_page  # type: ignore[attr-defined]

    async def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await log_page(*args)

    monkeypatch.setattr(store, "_log_page", counted)
    appends, readers = 50, 20
    followers = [asyncio.ensure_future(follow(store, appends, 0)) for _ in range(readers)]
    await asyncio.sleep(0.05)
    for n in range(appends):
        await store.append("order-1", [NewEvent("Happened", {"n": n})])
        await asyncio.sleep(0.002)  # each append a wake-up of its own
    seen = await asyncio.wait_for(asyncio.gather(*followers), 30)
    assert all(s == list(range(1, appends + 1)) for s in seen)
    # Each reader reading for itself makes at least one read per reader per append.
    assert reads < 4 * appends + readers, reads
