"""What one running server holds: its store, settings, live fan-out and stop signal."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.requests import HTTPConnection

from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.streams import EventStreams
from tidings.server.declared import load_types, open_views
from tidings.server.eventstreams import open_eventstreams, start_dispatcher
from tidings.server.limits import RateLimiter
from tidings.server.live import LiveLog
from tidings.server.settings import Settings
from tidings.server.ws.firefly import Consumers
from tidings.server.ws.roster import PRESENCE, Roster, topic_of
from tidings.store import EventStore
from tidings.types import Types
from tidings.views import View

if TYPE_CHECKING:
    from tidings.server.ws.connection import Connection
    from tidings.server.ws.gateway import Gateway


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
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ws_connections: set[Connection] = field(default_factory=set)
    ws_limiter: RateLimiter | None = None
    _ws_idle: asyncio.Event = field(default_factory=asyncio.Event)
    gateway: Gateway = field(init=False)
    eventstreams: EventStreams | None = field(init=False, default=None)
    consumers: Consumers = field(init=False, default_factory=Consumers)
    dispatcher: Dispatcher | None = field(init=False, default=None)
    types: Types | None = field(init=False, default=None)
    """The registry that ``upcast=true`` reads apply (the settings' ``types``)."""

    def __post_init__(self) -> None:
        from tidings.server.ws.gateway import Gateway

        if self.settings.types is not None:
            self.types = load_types(self.settings.types)
        self.gateway = Gateway(self)
        self._ws_idle.set()
        rate = self.settings.ws.messages_per_second
        if rate > 0:
            self.ws_limiter = RateLimiter(rate, max(1, int(rate)))

    async def start_views(self) -> None:
        """Open and start folding the configured views; start running event streams."""
        self.views = open_views(self.store, self.settings.views)
        for view in self.views.values():
            await view.start()
        streams = self.streams()
        if streams is not None:  # consumers here may be served by a node running elsewhere
            roster = Roster(self.consumers, streams, self.id, self.gateway.notify)
            roster.start(self._join_roster)
            self.consumers.roster = roster
        self.dispatcher = await start_dispatcher(
            streams, self.settings.eventstreams, self.id, self.consumers
        )

    async def _join_roster(self) -> None:
        consumer = await self.gateway.ready()
        await consumer.subscribe(PRESENCE, topic_of(self.id))

    def streams(self) -> EventStreams | None:
        """The event-stream API on the node's store (None for a remote store)."""
        if self.eventstreams is None:
            self.eventstreams = open_eventstreams(self.store, self.settings.eventstreams)
            self.consumers.streams = self.eventstreams
        return self.eventstreams

    def begin_stop(self) -> None:
        """Tell live streams to end (each sends a last ``retry:`` and closes) and
        WebSockets to close with 1012 after their resume positions."""
        self.stopping.set()
        for client in self.live.clients:
            client.wake.set()
        for connection in list(self.ws_connections):
            connection.shut(1012, "the server is restarting: reconnect and resume")

    def ws_joined(self, connection: Connection) -> None:
        """Count a WebSocket connection in."""
        self.ws_connections.add(connection)
        self._ws_idle.clear()

    def ws_left(self, connection: Connection) -> None:
        """Count a WebSocket connection out."""
        self.ws_connections.discard(connection)
        if not self.ws_connections:
            self._ws_idle.set()

    async def ws_closed(self, within: float) -> None:
        """Wait up to ``within`` seconds for the WebSockets to finish closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._ws_idle.wait()

    async def close(self) -> None:
        """End live streams, then close the store if this node opened it."""
        self.begin_stop()
        await self.ws_closed(min(2.0, self.settings.shutdown_timeout))
        await self.live.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.consumers.roster is not None:
            await self.consumers.roster.close()
        await self.gateway.close()
        for view in self.views.values():
            await view.close()
        if self.owned:
            await self.store.close()


def node_in(request: HTTPConnection) -> Node:
    """The node serving ``request``."""
    node: Node = request.app.state.tidings
    return node


async def node_of(request: Request) -> Node:
    """The node serving ``request`` (a FastAPI dependency: async, so it runs on the loop
    rather than in a worker thread)."""
    return node_in(request)
