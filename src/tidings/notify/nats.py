"""The NATS notifier: NATS core subjects, one connection, nats-py's reconnects turned off.

The supervising loop of ``SupervisedNotifier`` reconnects instead, so subscribers
hear ``disconnect`` and ``reconnect``; the keepalive is a PING/PONG round trip
(``flush``). The payload limit is the server's ``max_payload``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import nats
import nats.errors

from tidings.notify.supervised import SupervisedNotifier

DEFAULT_MAX_PAYLOAD = 1 << 20


class NatsNotifier(SupervisedNotifier):
    """NATS core publish/subscribe, reconnecting and re-subscribing after a loss."""

    kind = "nats"

    def __init__(self, url: str, dsn: str, **options: Any) -> None:
        super().__init__(url, DEFAULT_MAX_PAYLOAD, **options)
        self._dsn = dsn
        self._nc: Any = None
        self._subs: dict[str, Any] = {}
        self._generation = 0

    async def _open(self) -> None:
        self._generation += 1
        generation = self._generation  # callbacks of an older connection are ignored

        async def lost(*_: Any) -> None:
            if generation == self._generation:
                self._connection_lost("the server closed the connection")

        failures: list[Exception] = []

        async def error(exc: Exception) -> None:
            if generation != self._generation:
                return
            if self._nc is None:
                failures.append(exc)  # a failed attempt inside nats.connect, not a loss
            else:
                self._connection_lost(f"connection error: {exc!r}")

        try:
            self._nc = await nats.connect(
                servers=[self._dsn],
                allow_reconnect=False,
                # nats-py retries even so: bound it to a quick second try, then give up
                # with the reason (not a bare timeout once connect_timeout runs out).
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=max(1, int(self.connect_timeout)),
                ping_interval=max(1, int(self.keepalive)),
                max_outstanding_pings=2,
                disconnected_cb=lost,
                closed_cb=lost,
                error_cb=error,
            )
        except nats.errors.NoServersError as exc:
            if failures:
                raise failures[-1] from exc
            raise
        self.max_payload = int(self._nc.max_payload)
        self._subs = {}

    async def _on_message(self, msg: Any) -> None:
        self._deliver(msg.subject, msg.data)

    async def _disconnect(self) -> None:
        self._generation += 1
        nc, self._nc = self._nc, None
        self._subs = {}
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # a dead socket may refuse a clean close
                await nc.close()

    async def _listen_now(self, channels: list[str]) -> None:
        for channel in channels:
            self._subs[channel] = await self._nc.subscribe(channel, cb=self._on_message)
        # nats-py (2.16) writes a flush's PING straight to the socket, while the SUBs
        # wait in its buffer for its flusher task: the first PONG can come back before
        # the server has read them, and a message published on another connection
        # right after would find no subscriber. By the time that PONG arrives the
        # flusher has written the SUBs, so a second round trip confirms them.
        await self._nc.flush(timeout=self.keepalive_timeout)
        await self._nc.flush(timeout=self.keepalive_timeout)

    async def _unlisten_now(self, channels: list[str]) -> None:
        for channel in channels:
            sub = self._subs.pop(channel, None)
            if sub is not None:
                await sub.unsubscribe()

    async def _ping(self) -> None:
        await self._nc.flush(timeout=self.keepalive_timeout)

    async def _send_now(self, channel: str, payload: bytes) -> None:
        await self._nc.publish(channel, payload)
