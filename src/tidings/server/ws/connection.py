"""One WebSocket client's state machine: its caller, its subscriptions and its outbox.

A connection runs two tasks: the reader takes the client's messages one by one and
answers each (an ``error`` for a bad one: the socket stays open), and the writer sends
the outbox in order. Every close the server decides on goes through ``shut``: the
subscriptions stop, a ``closing`` message with each one's resume position is queued
after what was already queued, and the close frame follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from typing import TYPE_CHECKING

from tidings.errors import InvalidInput, PayloadTooLarge, TidingsError
from tidings.events import Filter
from tidings.server.auth import Authenticator, Principal, readable
from tidings.server.errors import ApiError
from tidings.server.ws import eager, firefly, protocol
from tidings.server.ws.outbox import Outbox
from tidings.server.ws.subscription import WsSubscription
from tidings.server.ws.watch import WsWatch
from tidings.wire import error_kind

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from tidings.server.node import Node

log = logging.getLogger("tidings.server.ws")


class Connection:
    """One client of ``GET /ws``, after the handshake was accepted."""

    def __init__(
        self,
        websocket: WebSocket,
        node: Node,
        authenticator: Authenticator,
        who: Principal | None,
        firefly: bool = False,
    ) -> None:
        self.ws = websocket
        self.firefly = firefly
        """Whether FireFly's event-stream messages are taken too (no subprotocol asked)."""
        self.node = node
        self.settings = node.settings.ws
        self.authenticator = authenticator
        self.who = who
        self.id = uuid.uuid4().hex
        self.outbox = Outbox(self.settings.queue_messages, self.settings.queue_bytes)
        self.subs: dict[str, WsSubscription] = {}
        self.watches: dict[str, WsWatch] = {}
        self.closing: tuple[int, str] | None = None
        self._sending: asyncio.Task[None] | None = None  # an eager send still under way
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def address(self) -> dict[str, str]:
        """Where this connection lives: its node and its id."""
        return {"node": self.node.id, "connection": self.id}

    async def serve(self) -> None:
        """Run the connection until the client leaves or the server closes it."""
        self.node.ws_joined(self)
        writer = asyncio.create_task(self._write_loop(), name=f"tidings-ws-writer-{self.id}")
        reader = asyncio.create_task(self._read_loop(), name=f"tidings-ws-reader-{self.id}")
        try:
            if self.who is not None:
                self._welcome(None)
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and not reader.cancelled() and reader.exception() is not None:
                log.error("websocket reader failed", exc_info=reader.exception())
                self.shut(protocol.INTERNAL, "the server failed")
            if reader in done and self.closing is not None:
                with contextlib.suppress(TimeoutError):  # let the writer send the close
                    await asyncio.wait_for(asyncio.shield(writer), self.settings.send_timeout)

        finally:
            self.node.ws_left(self)
            with contextlib.suppress(Exception):  # its listens go with it
                await self.node.gateway.forget(self)
            self.node.consumers.forget(self)
            self._stop_subs()
            if self._expiry is not None:
                self._expiry.cancel()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    def shut(self, code: int, reason: str) -> None:
        """Close with ``code``: stop the subscriptions, send their resume positions, close."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        resume = {name: sub.cursor for name, sub in self.subs.items()}
        self._stop_subs()
        self.outbox.force(
            protocol.reply(
                "closing", reason=reason, code=code, resume=resume, store=self.node.store.identity
            )
        )
        self.outbox.finish()

    def _stop_subs(self) -> None:
        for sub in self.subs.values():
            sub.stop()
        for watch in self.watches.values():
            watch.stop()

    def _send(self, data: bytes) -> None:
        """Queue a reply or a notice; a connection with no room for it is too slow."""
        if self.closing is None and not self.outbox.push(data):
            self.shut(protocol.TRY_LATER, "slow consumer: the connection's queue is full")

    def _welcome(self, id: protocol.Id) -> None:
        who = self.who
        assert who is not None
        self._schedule_expiry()
        self._send(
            protocol.reply(
                "ready",
                id,
                protocol=protocol.SUBPROTOCOL,
                address=self.address,
                user=who.user,
                expires=who.expires,
                store=self.node.store.identity,
            )
        )

    # -- the writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        outbox, timeout = self.outbox, self.settings.send_timeout
        try:
            while True:
                if self._sending is not None:  # an eager send that had to wait goes first
                    async with asyncio.timeout(timeout):
                        await self._sending
                data = outbox.pop()
                if data is not None:
                    async with asyncio.timeout(timeout):
                        await self.ws.send({"type": "websocket.send", "text": data.decode()})
                elif outbox.finished:
                    break
                else:
                    await outbox.wait()
            code, reason = self.closing or (protocol.NORMAL, "")
            async with asyncio.timeout(timeout):
                await self.ws.close(code, _short(reason))
        except TimeoutError:
            log.info("websocket %s read nothing for %.0f s: dropped", self.id, timeout)
        except Exception as exc:  # the client went away mid-send
            log.debug("websocket %s send failed: %s", self.id, exc)

    def send_data(self, data: bytes) -> None:
        """Send a data message (an ``events`` batch) that was given room: at once, from
        the caller's step, when the writer idles; else through the outbox."""
        outbox = self.outbox
        if not outbox.idle or outbox.items or self._sending is not None or outbox.finished:
            outbox.force(data)
            return
        message = {"type": "websocket.send", "text": data.decode()}
        try:
            self._sending = eager.start(self.ws.send(message), f"tidings-ws-send-{self.id}")
        except Exception as exc:  # the client went away: the writer ends, the reader sees it
            log.debug("websocket %s send failed: %s", self.id, exc)
            outbox.finish()
            return
        if self._sending is not None:  # the socket's buffer is full: the writer times it
            self._sending.add_done_callback(self._sent)
            outbox.wake()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending = None
        if not task.cancelled() and task.exception() is not None:
            log.debug("websocket %s send failed: %s", self.id, task.exception())
            self.outbox.finish()

    # -- the reader ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        limit = self.settings.max_message_bytes
        auth_by = asyncio.get_running_loop().time() + self.settings.auth_timeout
        while True:
            if self.who is None:  # one deadline for the auth message, however many came
                try:
                    async with asyncio.timeout_at(auth_by):
                        message = await self.ws.receive()
                except TimeoutError:
                    self.shut(protocol.AUTH_TIMEOUT, "no credentials: send an auth message first")
                    return
            else:
                message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if len(raw) > limit:  # uvicorn enforces it too (ws_max_size), with the same code
                self.shut(protocol.TOO_BIG, f"a message is over {limit} bytes")
                return
            if self.closing is not None:
                continue  # closing: what the client still sends is not answered
            try:
                found = firefly.firefly(raw) if self.firefly else None
                if found is None:
                    await self._handle(protocol.decode(raw))
                elif self.who is None:
                    self.shut(
                        protocol.POLICY, "event-stream consumers authenticate in the handshake"
                    )
                    return
                else:
                    self._limit(None)
                    await self.node.consumers.handle(self, found)
            except protocol.BadMessage as exc:
                if self.who is None:  # before the caller is known, only a good auth will do
                    self.shut(protocol.POLICY, f"authenticate first: {exc}")
                    return
                self._send(protocol.error(exc.code, str(exc), exc.id))

    async def _handle(self, message: protocol.ClientMessage) -> None:
        if self.who is None:
            if not isinstance(message, protocol.Auth):
                self.shut(protocol.POLICY, "authenticate first: send an auth message")
                return
            self.who = self._authenticate(message.token)
            if self.who is not None:
                self._welcome(message.id)
            return
        self._limit(message.id)
        if isinstance(message, protocol.Ack):
            self._sub(message.sub, message.id).ack(message.batch, message.id)
        elif isinstance(message, protocol.Subscribe):
            await self._subscribe(message)
        elif isinstance(message, protocol.Unsubscribe):
            sub = self._sub(message.sub, message.id)
            sub.stop()
            del self.subs[message.sub]
            self._send(protocol.reply("unsubscribed", message.id, sub=sub.sub, position=sub.cursor))
        elif isinstance(message, protocol.Ping):
            self._send(protocol.reply("pong", message.id))
        elif isinstance(message, protocol.Refresh):
            self._refresh(message)
        elif isinstance(message, protocol.Auth):
            raise protocol.BadMessage("already_authenticated", "this connection is", message.id)
        elif isinstance(message, protocol.Watch | protocol.Want | protocol.Unwatch):
            self._watch(message)
        else:
            await self._channels(message)

    def _limit(self, id: protocol.Id) -> None:
        """``rate_limited`` past the caller's messages per second."""
        limiter = self.node.ws_limiter
        if limiter is not None and self.who is not None:
            try:
                limiter.check(self.who.subject)
            except ApiError as exc:
                raise protocol.BadMessage("rate_limited", exc.body.message, id) from None

    def _watch(self, message: protocol.Watch | protocol.Want | protocol.Unwatch) -> None:
        who, id = self.who, message.id
        assert who is not None
        if not isinstance(message, protocol.Watch):
            watch = self.watches.get(message.watch)
            if watch is None:
                raise protocol.BadMessage("unknown_watch", f"no watch {message.watch!r}", id)
            if isinstance(message, protocol.Want):
                watch.want()
                ttl = self.settings.watch_ttl
                self._send(protocol.reply("wanted", id, watch=watch.name, expires_in=ttl))
            else:
                del self.watches[message.watch]
                watch.stop()
                self._send(protocol.reply("unwatched", id, watch=watch.name))
            return
        if message.watch in self.watches:
            raise protocol.BadMessage("watch_exists", f"{message.watch!r} is in use", id)
        if len(self.watches) >= self.settings.max_watches:
            raise protocol.BadMessage(
                "too_many_watches",
                f"a connection may hold {self.settings.max_watches} watches",
                id,
            )
        view = self.node.views.get(message.view)
        if view is None:
            raise protocol.BadMessage(
                "unknown_view", f"the server folds no view {message.view!r}", id
            )
        if not who.may("read", view.category):
            raise protocol.BadMessage(
                "forbidden", f"{who.subject} may not read category {view.category!r}", id
            )
        watch = WsWatch(self, message.watch, view, message.keys)
        self.watches[message.watch] = watch
        self._send(protocol.reply("watching", id, watch=watch.name, view=message.view))
        watch.task = asyncio.create_task(watch.run(), name=f"tidings-ws-watch-{self.id}")
        watch.task.add_done_callback(functools.partial(self._watch_ended, watch))

    def _watch_ended(self, watch: WsWatch, task: asyncio.Task[None]) -> None:
        """A watch's task ended by itself (the view closed, or failed): say so."""
        if task.cancelled() or self.watches.get(watch.name) is not watch:
            return
        del self.watches[watch.name]
        watch.stop()
        exc = task.exception()
        if exc is not None and not isinstance(exc, TidingsError):
            log.error("websocket watch failed", exc_info=exc)
        code = "view_closed" if exc is None else _code(exc)
        message = "the view stopped" if exc is None else str(exc) or "the server failed"
        self._send(protocol.reply("error", error=code, message=message, watch=watch.name))

    async def _channels(
        self, message: protocol.Listen | protocol.Unlisten | protocol.Publish
    ) -> None:
        who, id, gateway = self.who, message.id, self.node.gateway
        assert who is not None
        action = "publish" if isinstance(message, protocol.Publish) else "listen"
        if not who.may(action, message.channel):
            raise protocol.BadMessage(
                "forbidden", f"{who.subject} may not {action} on {message.channel!r}", id
            )
        try:
            if isinstance(message, protocol.Listen):
                await gateway.listen(self, message.channel)
                self._send(protocol.reply("listening", id, channel=message.channel))
            elif isinstance(message, protocol.Unlisten):
                await gateway.unlisten(self, message.channel)
                self._send(protocol.reply("unlistened", id, channel=message.channel))
            else:
                await gateway.publish(message.channel, tuple(message.key), message.value)
                self._send(protocol.reply("published", id, channel=message.channel))
        except PayloadTooLarge as exc:
            raise protocol.BadMessage("payload_too_large", str(exc), id) from None
        except InvalidInput as exc:
            raise protocol.BadMessage("invalid_message", str(exc), id) from None
        except TidingsError as exc:
            raise protocol.BadMessage(_code(exc), str(exc), id) from None

    def deliver(self, data: bytes) -> None:
        """Queue a notification or a message for this client (too slow for it: 1013)."""
        self._send(data)

    def _sub(self, name: str, id: protocol.Id) -> WsSubscription:
        sub = self.subs.get(name)
        if sub is None:
            raise protocol.BadMessage("unknown_subscription", f"no subscription {name!r}", id)
        return sub

    async def _subscribe(self, message: protocol.Subscribe) -> None:
        who, id = self.who, message.id
        assert who is not None
        if message.sub in self.subs:
            raise protocol.BadMessage("subscription_exists", f"{message.sub!r} is in use", id)
        if len(self.subs) >= self.settings.max_subscriptions:
            raise protocol.BadMessage(
                "too_many_subscriptions",
                f"a connection may hold {self.settings.max_subscriptions} subscriptions",
                id,
            )
        if message.from_position is not None and message.start is not None:
            raise protocol.BadMessage("invalid_message", "give from_position or from, not both", id)
        identity = self.node.store.identity
        if message.store is not None and message.store != identity:
            raise protocol.BadMessage(
                "store_changed",
                f"the store is {identity}, not {message.store} whose positions were given:"
                " start over",
                id,
            )
        given = message.filter
        try:
            found = None
            if given is not None:
                found = Filter(
                    given.categories, given.stream_prefix, given.types, given.stream_pattern
                )
            allowed = readable(who, None if found is None or found.is_empty else found, "subscribe")
        except InvalidInput as exc:
            raise protocol.BadMessage("invalid_filter", f"bad filter: {exc}", id) from None
        except ApiError as exc:
            raise protocol.BadMessage(exc.body.error, exc.body.message, id) from None
        if message.start == "end":
            try:
                cursor = await self.node.store.head()
            except TidingsError as exc:
                raise protocol.BadMessage(_code(exc), str(exc), id) from None
        else:
            cursor = message.from_position or 0
        sub = WsSubscription(self, message.sub, allowed, cursor, message.ack == "auto")
        self.subs[message.sub] = sub
        paced = {} if sub.auto else {"max_in_flight": self.settings.max_in_flight}
        self._send(
            protocol.reply("subscribed", id, sub=sub.sub, position=cursor, store=identity, **paced)
        )
        sub.task = asyncio.create_task(sub.run(), name=f"tidings-ws-sub-{self.id}-{sub.sub}")
        sub.task.add_done_callback(functools.partial(self._ended, sub))

    def _ended(self, sub: WsSubscription, task: asyncio.Task[None]) -> None:
        """A subscription's task ended by itself: say so, with where to resume."""
        if task.cancelled() or self.subs.get(sub.sub) is not sub:
            return
        del self.subs[sub.sub]
        exc = task.exception()
        if not isinstance(exc, TidingsError):
            log.error("websocket subscription failed", exc_info=exc)
        message = str(exc) if isinstance(exc, TidingsError) else "the server failed"
        self._send(
            protocol.reply(
                "error",
                error=_code(exc),
                message=message,
                sub=sub.sub,
                resume=sub.cursor,
            )
        )

    # -- credentials --------------------------------------------------------------------

    def _authenticate(self, token: str) -> Principal | None:
        try:
            return self.authenticator.from_token(token)
        except ApiError as exc:
            self.shut(protocol.POLICY, exc.body.message)
            return None

    def _refresh(self, message: protocol.Refresh) -> None:
        assert self.who is not None
        try:
            fresh = self.authenticator.from_token(message.token)
        except ApiError as exc:
            raise protocol.BadMessage(exc.body.error, exc.body.message, message.id) from None
        if fresh.subject != self.who.subject:
            raise protocol.BadMessage(
                "forbidden", "a refresh must carry a token of the same subject", message.id
            )
        self.who = fresh
        self._schedule_expiry()
        self._send(protocol.reply("refreshed", message.id, expires=fresh.expires))

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = None if self.who is None else self.who.expires
        if expires is not None:
            loop = asyncio.get_running_loop()
            leeway = self.authenticator.settings.jwt_leeway  # as the token was checked
            delay = max(0.0, expires + leeway - time.time())
            self._expiry = loop.call_later(
                delay, self.shut, protocol.POLICY, "the token expired: refresh it in time"
            )


def _code(exc: BaseException | None) -> str:
    kind = error_kind(exc) if isinstance(exc, TidingsError) else None
    return "internal_error" if kind is None else kind.code


def _short(reason: str) -> str:
    """A close reason within the 123 bytes a close frame may carry."""
    data = reason.encode()
    return reason if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."
