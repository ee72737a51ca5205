"""Runs the started event streams whose lease this node holds.

Every ``lease_ttl / 3`` seconds (and at once after a change made on this node) a round:

1. finish deletes whose runner is gone;
2. renew the lease of each stream this node runs, at the generation it runs; a renewal
   that changes no row (stopped, reset, redefined, taken over) stops that runner;
3. claim started streams nobody holds (free, or their lease ran out: their node died)
   and start a runner for each.

So each started stream runs on exactly one node at a time, and another node takes a
dead node's streams over within ``lease_ttl``. A node that shuts down releases its
leases, so a restart picks its streams up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from tidings.delivery.definitions import parse
from tidings.delivery.records import Row
from tidings.delivery.runner import Deliver, Lost, Runner
from tidings.delivery.signing import SigningKeys
from tidings.delivery.streams import EventStreams, now_ms
from tidings.delivery.webhook import Batch, Outcome, WebhookSender

log = logging.getLogger("tidings.delivery")

PRUNE_EVERY = 600.0
"""Seconds between deletions of attempts past the retention window."""


class Dispatcher:
    """The event-stream runtime of one node: leases, runners, pruning.

    ``consumers`` delivers websocket streams (the gateway's consumers, on this node and
    the others); without it, websocket streams are left to a node that has one.
    """

    def __init__(
        self,
        streams: EventStreams,
        node_id: str | None = None,
        consumers: Any | None = None,
    ) -> None:
        self.streams = streams
        self.node_id = node_id or f"node-{uuid.uuid4()}"
        self.consumers = consumers
        self.sender = WebhookSender(streams.tls, streams.proxies)
        self.runners: dict[str, tuple[Runner, asyncio.Task[None]]] = {}
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._resting: dict[str, float] = {}
        """Streams whose runner failed, and when they may run again (monotonic)."""
        streams.on_change = self.poke

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts without renewal."""
        return self.streams.defaults.lease_ttl

    def poke(self, _stream_id: str | None = None) -> None:
        """Run a round now (a stream changed on this node)."""
        self._poked.set()

    async def start(self) -> None:
        """Finish cut-short deletes, then run rounds in a background task."""
        await self.streams.finish_deletes()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"tidings eventstreams {self.node_id}"
        )

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        """Stop every runner and release its lease. A batch being sent gets ``grace``
        seconds to land and be checkpointed before its runner is cancelled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for runner, _ in self.runners.values():
            runner.stop()
        tasks = [task for _, task in self.runners.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for stream_id in list(self.runners):
            await self._stop(stream_id)
        await self.sender.close()

    async def _supervise(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # a database hiccup: the next round tries again
                log.exception("event-stream round failed")
            self._poked.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that arrives as the wait ends, and close() would wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_ttl / 3):
                    await self._poked.wait()

    async def round(self) -> None:
        """One round: deletes, renewals, claims."""
        room = self.streams.room
        loop = asyncio.get_running_loop()
        await self.streams.finish_deletes()
        until = now_ms() + int(self.lease_ttl * 1000)
        for stream_id, (runner, task) in list(self.runners.items()):
            if task.done():
                self._finished(stream_id, task)
                await room.run("release", stream_id, self.node_id)
                continue
            if not await room.run("renew", stream_id, self.node_id, runner.generation, until):
                await self._stop(stream_id)
        # Webhook streams: every free one claimed in one statement (a round with a
        # hundred to take costs one write, not three hundred).
        for values in await room.returning("claim_webhooks", self.node_id, now_ms(), until):
            row = Row.of(values)
            if row.id in self.runners:
                continue  # ours already (a renewal that failed on a hiccup)
            deliver = self._deliverer(row) if self._resting.get(row.id, 0) <= loop.time() else None
            if deliver is None:
                await room.run("release", row.id, self.node_id)
                continue
            self._run(row, deliver)
        # Websocket streams: only while a consumer of theirs is attached to a node.
        for (stream_id,) in await room.rows("runnable", now_ms()):
            if stream_id in self.runners or self._resting.get(stream_id, 0) > loop.time():
                continue
            row = Row.of((await room.rows("by_id", stream_id))[0])
            if row.type != "websocket" or (deliver := self._deliverer(row)) is None:
                continue
            if await room.run("claim", stream_id, self.node_id, now_ms(), until):
                self._run(Row.of((await room.rows("by_id", stream_id))[0]), deliver)
        await self._prune()

    def _deliverer(self, row: Row) -> Deliver | None:
        if row.type == "websocket":
            if self.consumers is None:
                return None
            consumers: Deliver | None = self.consumers.deliverer(row)
            return consumers
        definition = parse(row.definition)
        hook = definition.webhook
        if hook is None or row.signing is None:
            return None
        keys = SigningKeys.from_json(row.signing)
        policy = self.streams.policy(definition)
        timeout = hook.timeout or self.streams.defaults.webhook_timeout
        sender = self.sender

        async def deliver(batch: Batch) -> Outcome:
            return await sender.send(hook, keys, batch, policy, timeout)

        return deliver

    def _run(self, row: Row, deliver: Deliver) -> None:
        runner = Runner(self.streams, row, self.node_id, deliver)
        task = asyncio.get_running_loop().create_task(
            runner.run(), name=f"tidings eventstream {row.name}"
        )
        task.add_done_callback(lambda _t: self.poke())
        self.runners[row.id] = (runner, task)

    def _finished(self, stream_id: str, task: asyncio.Task[None]) -> None:
        self.runners.pop(stream_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Lost):
            log.error("event stream %s failed; it starts again", stream_id, exc_info=exc)
            self._resting[stream_id] = asyncio.get_running_loop().time() + self.lease_ttl / 3

    async def _stop(self, stream_id: str) -> None:
        _, task = self.runners.pop(stream_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.streams.room.run("release", stream_id, self.node_id)

    async def _prune(self) -> None:
        now = now_ms()
        if now - self._last_prune < PRUNE_EVERY * 1000:
            return
        self._last_prune = now
        keep = int(self.streams.defaults.attempt_retention * 1000)
        await self.streams.room.run("prune_attempts", now - keep)
