"""The hub: pghub's topic/key/value events, consumers, notices and statistics on any notifier.

hub = tidings.Hub(notifier, name="billing")
async with hub:
    consumer = await hub.consumer(print, "invoices")
    await hub.notify("invoices", key=(101, 102), value={"total": 10})

A hub owns one subscription of its notifier (with notices, bounded, dropping the
oldest message when full) and one named, supervised dispatcher task that reads it
and calls every consumer of a message's topic in turn. Topic ``t`` travels on the
channel ``f"{name}.{t}"``; the key and value travel together as one JSON payload.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Self

import msgspec

from tidings.errors import (
    InvalidChannel,
    InvalidHubPayload,
    InvalidInput,
    NotifierClosed,
)
from tidings.hub_codec import Key, check_key, decode_event, encode_event

__all__ = ["Consumer", "Hub", "HubEvent", "HubStats", "check_key", "decode_event", "encode_event"]
from tidings.notify import DEFAULT_MAXSIZE, Message, Notice, Notifier, Subscription, check_channel
from tidings.supervise import Supervisor

log = logging.getLogger("tidings.hub")

Callback = Callable[["HubEvent"], object]
"""A consumer's callback: a plain function, or one returning an awaitable (``async def``)."""


class HubEvent(msgspec.Struct, frozen=True):
    """What a consumer receives: an event of a topic, or a notice (``topic is None``).

    A notice has the key ``()`` and a value like ``{"action": "reconnect", "final":
    False}``, plus ``"topic"`` for ``subscribe`` and ``"detail"`` when there is one.
    ``final`` means the consumer gets nothing more.
    """

    topic: str | None
    key: Key = ()
    value: Any = None

    @property
    def is_notice(self) -> bool:
        """Whether this is a supervisory notice rather than a published event."""
        return self.topic is None


class HubStats(msgspec.Struct, frozen=True):
    """Counters of a hub: traffic, failures, the server side and its queue."""

    received: int
    """Events read from the notifier (well-formed or not)."""
    notified: int
    """Events this hub published."""
    failed: int
    """Publishes that failed (the notifier could not take them)."""
    callback_errors: int
    """Callbacks (and the final events' callbacks) that raised."""
    decode_errors: int
    """Payloads that did not decode; they reached no consumer."""
    notices: int
    """Supervisory notices read from the notifier."""
    listens: int
    """Channels the server confirmed listening on (``subscribe`` notices), re-listens included."""
    connects: int
    """The notifier's connections made (0 when it does not count them)."""
    disconnects: int
    """The notifier's connections lost (0 when it does not count them)."""
    queue_depth: int
    """Messages waiting in the hub's subscription now."""
    queue_max: int
    """The most messages that ever waited in it."""
    dropped: int
    """Messages dropped because the queue was full."""
    consumers: int
    """Open consumers."""
    topics: int
    """Topics some open consumer wants."""

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return msgspec.structs.asdict(self)


def _notice_event(
    action: str, final: bool = False, topic: str | None = None, detail: str = ""
) -> HubEvent:
    value: dict[str, Any] = {"action": action, "final": final}
    if topic is not None:
        value["topic"] = topic
    if detail:
        value["detail"] = detail
    return HubEvent(None, (), value)


# -- consumers -----------------------------------------------------------------------


