"""The two sides of the notifier throughput benchmark: each raw client library, and tidings.

Every runner takes a URL, a fresh channel, the payloads and a pattern, sets up a
subscriber on its own connection and a publisher (untimed), then returns the
messages delivered and the seconds from the first publish to the last delivery.
``sequential`` awaits each publish. ``concurrent`` keeps up to ``WIDTH`` publishes in
flight: ``WIDTH`` tasks over an asyncpg pool of ``PG_POOL`` connections, Redis
pipelines (non-transactional) of ``WIDTH``, NATS publishes that only fill its buffer,
and ``WIDTH`` tasks calling tidings' ``publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tidings.notify

WIDTH = 100  # publishes in flight in the concurrent pattern
PG_POOL = 8
STALL = 5.0  # a run gives up after this many seconds without a delivery
PG_NOTIFY = "SELECT pg_notify($1, $2)"


class Counter:
    """Counts deliveries and notes when the last one arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.last_at = 0.0
        self.done = asyncio.Event()

    def hit(self, *_: Any) -> None:
        self.count += 1
        self.last_at = time.perf_counter()
        if self.count >= self.expected:
            self.done.set()

    async def wait(self) -> None:
        """Until every message arrived, or none arrived for ``STALL`` seconds."""
        seen = -1
        while not self.done.is_set() and self.count != seen:
            seen = self.count
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALL):
                    await self.done.wait()


async def timed(publish: Callable[[], Awaitable[None]], counter: Counter) -> tuple[int, float]:
    """Delivered count and seconds from the first publish to the last delivery."""
    began = time.perf_counter()
    await publish()
    await counter.wait()
    return counter.count, (counter.last_at or time.perf_counter()) - began


async def spread(send: Callable[[Any], Awaitable[Any]], items: list[Any]) -> None:
    """``send`` every item, ``WIDTH`` at a time in flight."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await send(item)

    await asyncio.gather(*(worker() for _ in range(WIDTH)))


# --- raw clients ------------------------------------------------------------------------


async def raw_postgres(url: str, ch: str, msgs: list[bytes], pattern: str) -> tuple[int, float]:
    import asyncpg

    texts = [m.decode() for m in msgs]
    counter = Counter(len(msgs))
    async with contextlib.AsyncExitStack() as stack:
        listener = await asyncpg.connect(url)
        stack.push_async_callback(listener.close)
        await listener.add_listener(ch, counter.hit)
        if pattern == "sequential":
            conn = await asyncpg.connect(url)
            stack.push_async_callback(conn.close)

            async def publish() -> None:
                for text in texts:
                    await conn.execute(PG_NOTIFY, ch, text)
        else:
            pool = await asyncpg.create_pool(url, min_size=PG_POOL, max_size=PG_POOL)
            stack.push_async_callback(pool.close)

            async def publish() -> None:
                await spread(lambda text: pool.execute(PG_NOTIFY, ch, text), texts)

        return await timed(publish, counter)


async def raw_redis(url: str, ch: str, msgs: list[bytes], pattern: str) -> tuple[int, float]:
    import redis.asyncio as aioredis

    counter = Counter(len(msgs))
    async with contextlib.AsyncExitStack() as stack:
        publisher = aioredis.Redis.from_url(url)
        subscriber = aioredis.Redis.from_url(url)
        pubsub = subscriber.pubsub()
        for closable in (publisher, subscriber, pubsub):
            stack.push_async_callback(closable.aclose)
        subscribed = asyncio.Event()

        async def read() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    counter.hit()
                elif message["type"] == "subscribe":
                    subscribed.set()

        await pubsub.subscribe(ch)
        reader = asyncio.create_task(read())
        stack.callback(reader.cancel)
        await asyncio.wait_for(subscribed.wait(), 5)

        async def publish() -> None:
            if pattern == "sequential":
                for m in msgs:
                    await publisher.publish(ch, m)
                return
            for i in range(0, len(msgs), WIDTH):
                async with publisher.pipeline(transaction=False) as pipe:
                    for m in msgs[i : i + WIDTH]:
                        pipe.publish(ch, m)
                    await pipe.execute()

        return await timed(publish, counter)


async def raw_nats(url: str, ch: str, msgs: list[bytes], pattern: str) -> tuple[int, float]:
    import nats

    counter = Counter(len(msgs))
    async with contextlib.AsyncExitStack() as stack:
        subscriber = await nats.connect(url)
        stack.push_async_callback(subscriber.close)
        publisher = await nats.connect(url)
        stack.push_async_callback(publisher.close)

        async def on_message(msg: Any) -> None:
            counter.hit()

        await subscriber.subscribe(ch, cb=on_message)
        await subscriber.flush()

        async def publish() -> None:
            if pattern == "sequential":
                for m in msgs:
                    await publisher.publish(ch, m)
            else:
                await spread(lambda m: publisher.publish(ch, m), msgs)
            await publisher.flush()

        return await timed(publish, counter)


# --- tidings ----------------------------------------------------------------------------


async def run_tidings(url: str, ch: str, msgs: list[bytes], pattern: str) -> tuple[int, float]:
    counter = Counter(len(msgs))
    async with contextlib.AsyncExitStack() as stack:
        publisher = await tidings.notify.connect(url)
        stack.push_async_callback(publisher.close)
        listener = await tidings.notify.connect(url)
        stack.push_async_callback(listener.close)
        sub = await stack.enter_async_context(listener.subscribe(ch, maxsize=len(msgs) + 10))

        async def consume() -> None:
            async for _ in sub:
                counter.hit()

        consumer = asyncio.create_task(consume())
        stack.callback(consumer.cancel)

        async def publish() -> None:
            if pattern == "sequential":
                for m in msgs:
                    await publisher.publish(ch, m)
            else:
                await spread(lambda m: publisher.publish(ch, m), msgs)

        return await timed(publish, counter)  # any sub.dropped shows as lost


RAW = {"postgres": raw_postgres, "redis": raw_redis, "nats": raw_nats}
