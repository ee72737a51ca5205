"""A store's head positions on a notifier channel: the feed that wakes live readers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tidings.notify.base import NotifierBase, Subscription

log = logging.getLogger("tidings.notify")


class NotifierHeads:
    """Publishes a store's head as a decimal position and hears other nodes' heads.

    Payloads are hints, never events: a reader that hears one reads the store. After
    a reconnect or an overflow the feed says "maybe missed" (``None``), and readers
    poll the database at once.
    """

    def __init__(self, notifier: NotifierBase, channel: str, owned: bool = False) -> None:
        self.notifier = notifier
        self.channel = channel
        self.owned = owned
        self._sub: Subscription | None = None

    async def open(self) -> None:
        """Subscribe to the head channel."""
        self._sub = self.notifier.subscribe(self.channel, maxsize=64, notices=True)
        await self._sub.open()

    async def publish(self, position: int) -> None:
        """Tell other processes that the log reaches ``position``."""
        await self.notifier.publish(self.channel, b"%d" % position)

    async def follow(self, on_head: Callable[[int | None], None]) -> None:
        """Hand every head heard to ``on_head``; ``None`` when some may have been missed."""
        if self._sub is None:
            await self.open()
        sub = self._sub
        if sub is None:
            return
        async for message in sub:
            if message.notice is not None:
                if message.notice.action in ("reconnect", "overflow"):
                    on_head(None)
                continue
            try:
                position = int(message.payload)
            except ValueError:
                log.warning("ignoring a bad head on %s: %r", self.channel, message.payload[:40])
                continue
            on_head(position)

    async def close(self) -> None:
        """Stop listening, and close the notifier when this feed owns it."""
        if self._sub is not None:
            await self._sub.close()
        if self.owned:
            await self.notifier.close()
