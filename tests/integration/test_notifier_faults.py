"""Notifier faults on real servers, through a TCP proxy: outages, half-open sockets,
slow subscribers under load, and a supervising task that dies.

Nothing here restarts a shared server: every fault is made by ``TcpProxy`` between
the notifier and PostgreSQL, Redis or NATS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

import tidings.notify
from tests.conftest import POSTGRES_URL, pg_execute, require_postgres, require_service
from tests.integration.tcp_proxy import TcpProxy
from tidings.errors import NotifierUnavailable
from tidings.notify import Message, Notice, Subscription
from tidings.notify.supervised import SupervisedNotifier

NETWORK_BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]
# Small timings so that every fault shows within a second or two.
FAST = {
    "keepalive": 0.3,
    "keepalive_timeout": 0.3,
    "backoff": 0.05,
    "backoff_max": 0.2,
    "connect_timeout": 1,
    "publish_timeout": 0.3,
}


def server_url(backend: str) -> str:
    if backend == "postgres":
        require_postgres()
        return POSTGRES_URL
    return require_service(backend)


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's, user and password kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture(params=NETWORK_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target_url(backend: str) -> str:
    """The real server's URL (checked here, outside the test's event loop)."""
    return server_url(backend)


@pytest.fixture
async def proxy(target_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(target_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0) as p:
        yield p


@pytest.fixture
def proxied_url(target_url: str, proxy: TcpProxy) -> str:
    return via(target_url, proxy.port)


async def next_notice(sub: Subscription, action: str, within: float) -> Message:
    """The next notice of ``action``, skipping ordinary messages and other notices."""
    async with asyncio.timeout(within):
        async for message in sub:
            if message.notice is not None and message.notice.action == action:
                return message
    raise AssertionError(f"the subscription ended before a {action!r} notice")


async def payloads(sub: Subscription, count: int, within: float = 5) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(within):
        async for message in sub:
            if message.notice is None:
                got.append(message.payload)
                if len(got) == count:
                    break
    return got


async def eventually(check: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- the server goes away and comes back ---------------------------------------------------


@pytest.mark.slow
async def test_subscribers_hear_an_outage_and_get_messages_again_after_it(
    proxied_url: str, proxy: TcpProxy, channel: str
) -> None:
    n = await tidings.notify.connect(proxied_url, **FAST)
    assert isinstance(n, SupervisedNotifier)
    async with n, n.subscribe(channel, notices=True) as sub:
        assert (await sub.get(5)) == Message(channel, b"", Notice("subscribe", topic=channel))

        proxy.refuse(True)  # the server is down: reconnects fail ...
        proxy.cut()  # ... and every open connection is reset
        disconnect = await next_notice(sub, "disconnect", within=3)
        assert disconnect.notice is not None and disconnect.notice.detail
        assert not n.connected

        started = time.monotonic()
        with pytest.raises(NotifierUnavailable, match="not connected"):
            await n.publish(channel, b"while down")
        assert 0.25 <= time.monotonic() - started < 1.5  # it waited publish_timeout, no more

        await asyncio.sleep(0.7)  # about a second of outage in all
        assert proxy.refused >= 1, "the notifier did not try to reconnect"
        proxy.refuse(False)

        await next_notice(sub, "reconnect", within=3)
        again = await next_notice(sub, "subscribe", within=3)
        assert again.notice == Notice("subscribe", topic=channel)
        assert n.connected and n.disconnects == 1 and n.connects == 2

        await n.publish(channel, b"after the outage")
        assert await payloads(sub, 1) == [b"after the outage"]


@pytest.mark.slow
async def test_a_publish_waiting_through_a_short_outage_goes_out_after_it(
    proxied_url: str, proxy: TcpProxy, channel: str
) -> None:
    n = await tidings.notify.connect(proxied_url, **{**FAST, "publish_timeout": 5})
    async with n, n.subscribe(channel, notices=True) as sub:
        await next_notice(sub, "subscribe", within=5)
        proxy.refuse(True)
        proxy.cut()
        await next_notice(sub, "disconnect", within=3)
        publishing = asyncio.create_task(n.publish(channel, b"patient"))
        await asyncio.sleep(0.3)
        assert not publishing.done()
        proxy.refuse(False)
        await asyncio.wait_for(publishing, 5)
        assert await payloads(sub, 1) == [b"patient"]


@pytest.mark.slow
async def test_a_publish_waiting_for_a_connection_gets_notifier_closed_at_close(
    proxied_url: str, proxy: TcpProxy, channel: str
) -> None:
    n = await tidings.notify.connect(proxied_url, **{**FAST, "publish_timeout": 30})
    async with n.subscribe(channel, notices=True) as sub:
        await next_notice(sub, "subscribe", within=5)
        proxy.refuse(True)
        proxy.cut()
        await next_notice(sub, "disconnect", within=3)
        publishing = asyncio.create_task(n.publish(channel, b"never"))
        await asyncio.sleep(0.2)
        await n.close()
        with pytest.raises(tidings.NotifierClosed):
            await asyncio.wait_for(publishing, 2)  # at close, not after publish_timeout


# -- a half-open connection ----------------------------------------------------------------


@pytest.mark.slow
async def test_a_silent_connection_is_caught_by_the_keepalive_and_replaced(
    proxied_url: str, proxy: TcpProxy, channel: str
) -> None:
    n = await tidings.notify.connect(proxied_url, **FAST)
    async with n, n.subscribe(channel, notices=True) as sub:
        await next_notice(sub, "subscribe", within=5)
        before = proxy.accepted

        proxy.pause()  # nothing crosses the old connections; new ones are not paused
        started = time.monotonic()
        disconnect = await next_notice(sub, "disconnect", within=3)
        assert time.monotonic() - started < 2
        assert disconnect.notice is not None and "keepalive" in disconnect.notice.detail

        await next_notice(sub, "reconnect", within=3)
        await next_notice(sub, "subscribe", within=3)
        assert proxy.accepted > before  # it came back through new connections

        await n.publish(channel, b"flowing again")
        assert await payloads(sub, 1) == [b"flowing again"]


# -- a slow subscriber under load -------------------------------------------------------------


@pytest.mark.slow
async def test_a_stalled_subscriber_stays_bounded_while_a_fast_one_gets_everything(
    notifier_url: str, channel: str
) -> None:
    count, bound = 50_000, 100
    sent = [str(i).encode() for i in range(count)]
    async with (
        await tidings.notify.connect(notifier_url) as n,
        n.subscribe(channel, maxsize=bound) as stalled,
        n.subscribe(channel, maxsize=count) as fast,
    ):
        reading = asyncio.create_task(payloads(fast, count, within=40))
        for start in range(0, count, 1000):
            await asyncio.gather(*(n.publish(channel, p) for p in sent[start : start + 1000]))
            assert stalled.depth <= bound
        assert await reading == sent
        assert fast.dropped == 0

        await eventually(lambda: stalled.received == count)
        assert stalled.depth == stalled.max_depth == bound
        assert stalled.dropped == count - bound
        assert await payloads(stalled, bound) == sent[-bound:]


# -- the supervising task ----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_supervisor_task_that_dies_is_logged_and_restarted(
    proxied_url: str,
    proxy: TcpProxy,
    channel: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = await tidings.notify.connect(proxied_url, **FAST)
    assert isinstance(n, SupervisedNotifier)
    n._tasks.restart_delay = 0.05
    disconnect = n._disconnect
    calls = 0

    async def broken_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the disconnect path")
        await disconnect()

    monkeypatch.setattr(n, "_disconnect", broken_once)
    name = f"tidings.notify.{n.kind}.supervisor"
    with caplog.at_level(logging.ERROR, logger="tidings.tasks"):
        async with n, n.subscribe(channel, notices=True) as sub:
            await next_notice(sub, "subscribe", within=5)
            proxy.cut()
            await next_notice(sub, "reconnect", within=5)
            await n.publish(channel, b"survived")
            assert await payloads(sub, 1) == [b"survived"]
            assert n._tasks.failures == {name: 1}
            assert isinstance(n._tasks.last_error, RuntimeError)
            assert n._tasks.running(name)
    failed = [r for r in caplog.records if r.getMessage() == f"task {name} failed; restarting it"]
    assert len(failed) == 1 and failed[0].exc_info is not None


# -- a loss while re-subscribing ----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_connection_lost_while_resubscribing_is_noticed_at_once(
    proxied_url: str, proxy: TcpProxy, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keepalive is far off: only the driver's own word can report the loss.
    n = await tidings.notify.connect(proxied_url, **{**FAST, "keepalive": 30})
    assert isinstance(n, SupervisedNotifier)
    listen_now = n._listen_now
    killed: list[int] = []

    async def listen_then_lose_the_sender(channels: list[str]) -> None:
        sender: Any = n._sender  # type: ignore[attr-defined]
        if n.disconnects and not killed:
            killed.append(sender.get_server_pid())
            await pg_execute(f"SELECT pg_terminate_backend({killed[0]})")
            await eventually(sender.is_closed, within=3)
        await listen_now(channels)

    monkeypatch.setattr(n, "_listen_now", listen_then_lose_the_sender)
    async with n, n.subscribe(channel, notices=True) as sub:
        await next_notice(sub, "subscribe", within=5)
        proxy.cut()
        await next_notice(sub, "reconnect", within=3)
        assert killed, "the sender was not lost during the reconnect"
        # The sender died during that reconnect: the notifier must go round again.
        await next_notice(sub, "disconnect", within=2)
        await next_notice(sub, "reconnect", within=3)
        await n.publish(channel, b"sent on a live connection")
        assert await payloads(sub, 1) == [b"sent on a live connection"]
        assert n.failed == 0
