"""The Redis notifier: Redis pub/sub, one subscribing connection and a pool for publishing.

redis-py's own silent reconnects are turned off: the supervising loop of
``SupervisedNotifier`` reconnects, so that subscribers hear ``disconnect`` and
``reconnect`` and the keepalive (a PING answered on the subscribing connection)
catches a half-open socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tidings.notify.batching import SendQueue
from tidings.notify.supervised import SupervisedNotifier

DEFAULT_MAX_PAYLOAD = 1 << 20


class RedisNotifier(SupervisedNotifier):
    """Redis PUBLISH/SUBSCRIBE, reconnecting and re-subscribing after a loss."""

    kind = "redis"

    def __init__(
        self, url: str, dsn: str, max_payload: int = DEFAULT_MAX_PAYLOAD, **options: Any
    ) -> None:
        super().__init__(url, max_payload, **options)
        self._dsn = dsn
        self._client: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._pongs: list[asyncio.Future[None]] = []
        self._sends = SendQueue("tidings.notify.redis.sender", self._send_batch)
        # A private channel keeps the subscribing connection open with nothing else wanted.
        self._control = f"tidings-control.{uuid.uuid4().hex}"

    async def _open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._dsn,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
        )
        await self._client.ping()
        self._pubsub = self._client.pubsub()
        confirmed = self._expect(self._control)
        await self._pubsub.subscribe(self._control)
        self._reader = asyncio.get_running_loop().create_task(
            self._read(self._pubsub), name="tidings.notify.redis.reader"
        )
        await confirmed

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message":
                    self._deliver(message["channel"].decode(), message["data"])
                elif kind == "subscribe":
                    future = self._confirmations.pop(message["channel"].decode(), None)
                    if future is not None and not future.done():
                        future.set_result(None)
                elif kind == "pong":
                    while self._pongs:
                        pong = self._pongs.pop(0)
                        if not pong.done():
                            pong.set_result(None)
                            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._connection_lost(f"the subscribing connection failed: {exc!r}")
            self._fail_waiters(exc)

    def _expect(self, channel: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = future
        return future

    def _fail_waiters(self, exc: BaseException) -> None:
        for future in [*self._confirmations.values(), *self._pongs]:
            if not future.done():
                future.set_exception(ConnectionError(str(exc)))
        self._confirmations.clear()
        self._pongs.clear()

    async def _disconnect(self) -> None:
        reader, pubsub, client = self._reader, self._pubsub, self._client
        self._reader = self._pubsub = self._client = None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._fail_waiters(ConnectionError("disconnected"))
        self._sends.fail_all(ConnectionError("disconnected"))
        for closable in (pubsub, client):
            if closable is not None:
                with contextlib.suppress(Exception):  # a dead socket may refuse a clean close
                    await closable.aclose()

    async def _listen_now(self, channels: list[str]) -> None:
        confirmed = [self._expect(channel) for channel in channels]
        await self._pubsub.subscribe(*channels)
        await asyncio.gather(*confirmed)

    async def _unlisten_now(self, channels: list[str]) -> None:
        await self._pubsub.unsubscribe(*channels)

    async def _ping(self) -> None:
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        await self._pubsub.ping()
        await pong

    async def _send_now(self, channel: str, payload: bytes) -> None:
        await self._sends.send(channel, payload)

    async def _send_batch(self, pairs: list[tuple[str, bytes]]) -> None:
        if len(pairs) == 1:
            await self._client.publish(*pairs[0])
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, payload in pairs:
                pipe.publish(channel, payload)
            await pipe.execute()
