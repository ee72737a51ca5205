"""A live reader misses no event when its connection to PostgreSQL is cut and comes back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

import tidings
from tests.conftest import POSTGRES_URL
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOTAL = 300


async def follow(store: tidings.EventStore, out: list[int]) -> None:
    async for event in store.read_all(follow=True):
        out.append(event.position)
        if len(out) == TOTAL:
            return


async def write(store: tidings.EventStore) -> None:
    for n in range(TOTAL):
        await store.append(f"order-{n % 7}", [tidings.NewEvent("Placed", {"n": n})])
        await asyncio.sleep(0.005)


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()


@pytest.mark.parametrize("outage", ["cut", "down", "silent", "stalled"])
async def test_a_live_reader_misses_nothing_across_a_lost_server(
    pg_url: str, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(POSTGRES_URL)
    async with TcpProxy("127.0.0.1", target.port or 5432) as proxy:
        writer = await tidings.connect(pg_url)
        # The follower reaches the database (pool and LISTEN connection) only through
        # the proxy, and polls rarely: it must recover by reconnecting, not by luck.
        follower = await tidings.connect(
            # A statement on a connection that went silent gives up after a second.
            through(proxy, pg_url) + "&command_timeout=1",
            poll_interval=0.5,
            notify=through(proxy, POSTGRES_URL)
            + "?keepalive=0.3&keepalive_timeout=0.3&backoff=0.05&backoff_max=0.2",
        )
        seen: list[int] = []
        try:
            reader = asyncio.create_task(follow(follower, seen))
            appends = asyncio.create_task(write(writer))
            while len(seen) < TOTAL // 3:  # noqa: ASYNC110 (a list, not an event)
                await asyncio.sleep(0.01)
            if outage == "cut":
                proxy.cut()
            elif outage == "down":
                proxy.refuse(True)
                proxy.cut()
                await asyncio.sleep(1.0)
                proxy.refuse(False)
            elif outage == "silent":
                proxy.pause()  # half-open: no reset, just silence
                await asyncio.sleep(1.0)
                proxy.cut()
                proxy.resume()
            else:
                proxy.pause()  # half-open for good: only timeouts get the follower out

            await appends
            await asyncio.wait_for(reader, 30)
        finally:
            await writer.close()
            await follower.close()
    assert seen == list(range(1, TOTAL + 1))  # every event, once, in order
    # ...and the outage really hit the follower: its notifier lost the connection
    assert "notifier lost its connection" in caplog.text
    if outage == "stalled":  # and the pool's silent connections gave up at command_timeout
        assert "live read_all lost the store" in caplog.text
