"""A hub whose server goes away: consumers hear disconnect then reconnect, and later
messages arrive."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

import tidings.notify
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_notifier_faults import FAST, backend, server_url, via
from tidings import Hub, HubEvent

__all__ = ["backend"]  # the parametrized fixture, shared with the notifier fault tests

pytestmark = pytest.mark.slow


@pytest.fixture
def url(backend: str) -> str:
    return server_url(backend)  # sync: it may check PostgreSQL with asyncio.run


async def test_hub_consumers_ride_out_a_server_outage(url: str, channel: str) -> None:
    target = urlsplit(url)
    name = channel.replace(".", "-")
    async with TcpProxy("127.0.0.1", target.port or 0) as proxy:
        behind = await tidings.notify.connect(via(url, proxy.port), **FAST)
        direct = await tidings.notify.connect(url)
        events: list[HubEvent] = []
        arrived = asyncio.Event()

        def on_event(event: HubEvent) -> None:
            events.append(event)
            if event.topic == "orders" and event.value == {"after": True}:
                arrived.set()

        async with behind, direct, Hub(behind, name=name) as hub, Hub(direct, name=name) as sender:
            await hub.consumer(on_event, "orders")
            proxy.refuse(True)
            proxy.cut()
            await asyncio.sleep(1.0)
            proxy.refuse(False)
            # Publish from a node that never lost its connection, until one arrives.
            for _ in range(100):
                await sender.notify("orders", key=(1,), value={"after": True})
                try:
                    await asyncio.wait_for(arrived.wait(), 0.1)
                    break
                except TimeoutError:
                    continue
            assert arrived.is_set(), [e.value for e in events]
            stats = hub.stats()
            notices = [e for e in events if e.topic is None]  # before the hub's final stop

    actions = [e.value["action"] for e in notices]
    assert "disconnect" in actions and "reconnect" in actions
    assert actions.index("disconnect") < actions.index("reconnect")
    assert not any(e.value["final"] for e in notices)
    assert stats.disconnects >= 1 and stats.connects >= 2
