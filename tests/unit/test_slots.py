"""The bound on appends waiting for a writer."""

from __future__ import annotations

import asyncio

from tidings.store.batching import Slots


async def test_appends_past_the_bound_wait_for_a_slot_and_each_freed_slot_lets_one_in() -> None:
    slots = Slots(2)
    assert slots.take_now() and slots.take_now()
    assert not slots.take_now()
    entered: list[int] = []

    async def waiter(n: int) -> None:
        await slots.take()
        entered.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert entered == [] and slots.taken == 2
    slots.give()
    await asyncio.sleep(0.01)
    assert len(entered) == 1 and slots.taken == 2  # one in, the bound kept
    slots.give()
    slots.give()
    await asyncio.gather(*tasks)
    assert sorted(entered) == [0, 1, 2] and slots.taken == 2
