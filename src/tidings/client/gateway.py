"""The remote store's side of the WebSocket gateway (docs/protocol.md): following the
log with acks, watching a view, listening to a channel. Each runs on a connection of
its own and comes back by itself after a cut."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from tidings.errors import StoreUnavailable, TidingsError
from tidings.events import Filter, RecordedEvent
from tidings.hub import HubEvent
from tidings.store import redact
from tidings.views.watch import Change
from tidings.wire import encoder

if TYPE_CHECKING:
    from tidings.client.store import RemoteStore

log = logging.getLogger("tidings.client")
_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0


class Message(msgspec.Struct):
    """What the client reads of a ``tidings.v1`` server message."""

    type: str
    batch: int = 0
    events: list[RecordedEvent] = msgspec.field(default_factory=list)
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    position: int = 0
    changes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    channel: str | None = None
    key: list[int] = msgspec.field(default_factory=list)
    value: Any = None
    action: str | None = None
    final: bool = False
    expires_in: float | None = None
    error: str | None = None
    message: str | None = None
    max_in_flight: int | None = None


_decoder = msgspec.json.Decoder(Message)


@contextlib.asynccontextmanager
async def connection(store: RemoteStore) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """One ``tidings.v1`` connection to the store's server; errors as StoreUnavailable."""
    url = "ws" + store.base[len("http") :] + "/ws"
    try:
        async with store.session.ws_connect(
            url, protocols=("tidings.v1",), timeout=aiohttp.ClientWSTimeout(ws_close=5),
            heartbeat=30, max_msg_size=0,
        ) as ws:  # fmt: skip
            yield ws
    except (aiohttp.WSServerHandshakeError, TidingsError):
        raise  # AccessDenied is a PermissionError, an OSError: not a lost server
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(redact(store.url), f"{type(exc).__name__}: {exc}") from exc


