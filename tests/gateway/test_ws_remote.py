"""The remote store follows the log over the server's WebSocket (acking each batch once
its pages are taken), through catch-up and live, losing nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

import tidings
from tests.gateway.harness import Server


async def gauge(server: Server, name: str) -> float:
    async with httpx.AsyncClient(base_url=server.http) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("window", ["4", "1"])  # the client acks every 2nd batch, or each
async def test_read_all_follow_uses_the_websocket_through_catch_up_and_live(
    tmp_path: Path, window: str
) -> None:
    env = {"TIDINGS_WS__BATCH_EVENTS": "10", "TIDINGS_WS__MAX_IN_FLIGHT": window}
    server = Server(f"sqlite:///{tmp_path / 'r.db'}", env)
    try:
        remote = await tidings.connect(server.http)
        try:
            events = [tidings.NewEvent("T", {"i": i}) for i in range(100)]
            for i in range(10):
                await remote.append(f"order-{i}", events)  # 1,000 events
            follow = remote.read_all_pages(follow=True, page_size=10).__aiter__()
            first = await anext(follow)
            assert [e.position for e in first] == list(range(1, 11))
            assert await gauge(server, "tidings_ws_connections") == 1.0
            assert await gauge(server, "tidings_sse_clients") == 0.0
            await asyncio.sleep(0.5)  # a reader that pauses loses nothing
            got = [e.position for e in first]
            while len(got) < 1_000:
                got += [e.position for e in await anext(follow)]
            assert got == list(range(1, 1_001))
            # live, after the catch-up
            await remote.append("order-x", [tidings.NewEvent("Late")])
            late = await asyncio.wait_for(anext(follow), 10)
            assert [(e.position, e.type) for e in late] == [(1_001, "Late")]
            await follow.aclose()
        finally:
            await remote.close()
    finally:
        server.stop(signal.SIGTERM)


@pytest.mark.timeout(60)
async def test_remote_watch_listen_and_publish_come_back_after_a_restart(tmp_path: Path) -> None:
    import json

    from tidings.hub import HubEvent

    views = [{"name": "profiles", "category": "profile"}]
    server = Server(f"sqlite:///{tmp_path / 'w.db'}", {"TIDINGS_VIEWS": json.dumps(views)})
    try:
        remote = await tidings.connect(server.http)
        try:
            await remote.append("profile-a", [tidings.NewEvent("new", {"name": "Ann"})])
            changes = remote.watch("profiles", ["a", "b"]).__aiter__()
            first = await asyncio.wait_for(anext(changes), 10)
            assert (first.key, first.value) == ("a", {"name": "Ann"})
            heard = remote.listen("news").__aiter__()

            async def notification() -> HubEvent:
                while True:
                    event = await asyncio.wait_for(anext(heard), 10)
                    if event.topic is not None:
                        return event

            listening = asyncio.create_task(notification())
            await asyncio.sleep(0.5)  # the listen is in place
            await remote.publish("news", (1, 2), {"text": "hello"})
            event = await listening
            assert (event.topic, event.key, event.value) == ("news", (1, 2), {"text": "hello"})

            await remote.append("profile-b", [tidings.NewEvent("new", {"name": "Bob"})])
            second = await asyncio.wait_for(anext(changes), 10)
            assert (second.key, second.value) == ("b", {"name": "Bob"})
            # A restart: the watch is taken up again; what changed meanwhile arrives as
            # changes since what this reader saw (a deleted key, a new value), no repeats.
            await asyncio.to_thread(server.stop, signal.SIGTERM)  # the loop runs meanwhile
            await asyncio.to_thread(server.start)
            await remote.append("profile-a", [tidings.NewEvent("del")])
            await remote.append("profile-b", [tidings.NewEvent("mod", {"age": 40})])
            seen = {}
            while seen.get("b") != {"name": "Bob", "age": 40} or "a" not in seen:
                change = await asyncio.wait_for(anext(changes), 15)
                seen[change.key] = change.value
            assert seen["a"] is None
            listening = asyncio.create_task(notification())
            await asyncio.sleep(1.0)  # listening again after the cut
            await remote.publish("news", (), "again")
            assert (await listening).value == "again"
            await changes.aclose()
            await heard.aclose()
        finally:
            await remote.close()
    finally:
        server.stop(signal.SIGTERM)


@pytest.mark.timeout(30)
async def test_a_follow_with_refused_credentials_raises_access_denied(tmp_path: Path) -> None:
    import json

    from tidings.errors import AccessDenied
    from tidings.server.auth import hash_key

    keys = [{"name": "ci", "hash": hash_key("a-good-key-0123456789"), "scopes": ["admin"]}]
    server = Server(f"sqlite:///{tmp_path / 'a.db'}", {"TIDINGS_AUTH__API_KEYS": json.dumps(keys)})
    try:
        remote = await tidings.connect(server.http, token="a-wrong-key")
        try:
            with pytest.raises(AccessDenied):  # at once, not retried forever
                async with asyncio.timeout(10):
                    async for _ in remote.read_all_pages(follow=True):
                        pass
        finally:
            await remote.close()
    finally:
        server.stop(signal.SIGTERM)
