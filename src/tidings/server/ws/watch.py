"""One ``watch`` of one connection: a view's snapshot, then its changes, stacked per key
while the client is slow, and an expiry the client pushes back with ``want``.

The watch sends ``snapshot`` first, then one ``changes`` message per turn. Each turn
holds every change that piled up since the last one, at most one per key: the view's
``Watch`` stacks them while this side waits for room in the connection's outbox. A
watch not wanted for ``watch_ttl`` seconds ends with ``expired`` (hydro's 60 s; the
client should want every 20 s). Expiry is a real timer, which each ``want`` pushes
back, so a wanted watch is never evicted.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tidings.server.ws import protocol
from tidings.views import View
from tidings.views.watch import Change
from tidings.wire import encoder

if TYPE_CHECKING:
    from tidings.server.ws.connection import Connection


class WsWatch:
    """A watch's task and its expiry timer."""

    def __init__(self, conn: Connection, name: str, view: View, keys: list[str] | None) -> None:
        self.conn = conn
        self.name = name
        self.name_json = encoder.encode(name)
        self.view = view
        self.keys = keys
        self.task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.want()

    def want(self) -> None:
        """Push the expiry back by ``watch_ttl`` seconds."""
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self.conn.settings.watch_ttl, self._expire)

    def stop(self) -> None:
        """End the watch (its task and its timer)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.task is not None:
            self.task.cancel()

    def _expire(self) -> None:
        self._expiry = None
        if self.conn.watches.get(self.name) is self:
            del self.conn.watches[self.name]
            self.stop()
            self.conn.deliver(protocol.reply("expired", watch=self.name))

    async def run(self) -> None:
        """Send the snapshot, then the changes, until stopped."""
        outbox = self.conn.outbox
        async with self.view.watch(self.keys) as watch:
            values, position = await watch.snapshot()
            await outbox.put(
                protocol.reply("snapshot", watch=self.name, values=values, position=position)
            )
            async for first in watch:
                latest: dict[str, Change] = {}  # one change per key: the last one
                for change in (first, *watch.take_ready()):
                    latest.pop(change.key, None)
                    latest[change.key] = change
                changes = list(latest.values())
                body = [
                    {"key": c.key, "deleted": True, "position": c.position}
                    if c.value is None
                    else {"key": c.key, "value": c.value, "position": c.position}
                    for c in changes
                ]
                await outbox.put(protocol.reply("changes", watch=self.name, changes=body))
