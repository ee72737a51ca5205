"""The Notifier protocol, messages, notices, bounded subscriptions and the local fan-out.

A notifier carries short-lived messages between processes. Every backend shares
``NotifierBase``: it validates channels and payloads, keeps one bounded queue per
subscription, counts listeners per channel (the backend LISTENs once per channel,
however many subscriptions want it) and hands each incoming message to every
subscription of its channel.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

import msgspec

from tidings.errors import (
    InvalidChannel,
    InvalidInput,
    NotifierClosed,
    PayloadTooLarge,
    SubscriptionOverflow,
)

log = logging.getLogger("tidings.notify")

Overflow = Literal["drop_oldest", "disconnect"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_oldest", "disconnect")
DEFAULT_MAXSIZE = 1000
MAX_CHANNEL_LENGTH = 63  # PostgreSQL's identifier limit; the strictest backend wins
_CHANNEL = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\Z")


class Notice(msgspec.Struct, frozen=True):
    """A supervisory notice: what happened to the connection or the subscription.

    ``action`` is one of ``connect``, ``disconnect``, ``reconnect``, ``subscribe``
    (``topic`` names the channel), ``stop`` (the notifier closed), ``close`` (this
    subscription closed) or ``overflow`` (``detail`` says how many messages were
    dropped). ``final`` means nothing more will arrive on the subscription.
    """

    action: str
    final: bool = False
    topic: str | None = None
    detail: str = ""


class Message(msgspec.Struct, frozen=True):
    """One message from a subscription: a channel and its payload, or a notice.

    Ordinary messages have ``notice=None``; a supervisory notice (only delivered to
    subscriptions opened with ``notices=True``) has an empty payload and its channel
    set to the topic it concerns, or ``""``.
    """

    channel: str
    payload: bytes
    notice: Notice | None = None


_GOOD_CHANNELS: set[str] = set()  # names already checked: publish runs hot


def check_channel(channel: object) -> str:
    """Validate a channel name: dot-separated words of letters, digits, ``_`` and ``-``."""
    if type(channel) is str and channel in _GOOD_CHANNELS:
        return channel
    if not isinstance(channel, str):
        raise InvalidChannel(f"a channel name must be a str, not {type(channel).__name__}")
    if len(channel) > MAX_CHANNEL_LENGTH or not _CHANNEL.match(channel):
        raise InvalidChannel(
            f"bad channel name {channel!r}: use up to {MAX_CHANNEL_LENGTH} characters of "
            "letters, digits, '_' and '-', in words joined by single dots"
        )
    if type(channel) is str and len(_GOOD_CHANNELS) < 10_000:
        _GOOD_CHANNELS.add(channel)
    return channel


def check_payload(payload: object, limit: int, backend: str) -> bytes:
    """Validate a payload: bytes (or bytearray/memoryview) within ``limit`` bytes."""
    if type(payload) is bytes and len(payload) <= limit:
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise InvalidInput(f"a payload must be bytes, not {type(payload).__name__}")
    if len(payload) > limit:
        raise PayloadTooLarge(len(payload), limit, backend)
    return payload


class Subscription:
    """Messages of one or more channels, in a bounded queue, read with ``async for``.

    When the queue is full, ``overflow="drop_oldest"`` drops the oldest message,
    counts it in ``dropped`` and reports it (a log warning, and an ``overflow``
    notice when notices are on); ``overflow="disconnect"`` ends the subscription,
    and the reader gets ``SubscriptionOverflow``. Memory never grows past ``maxsize``.
    """

    def __init__(
        self,
        notifier: NotifierBase,
        channels: Iterable[str],
        maxsize: int,
        overflow: Overflow,
        notices: bool,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidInput(f"maxsize must be an int >= 1, not {maxsize!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise InvalidInput(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        self.channels: frozenset[str] = frozenset(check_channel(c) for c in channels)
        self.maxsize = maxsize
        self.overflow = overflow
        self.notices = notices
        self.dropped = 0
        self.received = 0
        self.max_depth = 0
        self._notifier = notifier
        self._items: deque[Message] = deque()
        self._unreported = 0
        self._waiter: asyncio.Future[None] | None = None
        self._open = False
        self._ended = False
        self._error: BaseException | None = None

    @property
    def depth(self) -> int:
        """Messages waiting to be read."""
        return len(self._items)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Start listening on the channels (``async with`` does this for you)."""
        if self._open or self._ended:
            return
        self._open = True
        await self._notifier._attach(self, self.channels)

    async def add(self, *channels: str) -> None:
        """Listen on more channels."""
        new = frozenset(check_channel(c) for c in channels) - self.channels
        self.channels |= new
        if self._open and new:
            await self._notifier._attach(self, new)

    async def remove(self, *channels: str) -> None:
        """Stop listening on some channels."""
        gone = frozenset(channels) & self.channels
        self.channels -= gone
        if self._open and gone:
            await self._notifier._detach(self, gone)

    async def close(self) -> None:
        """Stop listening; a reader waiting on the subscription ends."""
        if self._open and not self._ended:
            self._end(None, Notice("close", final=True))
            await self._notifier._detach(self, self.channels)
        self._ended = True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._unreported and self.notices:
                count, self._unreported = self._unreported, 0
                return Message("", b"", Notice("overflow", detail=f"{count} messages dropped"))
            if self._items:
                return self._items.popleft()
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or None when ``timeout`` seconds pass or the subscription ends."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except (TimeoutError, StopAsyncIteration):
            return None

    # -- fed by the notifier -------------------------------------------------

    def _offer(self, message: Message) -> None:
        if self._ended:
            return
        if message.notice is None:
            self.received += 1
        elif not self.notices:
            return
        if len(self._items) >= self.maxsize:
            if self.overflow == "disconnect":
                error = SubscriptionOverflow(tuple(sorted(self.channels)), self.maxsize)
                log.warning("%s", error)
                self._items.clear()
                self._end(error, None)
                self._notifier._forget(self)
                return
            self._items.popleft()
            self.dropped += 1
            if self._unreported == 0:
                log.warning(
                    "subscription to %s is full (%d); dropping its oldest messages",
                    ", ".join(sorted(self.channels)),
                    self.maxsize,
                )
            self._unreported += 1
        self._items.append(message)
        if len(self._items) > self.max_depth:
            self.max_depth = len(self._items)
        self._wake()

    def _end(self, error: BaseException | None, notice: Notice | None) -> None:
        if self._ended:
            return
        if notice is not None and self.notices:
            self._items.append(Message(notice.topic or "", b"", notice))
        self._error = error
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@runtime_checkable
class Notifier(Protocol):
    """Ephemeral pub/sub between processes: publish bytes on a channel, subscribe to channels."""

    url: str
    max_payload: int

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every current subscriber of ``channel``, on any node."""
        ...

    def subscribe(
        self,
        *channels: str,
        maxsize: int = DEFAULT_MAXSIZE,
        overflow: Overflow = "drop_oldest",
        notices: bool = False,
    ) -> Subscription:
        """A bounded subscription to ``channels``; use it with ``async with``."""
        ...

    async def close(self) -> None:
        """Stop every subscription (with a final ``stop`` notice) and disconnect."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NotifierBase(abc.ABC):
    """Validation, subscriptions and the local fan-out, shared by every backend."""

    kind: str = "abstract"

    def __init__(self, url: str, max_payload: int) -> None:
        self.url = url
        self.max_payload = max_payload
        self.published = 0
        self.delivered = 0
        self._channels: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        # Channels whose first subscription is asking the server for them right now.
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    # -- public API ----------------------------------------------------------

    def subscribe(
        self,
        *channels: str,
        maxsize: int = DEFAULT_MAXSIZE,
        overflow: Overflow = "drop_oldest",
        notices: bool = False,
    ) -> Subscription:
        """A bounded subscription to ``channels``; use it with ``async with``."""
        self._check_open()
        return Subscription(self, channels, maxsize, overflow, notices)

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every current subscriber of ``channel``, on any node.

        Raises ``InvalidChannel`` or ``PayloadTooLarge`` before sending anything, and
        ``NotifierUnavailable`` when the server cannot take it now.
        """
        self._check_open()
        check_channel(channel)
        payload = check_payload(payload, self.max_payload, self.kind)
        self._validate(payload)
        await self._send(channel, payload)
        self.published += 1

    @property
    def listening(self) -> frozenset[str]:
        """The channels some subscription listens on."""
        return frozenset(self._channels)

    async def close(self) -> None:
        """Stop every subscription (with a final ``stop`` notice) and disconnect."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            sub._end(None, Notice("stop", final=True))
        self._subscriptions.clear()
        self._channels.clear()
        await self._shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- for backends ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise NotifierClosed(f"the {self.kind} notifier at {self.url} is closed")

    def _validate(self, payload: bytes) -> None:  # noqa: B027 (optional hook)
        """A backend's own payload checks (e.g. the size once encoded for the wire)."""

    def _deliver(self, channel: str, payload: bytes) -> None:
        """Hand an incoming message to every subscription of its channel."""
        subs = self._channels.get(channel)
        if not subs:
            return
        message = Message(channel, payload)
        for sub in tuple(subs):
            sub._offer(message)
        self.delivered += 1

    def _announce(self, notice: Notice, channel: str | None = None) -> None:
        """Give a notice to the subscriptions of ``channel`` (or to all of them)."""
        subs = self._subscriptions if channel is None else self._channels.get(channel, ())
        message = Message(notice.topic or "", b"", notice)
        for sub in tuple(subs):
            sub._offer(message)

    async def _attach(self, sub: Subscription, channels: Iterable[str]) -> None:
        self._check_open()
        self._subscriptions.add(sub)
        new: list[str] = []
        joined: list[str] = []
        for channel in channels:
            subs = self._channels.setdefault(channel, set())
            (joined if subs else new).append(channel)
            subs.add(sub)
        # A channel someone already wanted: wait until the server has it (its
        # ``subscribe`` notice then reaches this subscription too), or say so at once.
        waits = {self._pending[c] for c in joined if c in self._pending}
        for channel in joined:
            if channel not in self._pending and self._has(channel):
                sub._offer(Message(channel, b"", Notice("subscribe", topic=channel)))
        if new:
            done = asyncio.get_running_loop().create_future()
            self._pending.update(dict.fromkeys(new, done))
            try:
                await self._listen(new)
            finally:
                for channel in new:
                    if self._pending.get(channel) is done:
                        del self._pending[channel]
                done.set_result(None)
        if waits:
            await asyncio.wait(waits)

    async def _detach(self, sub: Subscription, channels: Iterable[str]) -> None:
        gone = self._unlink(sub, channels)
        if sub._ended:  # one with no channels left still hears connection notices
            self._subscriptions.discard(sub)
        if gone and not self._closed:
            await self._unlisten(gone)

    def _forget(self, sub: Subscription) -> None:
        """Drop a subscription at once (overflow); unlisten what nobody wants, later."""
        self._subscriptions.discard(sub)
        gone = self._unlink(sub, tuple(sub.channels))
        if gone and not self._closed:
            self._unlisten_soon(gone)

    def _unlink(self, sub: Subscription, channels: Iterable[str]) -> list[str]:
        gone: list[str] = []
        for channel in channels:
            subs = self._channels.get(channel)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self._channels[channel]
                gone.append(channel)
        return gone

    def _unlisten_soon(self, channels: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._unlisten(channels), name=f"tidings.notify.{self.kind}.unlisten"
        )
        task.add_done_callback(_log_failure)

    def _has(self, channel: str) -> bool:
        """Whether the server delivers ``channel`` to this notifier right now."""
        return True

    @abc.abstractmethod
    async def _send(self, channel: str, payload: bytes) -> None:
        """Publish a validated message."""

    @abc.abstractmethod
    async def _listen(self, channels: list[str]) -> None:
        """Start receiving ``channels`` (each newly wanted); announce ``subscribe``."""

    @abc.abstractmethod
    async def _unlisten(self, channels: list[str]) -> None:
        """Stop receiving ``channels`` (nobody wants them any more)."""

    @abc.abstractmethod
    async def _shutdown(self) -> None:
        """Release connections and tasks."""


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed", task.get_name(), exc_info=task.exception())