async def messages(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[Message]:
    """The server's messages until it closes (a ``closing`` ends them too)."""
    async for raw in ws:
        if raw.type is not aiohttp.WSMsgType.TEXT:
            break
        message = _decoder.decode(raw.data)
        if message.type == "closing":
            break
        yield message


def check_close(store: RemoteStore, ws: aiohttp.ClientWebSocketResponse) -> None:
    """Raise when the server closed for good (1008: credentials; 4000: the protocol);
    return when a reconnect may do (a restart, an overload, a cut)."""
    code = ws.close_code
    if code == 1008:
        body = encoder.encode(
            {"error": "unauthorized", "message": "the server refused the credentials"}
        )
        raise store._error(401, body)
    if code == 4000:
        raise StoreUnavailable(redact(store.url), "the server does not speak tidings.v1")


def error_of(store: RemoteStore, message: Message) -> TidingsError:
    """The exception a server's ``error`` message stands for."""
    status = {"forbidden": 403, "unauthorized": 401}.get(message.error or "", 400)
    if message.error in ("store_unavailable", "internal_error"):
        status = 503
    body = encoder.encode({"error": message.error, "message": message.message or ""})
    return store._error(status, body)


async def follow_pages(
    store: RemoteStore, after: int, filter: Filter | None, size: int
) -> AsyncIterator[list[RecordedEvent]]:
    """Pages from one subscription, acked once the caller has taken their pages (every
    half of the server's ``max_in_flight``): the server sends no more than a few batches
    ahead of the reader. A server without
    ``/ws`` is followed over SSE instead (and remembered)."""
    subscribe: dict[str, Any] = {"type": "subscribe", "sub": "follow", "from_position": after}
    if filter is not None and not filter.is_empty:
        subscribe["filter"] = {
            "categories": None if filter.categories is None else list(filter.categories),
            "types": None if filter.types is None else list(filter.types),
            "stream_prefix": filter.stream_prefix,
            "stream_pattern": filter.stream_pattern,
        }
    try:
        async with connection(store) as ws:
            store._ws = True
            await ws.send_bytes(encoder.encode(subscribe))
            every, acked = 1, 0  # ack every batch, unless the server says its window
            async for message in messages(ws):
                if message.type == "events":
                    events = message.events
                    while events:
                        yield events[:size]
                        events = events[size:]
                    if message.batch - acked >= every:
                        ack = {"type": "ack", "sub": "follow", "batch": message.batch}
                        await ws.send_bytes(encoder.encode(ack))
                        acked = message.batch
                elif message.type == "subscribed" and message.max_in_flight:
                    # Acks are cumulative: one every half window keeps the server
                    # sending, with half the messages to read.
                    every = (message.max_in_flight + 1) // 2
                elif message.type == "error":
                    raise error_of(store, message)
            check_close(store, ws)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (404, 405) and store._ws is None:
            store._ws = False  # an older server: no WebSocket gateway
            async for page in store._live_pages(after, filter, size):
                yield page
            return
        raise StoreUnavailable(redact(store.url), f"WebSocket handshake: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise StoreUnavailable(redact(store.url), f"{type(exc).__name__}: {exc}") from exc
    raise StoreUnavailable(redact(store.url), "the WebSocket closed")


async def watch(store: RemoteStore, view: str, keys: list[str] | None) -> AsyncIterator[Change]:
    """A view's ``Change``s: each existing key's value, then every change.

    The watch is wanted a third of its lifetime before it would expire. After a cut it
    is watched again, and the new snapshot is turned into the changes since what this
    reader last saw (a key that vanished comes as deleted), so what it sees converges on
    the view's state without repeats.
    """
    known: dict[str, Any] = {}
    retry = _RETRY_FIRST
    while True:
        try:
            async with connection(store) as ws:
                request = {"type": "watch", "watch": "w", "view": view, "keys": keys}
                await ws.send_bytes(encoder.encode(request))
                wants = asyncio.create_task(_keep_wanting(ws))
                try:
                    async for message in messages(ws):
                        if message.type == "snapshot":
                            retry = _RETRY_FIRST
                            for change in _diff(known, message.values, message):
                                yield change
                        elif message.type == "changes":
                            for item in message.changes:
                                change = _change(item)
                                if change.value is None:
                                    known.pop(change.key, None)
                                else:
                                    known[change.key] = change.value
                                yield change
                        elif message.type == "wanted" and message.expires_in:
                            wants.cancel()
                            wants = asyncio.create_task(_keep_wanting(ws, message.expires_in))
                        elif message.type == "error":
                            raise error_of(store, message)
                finally:
                    wants.cancel()
                check_close(store, ws)
        except (StoreUnavailable, aiohttp.WSServerHandshakeError) as exc:
            log.warning("watch of %s lost the server (%s); again in %.2f s", view, exc, retry)
        store._check_open()
        await asyncio.sleep(retry)
        retry = min(retry * 2, _RETRY_MAX)


def _diff(known: dict[str, Any], values: dict[str, Any], message: Message) -> list[Change]:
    position = message.position
    changes = [Change(k, v, position) for k, v in values.items() if known.get(k) != v]
    changes += [Change(k, None, position) for k in known if k not in values]
    known.clear()
    known.update(values)
    return changes


def _change(item: dict[str, Any]) -> Change:
    value = None if item.get("deleted") else item.get("value")
    return Change(str(item["key"]), value, int(item["position"]))


async def _keep_wanting(ws: aiohttp.ClientWebSocketResponse, ttl: float = 60.0) -> None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(ttl / 3)
            await ws.send_bytes(b'{"type":"want","watch":"w"}')


async def listen(store: RemoteStore, channel: str) -> AsyncIterator[HubEvent]:
    """A channel's notifications as ``HubEvent``s (and notices: ``topic`` None), at most
    once; after a cut it listens again and says so with a ``reconnect`` notice."""
    retry = _RETRY_FIRST
    cut = False
    while True:
        try:
            async with connection(store) as ws:
                await ws.send_bytes(encoder.encode({"type": "listen", "channel": channel}))
                async for message in messages(ws):
                    if message.type == "listening":
                        retry = _RETRY_FIRST
                        if cut:
                            yield HubEvent(None, (), {"action": "reconnect", "final": False})
                    elif message.type == "notification":
                        yield HubEvent(channel, tuple(message.key), message.value)
                    elif message.type == "notice":
                        notice = {"action": message.action, "final": message.final}
                        yield HubEvent(None, (), notice)
                    elif message.type == "error":
                        raise error_of(store, message)
                check_close(store, ws)
        except (StoreUnavailable, aiohttp.WSServerHandshakeError) as exc:
            log.warning("listen to %s lost the server (%s); again in %.2f s", channel, exc, retry)
        cut = True
        store._check_open()
        await asyncio.sleep(retry)
        retry = min(retry * 2, _RETRY_MAX)
