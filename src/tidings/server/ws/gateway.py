"""The node's share of the gateway: channels between clients, and sends to a connection
or a user on any node, over the notifier (pghub's topics, hydro's ``Send``).

One hub per node, with one consumer: channel ``c.<name>`` for each channel some local
connection listens to, ``n.<node id>`` for sends to this node's connections, ``u``
for sends to a user, whom any node may hold, and ``e`` and ``e.<node id>`` for
websocket event-stream consumers on other nodes (``tidings.server.ws.roster``). A
message is encoded once and queued to each local connection it is for.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tidings.errors import InvalidInput
from tidings.hub import Consumer, Hub, HubEvent
from tidings.notify import Notifier, check_channel
from tidings.server.ws import protocol

if TYPE_CHECKING:
    from tidings.server.node import Node
    from tidings.server.ws.connection import Connection

USERS = "u"
HUB = "tidings-gw"
MAX_CHANNEL = 48  # with the hub's and the topic's prefixes, within a notifier's 63


async def send(
    notifier: Notifier,
    data: Any,
    *,
    connection: dict[str, str] | None = None,
    user: str | None = None,
    sender: str = "python",
) -> None:
    """Send ``data`` from any process on the servers' notifier to a WebSocket client on
    whichever node holds it: one connection (its ``ready`` message's ``address``) or
    every connection of ``user`` (a JWT's ``sub``). It arrives as ``message {from, data}``.

    Delivery is at most once: a client that is not connected at that moment misses it.
    """
    await send_on(Hub(notifier, name=HUB), data, sender, connection, user)


async def send_on(
    hub: Hub, data: Any, sender: str, connection: dict[str, str] | None, user: str | None
) -> None:
    """``send`` through an open hub."""
    if (connection is None) == (user is None):
        raise InvalidInput("send to a connection or to a user, not both or neither")
    if connection is not None:
        node = connection.get("node", "")
        value = {"connection": connection.get("connection", ""), "from": sender, "data": data}
        await hub.notify(check_channel(f"n.{node}"), (), value)
    else:
        await hub.notify(USERS, (), {"user": user, "from": sender, "data": data})


class Gateway:
    """Channels and sends for one node's WebSocket connections."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.listeners: dict[str, set[Connection]] = {}
        self._hub: Hub | None = None
        self._consumer: Consumer | None = None
        self._owned: Notifier | None = None
        self._lock = asyncio.Lock()

    async def ready(self) -> Consumer:
        """Start the hub (once) and return its consumer."""
        return await self._ready()

    async def notify(self, topic: str, value: Any) -> None:
        """Publish ``value`` on one of the gateway's own topics, to every node."""
        await self._ready()
        assert self._hub is not None
        await self._hub.notify(topic, (), value)

    async def _ready(self) -> Consumer:
        if self._consumer is not None:
            return self._consumer
        async with self._lock:
            if self._consumer is None:
                notifier: Notifier | None = getattr(self.node.store, "notifier", None)
                if notifier is None:  # one process, no notifier: one of its own
                    from tidings.notify import connect

                    notifier = self._owned = await connect(f"memory://tidings-gw-{self.node.id}")
                hub = Hub(notifier, name=HUB)
                await hub.start()
                self._hub = hub
                self._consumer = await hub.consumer(self._deliver, f"n.{self.node.id}", USERS)
        return self._consumer

    @staticmethod
    def topic(channel: str) -> str:
        """The hub topic of a client's channel (``InvalidInput`` for a bad name)."""
        if len(channel) > MAX_CHANNEL:
            raise InvalidInput(f"a channel name has up to {MAX_CHANNEL} characters")
        return f"c.{check_channel(channel)}"

    async def listen(self, connection: Connection, channel: str) -> None:
        """Deliver ``channel``'s events to ``connection``."""
        topic = self.topic(channel)
        consumer = await self._ready()
        local = self.listeners.setdefault(channel, set())
        first = not local
        local.add(connection)
        if first:
            await consumer.subscribe(topic)

    async def unlisten(self, connection: Connection, channel: str) -> None:
        """Stop delivering ``channel`` to ``connection``."""
        local = self.listeners.get(channel)
        if local is None or connection not in local:
            return
        local.discard(connection)
        if not local:
            del self.listeners[channel]
            if self._consumer is not None:
                await self._consumer.unsubscribe(self.topic(channel))

    async def forget(self, connection: Connection) -> None:
        """A connection closed: drop its listens."""
        for channel in [c for c, conns in self.listeners.items() if connection in conns]:
            await self.unlisten(connection, channel)

    async def publish(self, channel: str, key: tuple[int, ...], value: Any) -> None:
        """Publish to ``channel`` on every node (bad input raises, publishing nothing)."""
        topic = self.topic(channel)
        await self._ready()
        assert self._hub is not None
        await self._hub.notify(topic, key, value)

    async def send(
        self,
        data: Any,
        sender: str,
        connection: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        """Send ``data`` to a connection (``{"node", "connection"}``) or to every
        connection of ``user``, on whichever node holds it."""
        await self._ready()
        assert self._hub is not None
        await send_on(self._hub, data, sender, connection, user)

    async def close(self) -> None:
        """Stop the hub (and the notifier it made for itself)."""
        if self._hub is not None:
            await self._hub.stop()
        if self._owned is not None:
            await self._owned.close()

    def _deliver(self, event: HubEvent) -> None:
        topic = event.topic
        if topic is None:  # a notice: to every connection that listens to something
            fields = dict(event.value)
            about = fields.pop("topic", None)
            notice_for: set[Connection]
            if isinstance(about, str):  # a channel is listened to: its listeners' news
                if not about.startswith("c."):
                    return  # this node's own topics are none of the clients' business
                fields["channel"] = about[2:]
                notice_for = set(self.listeners.get(about[2:], ()))
            else:
                notice_for = {c for conns in self.listeners.values() for c in conns}
            notice = protocol.reply("notice", **fields)
            for connection in notice_for:
                connection.deliver(notice)
            return
        if topic == "e" or topic.startswith("e."):
            roster = self.node.consumers.roster
            if roster is not None:
                roster.receive(event.value)
            return
        if topic.startswith("c."):
            channel = topic[2:]
            local = self.listeners.get(channel)
            if local:
                data = protocol.reply(
                    "notification", channel=channel, key=list(event.key), value=event.value
                )
                for connection in tuple(local):
                    connection.deliver(data)
            return
        value = event.value if isinstance(event.value, dict) else {}
        message = protocol.reply(
            "message", **{"from": value.get("from"), "data": value.get("data")}
        )
        if topic == USERS:
            for connection in tuple(self.node.ws_connections):
                who = connection.who
                if who is not None and who.user is not None and who.user == value.get("user"):
                    connection.deliver(message)
        else:
            for connection in tuple(self.node.ws_connections):
                if connection.id == value.get("connection"):
                    connection.deliver(message)
