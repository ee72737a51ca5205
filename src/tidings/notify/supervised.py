"""The connection loop every network notifier shares: keepalive, reconnect, re-subscribe.

A backend supplies ``_open`` (connect), ``_disconnect``, ``_listen_now``,
``_unlisten_now``, ``_send_now`` and ``_ping``, and calls ``_connection_lost`` from
its driver's callbacks. ``SupervisedNotifier`` does the rest: one named, supervised
task watches the connection (the driver's own signal, or a keepalive ping that goes
unanswered), tells subscribers ``disconnect``, reconnects with jittered exponential
backoff, LISTENs again on every wanted channel, and tells them ``reconnect`` and
``subscribe``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random

from tidings.errors import NotifierUnavailable
from tidings.notify.base import Notice, NotifierBase
from tidings.store import redact
from tidings.supervise import Supervisor

log = logging.getLogger("tidings.notify")


class SupervisedNotifier(NotifierBase):
    """A notifier over a network connection that it keeps alive and re-opens."""

    def __init__(
        self,
        url: str,
        max_payload: int,
        *,
        keepalive: float = 5.0,
        keepalive_timeout: float | None = None,
        backoff: float = 0.05,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        publish_timeout: float = 2.0,
    ) -> None:
        super().__init__(url, max_payload)
        self.keepalive = float(keepalive)
        self.keepalive_timeout = float(keepalive_timeout or keepalive)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.connect_timeout = float(connect_timeout)
        self.publish_timeout = float(publish_timeout)
        self.connects = 0
        self.disconnects = 0
        self.listens = 0
        self.failed = 0
        self._up = asyncio.Event()
        self._stopped = asyncio.Event()  # closing: publishes waiting for a connection end
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._listened: set[str] = set()
        self._held: list[tuple[str, bytes]] = []  # arrived while re-subscribing
        self._tasks = Supervisor()

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self._up.is_set()

    async def start(self) -> None:
        """Connect (raising ``NotifierUnavailable`` if the server cannot be reached) and
        start the supervising task."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._open()
        except Exception as exc:
            await self._disconnect()
            raise NotifierUnavailable(redact(self.url), _describe(exc)) from exc
        self._came_up("connect")
        self._tasks.spawn(f"tidings.notify.{self.kind}.supervisor", self._supervise)

    def _connection_lost(self, reason: str) -> None:
        """Called by a backend (from any callback) when its connection broke."""
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    # -- the loop ----------------------------------------------------------------

    def _came_up(self, action: str) -> None:
        self.connects += 1
        self._up.set()
        log.info("%s notifier %s: %s", self.kind, action, redact(self.url))
        self._announce(Notice(action))
        for channel in sorted(self._listened):
            self._announce(Notice("subscribe", topic=channel), channel)
        held, self._held = self._held, []
        for channel, payload in held:
            super()._deliver(channel, payload)

    def _deliver(self, channel: str, payload: bytes) -> None:
        # A message on the new connection while the loop still re-subscribes: its
        # subscribers hear ``reconnect`` first, then the message.
        if self._up.is_set():
            super()._deliver(channel, payload)
        else:
            self._held.append((channel, payload))

    async def _supervise(self) -> None:
        while True:
            reason = await self._watch()
            self._up.clear()
            self.disconnects += 1
            log.warning("%s notifier lost its connection: %s", self.kind, reason)
            self._announce(Notice("disconnect", detail=reason))
            await self._disconnect()
            await self._reconnect()

    async def _watch(self) -> str:
        """Wait until the connection is lost: by the driver's word or a silent keepalive."""
        while True:
            try:
                async with asyncio.timeout(self.keepalive):
                    await self._lost.wait()
                return self._lost_reason
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self.keepalive_timeout):
                    await self._ping()
            except TimeoutError:
                return f"no answer to a keepalive within {self.keepalive_timeout:g} s"
            except Exception as exc:
                return f"keepalive failed: {_describe(exc)}"

    async def _reconnect(self) -> None:
        delay = self.backoff
        while True:
            # A fresh signal before each attempt: a loss reported while this attempt
            # re-subscribes must not be mistaken for the old one and forgotten.
            self._lost = asyncio.Event()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self._open()
                    self._listened = set()
                    while missing := sorted(set(self._channels) - self._listened):
                        await self._listen_now(missing)
                        self._listened.update(missing)
                        self.listens += len(missing)
                self._came_up("reconnect")
                return
            except Exception as exc:
                log.info("%s notifier cannot reconnect yet: %s", self.kind, _describe(exc))
                self._held = []  # that attempt's messages: its re-subscribe did not finish
                await self._disconnect()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max)

    # -- NotifierBase hooks ------------------------------------------------------

    def _has(self, channel: str) -> bool:
        return self._up.is_set() and channel in self._listened

    async def _listen(self, channels: list[str]) -> None:
        if not self._up.is_set():
            return  # the reconnect loop LISTENs on every wanted channel
        todo = [c for c in channels if c not in self._listened]
        if not todo:
            return
        try:
            await self._listen_now(todo)
        except Exception as exc:
            self._connection_lost(f"listen failed: {_describe(exc)}")
            return
        self._listened.update(todo)
        self.listens += len(todo)
        for channel in todo:
            self._announce(Notice("subscribe", topic=channel), channel)

    async def _unlisten(self, channels: list[str]) -> None:
        todo = [c for c in channels if c in self._listened and c not in self._channels]
        if not todo or not self._up.is_set():
            self._listened.difference_update(todo)
            return
        self._listened.difference_update(todo)
        try:
            await self._unlisten_now(todo)
        except Exception as exc:
            self._connection_lost(f"unlisten failed: {_describe(exc)}")

    async def _send(self, channel: str, payload: bytes) -> None:
        if not self._up.is_set():
            up = asyncio.ensure_future(self._up.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait(
                    {up, stopped}, timeout=self.publish_timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                up.cancel()
                stopped.cancel()
            self._check_open()  # closed while waiting: NotifierClosed
            if not self._up.is_set():
                self.failed += 1
                raise NotifierUnavailable(
                    redact(self.url), f"not connected (last error: {self._lost_reason})"
                ) from None
        try:
            await self._send_now(channel, payload)
        except Exception as exc:
            self.failed += 1
            self._connection_lost(f"publish failed: {_describe(exc)}")
            raise NotifierUnavailable(redact(self.url), _describe(exc)) from exc

    async def _shutdown(self) -> None:
        self._stopped.set()
        await self._tasks.stop()
        self._up.clear()
        await self._disconnect()

    # -- for backends ------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None:
        """Open the connection(s); raise on failure."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection(s) quietly, whatever state they are in."""

    @abc.abstractmethod
    async def _listen_now(self, channels: list[str]) -> None:
        """Subscribe on the open connection, returning once the server has it."""

    @abc.abstractmethod
    async def _unlisten_now(self, channels: list[str]) -> None:
        """Unsubscribe on the open connection."""

    @abc.abstractmethod
    async def _send_now(self, channel: str, payload: bytes) -> None:
        """Publish on the open connection."""

    @abc.abstractmethod
    async def _ping(self) -> None:
        """One round trip to the server over the receiving connection."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