class Consumer:
    """A callback and the topics it wants, made by ``Hub.consumer``.

    Its callback gets the events of its topics in the order the notifier delivers
    them, and the hub's notices; it runs on the hub's dispatcher task, so a slow
    callback holds up every consumer of the hub (and a sync one blocks the loop).
    ``await consumer`` (or ``await consumer.ready()``) returns once the notifier
    listens on its topics.
    """

    def __init__(self, hub: Hub, callback: Callback, topics: frozenset[str]) -> None:
        self.hub = hub
        self.callback = callback
        self.topics = topics
        self._closed = False
        self._finished = False
        self._close_pending = False
        self._pending: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """Whether the consumer was closed (by ``close`` or by its hub stopping)."""
        return self._closed or self._finished

    async def ready(self) -> None:
        """Wait until the notifier listens on this consumer's topics (when the hub runs)."""
        pending = self._pending
        if pending is not None:
            await asyncio.wait({pending})  # waits without being cancelled with it
            if not pending.cancelled() and pending.exception() is not None:
                raise pending.exception()  # type: ignore[misc]

    def __await__(self) -> Generator[Any, None, Self]:
        return self._ready_self().__await__()

    async def _ready_self(self) -> Self:
        await self.ready()
        return self

    async def subscribe(self, *topics: str) -> None:
        """Also receive ``topics``; returns once the notifier listens on them."""
        self._check_open()
        self.hub._check_running()
        wanted = self.hub._channels_of(topics)
        self.topics = self.topics | frozenset(wanted.values())
        self.hub._route(self, self.topics)
        await self.hub._reconcile()

    async def unsubscribe(self, *topics: str) -> None:
        """Stop receiving ``topics`` (topics it does not have are ignored)."""
        self._check_open()
        self.topics = self.topics - frozenset(topics)
        self.hub._route(self, self.topics)
        await self.hub._reconcile()

    async def close(self) -> None:
        """Stop receiving; the callback gets a final ``close`` event.

        When a callback of this consumer is running (``close`` called from inside it,
        or from elsewhere meanwhile) the ``close`` event follows once it returns.
        """
        if self._closed:
            return
        self._closed = True
        self.hub._drop(self)
        if self.hub._busy is self:
            self._close_pending = True
        else:
            await self.hub._finish(self, _notice_event("close", final=True))
        await self.hub._reconcile()

    def _check_open(self) -> None:
        if self.closed:
            raise NotifierClosed("the hub consumer is closed")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Consumer {self.hub.name} {sorted(self.topics)} {state}>"


# -- the hub -------------------------------------------------------------------------


