"""The supervising loop's order of news: ``reconnect`` before the new connection's messages."""

from __future__ import annotations

import asyncio

from tidings.notify.base import Message, Notice
from tidings.notify.supervised import SupervisedNotifier


class RacyNotifier(SupervisedNotifier):
    """A fake network notifier: after a reconnect, a message arrives while it re-subscribes,
    as NATS may deliver one between a SUB and its confirming round trip."""

    kind = "fake"

    def __init__(self) -> None:
        super().__init__("fake://", 1024, keepalive=60, backoff=0.01)
        self.opened = 0

    async def _open(self) -> None:
        self.opened += 1

    async def _disconnect(self) -> None:
        pass

    async def _listen_now(self, channels: list[str]) -> None:
        if self.opened > 1:
            for channel in channels:
                self._deliver(channel, b"early")
            await asyncio.sleep(0)

    async def _unlisten_now(self, channels: list[str]) -> None:
        pass

    async def _send_now(self, channel: str, payload: bytes) -> None:
        self._deliver(channel, payload)

    async def _ping(self) -> None:
        pass


async def test_a_message_arriving_while_re_subscribing_follows_the_reconnect_notice() -> None:
    n = RacyNotifier()
    await n.start()
    async with n, n.subscribe("c", notices=True) as sub:
        assert await sub.get(1) == Message("c", b"", Notice("subscribe", topic="c"))
        n._connection_lost("cut")
        got = [await sub.get(1) for _ in range(4)]
        assert [m.notice.action if m.notice else m.payload for m in got] == [
            "disconnect",
            "reconnect",
            "subscribe",
            b"early",
        ]
        await n.publish("c", b"later")
        assert (await sub.get(1)).payload == b"later"
