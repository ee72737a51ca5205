"""What one running server holds: its store, settings, live fan-out and stop signal."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from tidings.server.declared import open_views
from tidings.server.live import LiveLog
from tidings.server.settings import Settings
from tidings.store import EventStore
from tidings.views import View


@dataclass
class Node:
    """The server's state, shared by every request of one app."""

    store: EventStore
    settings: Settings
    owned: bool
    live: LiveLog
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    sse_clients: int = 0
    views: dict[str, View] = field(default_factory=dict)

    async def start_views(self) -> None:
        """Open and start folding the configured views."""
        self.views = open_views(self.store, self.settings.views)
        for view in self.views.values():
            await view.start()

    def begin_stop(self) -> None:
        """Tell live streams to end (each sends a last ``retry:`` and closes)."""
        self.stopping.set()
        for client in self.live.clients:
            client.wake.set()

    async def close(self) -> None:
        """End live streams, then close the store if this node opened it."""
        self.begin_stop()
        await self.live.close()
        for view in self.views.values():
            await view.close()
        if self.owned:
            await self.store.close()


def node_in(request: Request) -> Node:
    """The node serving ``request``."""
    node: Node = request.app.state.tidings
    return node


async def node_of(request: Request) -> Node:
    """The node serving ``request`` (a FastAPI dependency: async, so it runs on the loop
    rather than in a worker thread)."""
    return node_in(request)
