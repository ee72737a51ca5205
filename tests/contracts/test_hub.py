"""The hub on every notifier backend: events, consumers, notices, confirmations, stats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import tidings.notify
from tidings.errors import InvalidHubKey, NotifierClosed, PayloadTooLarge
from tidings.hub import Hub, HubEvent
from tidings.notify import NotifierBase

WAIT = 15.0


class Collector:
    """A consumer callback that records what it gets and lets a test wait for it."""

    def __init__(self, fail_on: Callable[[HubEvent], bool] | None = None) -> None:
        self.seen: list[HubEvent] = []
        self.fail_on = fail_on
        self._changed = asyncio.Event()

    def __call__(self, event: HubEvent) -> None:
        self.seen.append(event)
        self._changed.set()
        if self.fail_on is not None and self.fail_on(event):
            raise RuntimeError(f"callback refuses {event}")

    @property
    def events(self) -> list[tuple[str | None, tuple[int, ...], Any]]:
        return [(e.topic, e.key, e.value) for e in self.seen if e.topic is not None]

    @property
    def notices(self) -> list[dict[str, Any]]:
        return [e.value for e in self.seen if e.topic is None]

    def actions(self) -> list[str]:
        return [n["action"] for n in self.notices]

    async def wait_for(self, check: Callable[[Collector], bool], within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            while not check(self):
                self._changed.clear()
                await self._changed.wait()

    async def wait_events(self, count: int) -> None:
        await self.wait_for(lambda c: len(c.events) >= count)


@pytest.fixture
async def notifier(notifier_url: str) -> AsyncIterator[NotifierBase]:
    n = await tidings.notify.connect(notifier_url)
    try:
        yield n
    finally:
        await n.close()


@pytest.fixture
def name(channel: str) -> str:
    """A hub name no other test (or concurrent run) uses."""
    return channel


async def test_consumers_get_their_topics_events_in_order_with_exact_key_and_value(
    notifier: NotifierBase, name: str
) -> None:
    orders, both, other = Collector(), Collector(), Collector()
    async with Hub(notifier, name=name) as hub:
        await hub.consumer(orders, "orders")
        await hub.consumer(both, "orders", "refunds")
        await hub.consumer(other, "other")
        sent: list[tuple[str, tuple[int, ...], Any]] = []
        for i in range(40):
            topic = "refunds" if i % 5 == 4 else "orders"
            key = (i, -(2**63), 2**63 - 1) if i % 3 else ()
            value: Any = [None, True, i, i / 7, f"é{i}", {"n": {"m": [i]}}][i % 6]
            await hub.notify(topic, key=key, value=value)
            sent.append((topic, key, value))
        await both.wait_events(40)
        await orders.wait_events(32)
        # Order is kept per topic (NATS delivers each subject on its own, so topics interleave).
        for topic in ("orders", "refunds"):
            got = [e for e in both.events if e[0] == topic]
            expected = [s for s in sent if s[0] == topic]
            assert got == expected
            assert [type(v) for *_, v in got] == [type(v) for *_, v in expected]  # 1 is not True
        assert len(both.events) == len(sent)
        assert orders.events == [s for s in sent if s[0] == "orders"]
        assert other.events == []


async def test_sync_and_async_callbacks_keep_the_order(notifier: NotifierBase, name: str) -> None:
    got: list[int] = []
    done = asyncio.Event()

    async def slow(event: HubEvent) -> None:
        if event.topic is None:
            return
        await asyncio.sleep(0.001 * (event.value % 3))
        got.append(event.value)
        if len(got) == 20:
            done.set()

    async with Hub(notifier, name=name) as hub:
        await hub.consumer(slow, "t")
        for i in range(20):
            await hub.notify("t", value=i)
        async with asyncio.timeout(WAIT):
            await done.wait()
    assert got == list(range(20))


async def test_subscribe_and_unsubscribe_change_what_a_consumer_gets(
    notifier: NotifierBase, name: str
) -> None:
    mover, witness = Collector(), Collector()
    async with Hub(notifier, name=name) as hub:
        consumer = await hub.consumer(mover, "a")
        await hub.consumer(witness, "a", "b")
        await hub.notify("a", value=1)
        await hub.notify("b", value=2)
        await witness.wait_events(2)
        await consumer.subscribe("b", "c")
        assert consumer.topics == {"a", "b", "c"}
        await hub.notify("b", value=3)
        await hub.notify("c", value=4)
        await mover.wait_events(3)
        await consumer.unsubscribe("a", "c", "never")
        assert consumer.topics == {"b"}
        await hub.notify("a", value=5)  # only the witness still wants "a"
        await hub.notify("b", value=6)
        await witness.wait_events(5)
        await mover.wait_events(4)
        assert mover.events == [("a", (), 1), ("b", (), 3), ("c", (), 4), ("b", (), 6)]
        assert witness.events == [
            ("a", (), 1),
            ("b", (), 2),
            ("b", (), 3),
            ("a", (), 5),
            ("b", (), 6),
        ]
        assert hub.topics == {"a", "b"}
        assert set(notifier.listening) >= {f"{name}.a", f"{name}.b"}
        assert f"{name}.c" not in notifier.listening


async def test_notices_reach_consumers_with_subscribe_naming_the_topic(
    notifier: NotifierBase, name: str
) -> None:
    first, second = Collector(), Collector()
    hub = Hub(notifier, name=name)
    await hub.start()
    one = await hub.consumer(first, "x")
    await hub.consumer(second, "y")
    await first.wait_for(lambda c: "subscribe" in c.actions())
    await second.wait_for(lambda c: "subscribe" in c.actions())
    assert {"action": "subscribe", "final": False, "topic": "x"} in first.notices
    assert all(n.get("topic") != "y" for n in first.notices)
    assert {"action": "subscribe", "final": False, "topic": "y"} in second.notices
    for event in first.seen:
        assert event.topic is None and event.key == ()

    await one.close()
    assert first.notices[-1] == {"action": "close", "final": True}
    assert one.closed
    await hub.notify("x", value="after close")
    await hub.notify("y", value="marker")
    await second.wait_events(1)
    assert first.events == []

    await hub.stop()
    assert second.notices[-1] == {"action": "stop", "final": True}
    assert [n for n in second.notices if n["final"]] == [{"action": "stop", "final": True}]
    assert [n for n in first.notices if n["final"]] == [{"action": "close", "final": True}]
    with pytest.raises(NotifierClosed):
        await hub.notify("x", value=1)
    with pytest.raises(NotifierClosed):
        hub.consumer(first, "x")


async def test_a_closing_notifier_stops_every_consumer(notifier: NotifierBase, name: str) -> None:
    seen = Collector()
    hub = Hub(notifier, name=name)
    await hub.start()
    await hub.consumer(seen, "x")
    await notifier.close()
    await seen.wait_for(lambda c: bool(c.notices) and c.notices[-1]["final"])
    assert seen.notices[-1] == {"action": "stop", "final": True}
    await hub.stop()
    assert [n for n in seen.notices if n["final"]] == [{"action": "stop", "final": True}]


async def test_confirm_reports_the_publish_and_failures_do_not_raise(
    notifier: NotifierBase, name: str
) -> None:
    confirmed: list[bool] = []

    async def confirm_async(ok: bool) -> None:
        confirmed.append(ok)

    seen = Collector()
    async with Hub(notifier, name=name) as hub:
        await hub.consumer(seen, "t")
        await hub.notify("t", key=(1,), value="v", confirm=confirmed.append)
        await hub.notify("t", key=(2,), value="w", confirm=confirm_async)
        assert confirmed == [True, True]
        await seen.wait_events(2)

        with pytest.raises(InvalidHubKey):  # bad input raises, confirm or not
            await hub.notify("t", key=(True,), confirm=confirmed.append)
        with pytest.raises(PayloadTooLarge):
            await hub.notify("t", value="x" * (notifier.max_payload + 1), confirm=confirmed.append)
        assert confirmed == [True, True]

        await notifier.close()
        await hub.notify("t", value="lost", confirm=confirmed.append)
        assert confirmed == [True, True, False]
        with pytest.raises(NotifierClosed):
            await hub.notify("t", value="lost")
        stats = hub.stats()
        assert (stats.notified, stats.failed) == (2, 2)


async def test_a_failing_callback_is_counted_and_dispatch_goes_on(
    notifier: NotifierBase, name: str
) -> None:
    flaky = Collector(fail_on=lambda e: e.topic is not None and e.value % 2 == 0)
    steady = Collector()

    async def failing_async(event: HubEvent) -> None:
        raise ValueError("async callbacks may fail too")

    async with Hub(notifier, name=name) as hub:
        await hub.consumer(flaky, "t")
        await hub.consumer(failing_async, "t")
        await hub.consumer(steady, "t")
        for i in range(6):
            await hub.notify("t", value=i)
        await steady.wait_events(6)
        await flaky.wait_events(6)
        assert [v for _, _, v in flaky.events] == list(range(6))
        assert [v for _, _, v in steady.events] == list(range(6))
        assert hub.stats().callback_errors >= 3 + 6


async def test_undecodable_payloads_are_counted_and_skipped(
    notifier: NotifierBase, name: str
) -> None:
    seen = Collector()
    async with Hub(notifier, name=name) as hub:
        await hub.consumer(seen, "t")
        await notifier.publish(f"{name}.t", b"not a hub payload")
        await hub.notify("t", value="after")
        await seen.wait_events(1)
        assert seen.events == [("t", (), "after")]
        stats = hub.stats()
        assert (stats.decode_errors, stats.received) == (1, 2)


async def test_stats_count_the_traffic(notifier: NotifierBase, name: str) -> None:
    seen = Collector()
    async with Hub(notifier, name=name) as hub:
        empty = hub.stats()
        assert (empty.received, empty.notified, empty.consumers) == (0, 0, 0)
        consumer = await hub.consumer(seen, "a", "b")
        for i in range(5):
            await hub.notify("a" if i % 2 else "b", key=(i,), value=i)
        await hub.notify("nobody", value=0)
        await seen.wait_events(5)
        await seen.wait_for(lambda c: c.actions().count("subscribe") == 2)
        stats = hub.stats()
        assert stats.notified == 6
        assert stats.received == 5
        assert stats.failed == stats.callback_errors == stats.decode_errors == 0
        assert stats.listens == 2
        assert stats.consumers == 1 and stats.topics == 2
        assert stats.connects >= 1 and stats.disconnects == 0
        assert 1 <= stats.queue_max <= hub.maxsize
        assert stats.dropped == 0
        assert stats.notices >= 2
        assert stats.to_dict()["received"] == 5
        await consumer.close()
        assert hub.stats().consumers == 0 and hub.stats().topics == 0
