"""The hub's own logic on the in-process notifier: lifecycle, overflow, closing from callbacks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tidings.errors import InvalidInput, NotifierClosed
from tidings.hub import Hub, HubEvent
from tidings.notify.memory import MemoryNotifier


@pytest.fixture
async def notifier() -> AsyncIterator[MemoryNotifier]:
    n = MemoryNotifier(f"memory://hub-{uuid.uuid4().hex[:8]}")
    try:
        yield n
    finally:
        await n.close()


def values(seen: list[HubEvent]) -> list[Any]:
    return [e.value for e in seen]


class Values(list[Any]):
    """Event values as they arrive, with a way to wait for some."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def append(self, value: Any) -> None:
        super().append(value)
        self.changed.set()

    async def until(self, check: Callable[[list[Any]], bool]) -> None:
        async with asyncio.timeout(5):
            while not check(self):
                self.changed.clear()
                await self.changed.wait()


async def test_consumers_made_before_start_hear_connect_then_subscribe(
    notifier: MemoryNotifier,
) -> None:
    seen: list[HubEvent] = []
    hub = Hub(notifier, name="early")
    hub.consumer(seen.append, "t")
    await hub.start()
    await hub.start()  # idempotent
    await hub.notify("t", value=1)
    await hub.stop()
    await hub.stop()
    assert values(seen) == [
        {"action": "connect", "final": False},
        {"action": "subscribe", "final": False, "topic": "t"},
        1,
        {"action": "stop", "final": True},
    ]
    with pytest.raises(NotifierClosed):
        await hub.start()


async def test_a_consumer_of_a_hub_never_started_still_gets_its_final_event(
    notifier: MemoryNotifier,
) -> None:
    closed: list[HubEvent] = []
    stopped: list[HubEvent] = []
    hub = Hub(notifier, name="idle")
    consumer = hub.consumer(closed.append, "t")
    hub.consumer(stopped.append)
    await consumer.close()
    await consumer.close()
    await hub.stop()
    assert values(closed) == [{"action": "close", "final": True}]
    assert values(stopped) == [{"action": "stop", "final": True}]
    with pytest.raises(NotifierClosed):
        await consumer.subscribe("u")


async def test_stop_delivers_what_is_queued_before_the_stop_event(
    notifier: MemoryNotifier,
) -> None:
    seen: list[Any] = []

    async def slow(event: HubEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.value)

    hub = Hub(notifier, name="drain")
    await hub.start()
    await hub.consumer(slow, "t")
    for i in range(50):
        await hub.notify("t", value=i)
    await hub.stop()
    data = [v for v in seen if not isinstance(v, dict)]
    assert data == list(range(50))
    assert seen[-1] == {"action": "stop", "final": True}


async def test_overflow_drops_the_oldest_and_tells_every_consumer(
    notifier: MemoryNotifier,
) -> None:
    gate = asyncio.Event()
    seen = Values()
    other: list[Any] = []

    taken = asyncio.Event()

    async def blocked(event: HubEvent) -> None:
        if event.topic is not None:
            taken.set()
            await gate.wait()
        if event.value != {"action": "subscribe", "final": False, "topic": "t"}:
            seen.append(event.value)

    async with Hub(notifier, name="full", maxsize=5) as hub:
        await hub.consumer(blocked, "t")
        await hub.consumer(lambda e: other.append(e.value))
        await hub.notify("t", value=0)
        await taken.wait()  # the dispatcher took 0 and waits in the callback
        for i in range(1, 21):
            await hub.notify("t", value=i)
        gate.set()
        await seen.until(lambda vs: len([v for v in vs if isinstance(v, int)]) == 6)
        stats = hub.stats()
        assert stats.dropped == 15 and stats.queue_max == 5
    overflow = {"action": "overflow", "final": False, "detail": "15 messages dropped"}
    assert seen == [0, overflow, 16, 17, 18, 19, 20, {"action": "stop", "final": True}]
    assert overflow in other


async def test_a_consumer_closing_itself_gets_close_after_its_callback_returns(
    notifier: MemoryNotifier,
) -> None:
    seen: list[Any] = []
    witness = Values()

    async def closer(event: HubEvent) -> None:
        seen.append(event.value)
        if event.value == 2:
            await consumer.close()
            seen.append("closed")

    async with Hub(notifier, name="selfclose") as hub:
        consumer = await hub.consumer(closer, "t")
        await hub.consumer(lambda e: witness.append(e.value), "t")
        for i in range(5):
            await hub.notify("t", value=i)
        await witness.until(lambda vs: 4 in vs)
        assert hub.topics == {"t"}
    assert [v for v in seen if not isinstance(v, dict) or v["action"] != "subscribe"] == [
        0,
        1,
        2,
        "closed",
        {"action": "close", "final": True},
    ]


async def test_stop_from_a_callback_does_not_deadlock(notifier: MemoryNotifier) -> None:
    seen = Values()
    hub = Hub(notifier, name="selfstop")

    async def stopper(event: HubEvent) -> None:
        seen.append(event.value)
        if event.value == "stop now":
            await hub.stop()

    await hub.start()
    await hub.consumer(stopper, "t")
    await hub.notify("t", value="stop now")
    await seen.until(lambda vs: {"action": "stop", "final": True} in vs)
    await hub.stop()


async def test_consumer_arguments_are_checked(notifier: MemoryNotifier) -> None:
    hub = Hub(notifier, name="args")
    with pytest.raises(InvalidInput):
        hub.consumer("not callable", "t")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Hub(notifier, maxsize=0)
    consumer = hub.consumer(print, "t")
    with pytest.raises(InvalidInput):
        await consumer.subscribe("ok", "bad topic")
    assert consumer.topics == {"t"}
    assert "args" in repr(hub) and "open" in repr(consumer)
    await hub.stop()


async def test_events_are_frozen_structs() -> None:
    event = HubEvent("t", (1,), {"a": 1})
    assert not event.is_notice and HubEvent(None).is_notice
    with pytest.raises(AttributeError):
        event.topic = "u"  # type: ignore[misc]


async def test_a_consumer_without_topics_still_hears_the_notifier_stop(
    notifier: MemoryNotifier,
) -> None:
    seen: list[Any] = []
    hub = Hub(notifier, name="notopics")
    await hub.start()
    consumer = await hub.consumer(lambda e: seen.append(e.value), "t")
    await consumer.unsubscribe("t")
    await notifier.close()
    for _ in range(10):
        await asyncio.sleep(0)
    try:
        assert {"action": "stop", "final": True} in seen
    finally:
        await hub.stop()


async def test_after_the_notifier_closes_the_hub_takes_no_new_consumers(
    notifier: MemoryNotifier,
) -> None:
    seen = Values()
    async with Hub(notifier, name="late") as hub:
        consumer = await hub.consumer(lambda e: seen.append(e.value), "t")
        await notifier.close()
        await seen.until(lambda vs: {"action": "stop", "final": True} in vs)
        with pytest.raises(NotifierClosed):
            hub.consumer(print, "t")
        with pytest.raises(NotifierClosed):
            await consumer.subscribe("u")
        with pytest.raises(NotifierClosed):
            await hub.notify("t", value=1)