class Hub:
    """pghub's API on any notifier: ``notify(topic, key, value)``, consumers, notices, stats.

    ``maxsize`` bounds the hub's subscription queue; when consumers fall that far
    behind, the oldest messages are dropped and every consumer gets an ``overflow``
    notice. The hub never closes the notifier it was given.
    """

    def __init__(
        self,
        notifier: Notifier,
        name: str = "hub",
        *,
        maxsize: int = DEFAULT_MAXSIZE,
        stop_timeout: float = 5.0,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidInput(f"maxsize must be an int >= 1, not {maxsize!r}")
        self.notifier = notifier
        self.name = check_channel(name)
        self.maxsize = maxsize
        self.stop_timeout = stop_timeout
        self._prefix = name + "."
        self._consumers: list[Consumer] = []
        self._routes: dict[str, list[Consumer]] = {}
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()
        self._tasks = Supervisor()
        self._dispatcher: asyncio.Task[Any] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._busy: Consumer | None = None
        self._started = False
        self._stopped = False
        self._ended = False  # the notifier closed the subscription
        self._greet: tuple[Consumer, ...] = ()
        self._received = 0
        self._notified = 0
        self._failed = 0
        self._callback_errors = 0
        self._decode_errors = 0
        self._notices = 0
        self._listens = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every topic some consumer wants and start dispatching."""
        if self._stopped:
            raise NotifierClosed(f"hub {self.name} was stopped")
        if self._started:
            return
        async with self._lock:
            sub = self.notifier.subscribe(
                *self._wanted(), maxsize=self.maxsize, overflow="drop_oldest", notices=True
            )
            await sub.open()
            self._sub = sub
            self._started = True
            if getattr(self.notifier, "connected", True):
                self._greet = tuple(self._consumers)  # they missed the notifier's connect
        self._dispatcher = self._tasks.spawn(f"tidings.hub.{self.name}.dispatch", self._dispatch)

    async def stop(self) -> None:
        """Stop: deliver what is queued, then a final ``stop`` event to every consumer.

        Waits up to ``stop_timeout`` seconds for the callbacks to drain the queue.
        """
        if self._stopped:
            return
        self._stopped = True
        async with self._lock:
            if self._sub is not None:
                await self._sub.close()  # the dispatcher ends at the closing notice
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not asyncio.current_task():
            done, _ = await asyncio.wait({dispatcher}, timeout=self.stop_timeout)
            if not done:
                log.warning("hub %s: callbacks still busy after %gs", self.name, self.stop_timeout)
                await self._tasks.stop()
        # background listens finish at once now: they find the hub stopped
        await asyncio.gather(*self._background, return_exceptions=True)
        for consumer in tuple(self._consumers):
            await self._finish(consumer, _notice_event("stop", final=True))
        if dispatcher is not asyncio.current_task():
            await self._tasks.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the public API ----------------------------------------------------------

    def consumer(self, callback: Callback, *topics: str) -> Consumer:
        """A new consumer of ``topics`` calling ``callback(event)`` (sync or async).

        Routing starts at once; the notifier starts listening in the background:
        ``await hub.consumer(...)`` waits for it.
        """
        self._check_running()
        if not callable(callback):
            raise InvalidInput(f"a consumer callback must be callable, not {callback!r}")
        wanted = self._channels_of(topics)
        consumer = Consumer(self, callback, frozenset(wanted.values()))
        self._consumers.append(consumer)
        self._route(consumer, consumer.topics)
        if self._started:
            consumer._pending = self._spawn(self._reconcile(), f"tidings.hub.{self.name}.listen")
        return consumer

    async def notify(
        self,
        topic: str,
        key: Key = (),
        value: Any = None,
        confirm: Callable[[bool], object] | None = None,
    ) -> None:
        """Publish an event of ``topic`` to every consumer of it, on any node.

        Works before ``start`` too (publishing needs no subscription). Bad input
        raises (``InvalidChannel``, ``InvalidHubKey``, ``InvalidHubValue``,
        ``PayloadTooLarge``) and publishes nothing. Without ``confirm`` a failed
        publish raises its error; with it, ``confirm(True)`` or ``confirm(False)``
        is called (and awaited when it returns an awaitable) instead.
        """
        channel = self._channel(topic)
        payload = encode_event(key, value)
        try:
            if self._stopped:
                raise NotifierClosed(f"hub {self.name} was stopped")
            await self.notifier.publish(channel, payload)
        except InvalidInput:
            raise
        except Exception:
            self._failed += 1
            if confirm is None:
                raise
            log.debug("hub %s: publish to %s failed", self.name, topic, exc_info=True)
            ok = False
        else:
            self._notified += 1
            ok = True
        if confirm is not None:
            result = confirm(ok)
            if inspect.isawaitable(result):
                await result

    def stats(self) -> HubStats:
        """The hub's counters now."""
        sub = self._sub
        return HubStats(
            received=self._received,
            notified=self._notified,
            failed=self._failed,
            callback_errors=self._callback_errors,
            decode_errors=self._decode_errors,
            notices=self._notices,
            listens=self._listens,
            connects=int(getattr(self.notifier, "connects", 0)),
            disconnects=int(getattr(self.notifier, "disconnects", 0)),
            queue_depth=sub.depth if sub is not None else 0,
            queue_max=sub.max_depth if sub is not None else 0,
            dropped=sub.dropped if sub is not None else 0,
            consumers=len(self._consumers),
            topics=len(self._routes),
        )

    @property
    def topics(self) -> frozenset[str]:
        """The topics some open consumer wants."""
        return frozenset(self._routes)

    def __repr__(self) -> str:
        return (
            f"<Hub {self.name} on {type(self.notifier).__name__}, {len(self._consumers)} consumers>"
        )

    # -- topics and routes -------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopped:
            raise NotifierClosed(f"hub {self.name} was stopped")
        if self._ended:
            raise NotifierClosed(f"hub {self.name}: its notifier was closed")

    def _channel(self, topic: object) -> str:
        if not isinstance(topic, str):
            raise InvalidChannel(f"a hub topic must be a str, not {type(topic).__name__}")
        check_channel(topic)
        try:
            return check_channel(self._prefix + topic)
        except InvalidChannel:
            raise InvalidChannel(
                f"hub topic {topic!r} is too long for hub {self.name!r}: the channel "
                f"{self._prefix + topic!r} is over 63 characters"
            ) from None

    def _channels_of(self, topics: tuple[str, ...]) -> dict[str, str]:
        """Validate every topic before changing anything: channel -> topic."""
        return {self._channel(topic): topic for topic in topics}

    def _wanted(self) -> list[str]:
        return sorted(self._prefix + topic for topic in self._routes)

    def _route(self, consumer: Consumer, topics: frozenset[str]) -> None:
        for topic, consumers in list(self._routes.items()):
            if topic not in topics and consumer in consumers:
                consumers.remove(consumer)
                if not consumers:
                    del self._routes[topic]
        for topic in sorted(topics):
            consumers = self._routes.setdefault(topic, [])
            if consumer not in consumers:
                consumers.append(consumer)

    def _drop(self, consumer: Consumer) -> None:
        self._route(consumer, frozenset())
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    async def _reconcile(self) -> None:
        """Make the subscription's channels the ones consumers want (in any order of calls)."""
        async with self._lock:
            sub = self._sub
            if sub is None or self._stopped:
                return
            wanted = frozenset(self._wanted())
            more = sorted(wanted - sub.channels)
            gone = sorted(sub.channels - wanted)
            if more:
                await sub.add(*more)
            if gone:
                await sub.remove(*gone)

    def _spawn(self, work: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed", task.get_name(), exc_info=task.exception())

    # -- dispatch ----------------------------------------------------------------

    async def _dispatch(self) -> None:
        sub = self._sub
        if sub is None:
            return
        greet, self._greet = self._greet, ()
        if greet:
            await self._call_each(greet, _notice_event("connect"))
        async for message in sub:
            if message.notice is None:
                await self._deliver(message)
            elif await self._on_notice(message.notice):
                return

    async def _deliver(self, message: Message) -> None:
        self._received += 1
        topic = message.channel[len(self._prefix) :]
        try:
            key, value = decode_event(message.payload)
        except InvalidHubPayload as exc:
            self._decode_errors += 1
            log.warning("hub %s: dropped a payload on %s: %s", self.name, message.channel, exc)
            return
        consumers = self._routes.get(topic)
        if consumers:
            await self._call_each(tuple(consumers), HubEvent(topic, key, value))

    async def _on_notice(self, notice: Notice) -> bool:
        """Pass a notice on; True when it was the subscription's last."""
        self._notices += 1
        if notice.final:  # "stop" (the notifier closed) or "close" (the hub stopped)
            self._ended = True
            await self._broadcast(_notice_event("stop", final=True, detail=notice.detail))
            return True
        if notice.action == "subscribe":
            self._listens += 1
            channel = notice.topic or ""
            if not channel.startswith(self._prefix):
                return False
            topic = channel[len(self._prefix) :]
            consumers = self._routes.get(topic)
            if consumers:
                event = _notice_event("subscribe", topic=topic, detail=notice.detail)
                await self._call_each(tuple(consumers), event)
            return False
        await self._broadcast(_notice_event(notice.action, detail=notice.detail))
        return False

    async def _broadcast(self, event: HubEvent) -> None:
        if event.value["final"]:
            for consumer in tuple(self._consumers):
                await self._finish(consumer, event)
        else:
            await self._call_each(tuple(self._consumers), event)

    async def _call_each(self, consumers: tuple[Consumer, ...], event: HubEvent) -> None:
        for consumer in consumers:
            if consumer.closed:
                continue
            self._busy = consumer
            try:
                await self._call(consumer, event)
            finally:
                self._busy = None
            if consumer._close_pending:
                consumer._close_pending = False
                await self._finish(consumer, _notice_event("close", final=True))

    async def _finish(self, consumer: Consumer, event: HubEvent) -> None:
        """Give ``consumer`` its final event, once."""
        if consumer._finished:
            return
        consumer._finished = True
        self._drop(consumer)
        await self._call(consumer, event)

    async def _call(self, consumer: Consumer, event: HubEvent) -> None:
        try:
            result = consumer.callback(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._callback_errors += 1
            log.exception("hub %s: a consumer callback failed on %r", self.name, event)
