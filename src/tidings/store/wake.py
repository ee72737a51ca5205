"""How readers learn that the log grew: local commits, other nodes' heads, and polling.

A ``HeadWatch`` keeps the highest head position this process knows to be committed.
A local commit raises it at once and wakes every waiter; a ``HeadFeed`` (a notifier,
attached from the layer above) publishes local heads to other nodes, coalesced (one
message in flight, the newest head next), outside any transaction, and raises it
when another node's head arrives. Waiters that hear nothing poll the database every
``poll_interval`` seconds, so a lost notification costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from tidings.supervise import Supervisor

log = logging.getLogger("tidings.store")

DEFAULT_POLL_INTERVAL = 1.0
_FINAL_PUBLISH_TIMEOUT = 1.0


class HeadFeed(Protocol):
    """Head positions shared between processes (a notifier channel, built above this layer)."""

    async def open(self) -> None:
        """Start listening; heads published after this returns are heard."""
        ...

    async def publish(self, position: int) -> None:
        """Tell other processes that the log reaches ``position``."""
        ...

    async def follow(self, on_head: Callable[[int | None], None]) -> None:
        """Call ``on_head(position)`` for every head heard, ``on_head(None)`` when some
        may have been missed (a reconnect); return when the feed ends."""
        ...

    async def close(self) -> None:
        """Stop listening (and close the notifier if the feed owns it)."""
        ...


class HeadWatch:
    """The highest committed position this process knows, and waiting for it to grow."""

    def __init__(
        self, read_head: Callable[[], Awaitable[int]], poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> None:
        self.known = 0
        self.poll_interval = poll_interval
        self.polls = 0
        self.published = 0
        self.publish_failures = 0
        self._read_head = read_head
        self._changed: asyncio.Event | None = None  # made by the first waiter
        self._feed: HeadFeed | None = None
        self._to_publish = 0
        self._publisher: asyncio.Task[None] | None = None
        self._poll: asyncio.Future[int] | None = None
        self._hints = 0
        self._publish_ok = True
        self._tasks = Supervisor()

    @property
    def feed(self) -> HeadFeed | None:
        """The feed heads are shared through, if one is attached."""
        return self._feed

    async def attach(self, feed: HeadFeed) -> None:
        """Share heads through ``feed`` from now on."""
        await feed.open()
        self._feed = feed
        self._tasks.spawn("tidings.store.head-follower", lambda: feed.follow(self.heard))

    def committed(self, position: int) -> None:
        """A local commit reached ``position``: wake waiters and tell other processes."""
        self._raise(position)
        if self._feed is None or position <= self._to_publish:
            return
        self._to_publish = position
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish(self._feed), name="tidings.store.head-publisher"
            )

    def heard(self, position: int | None) -> None:
        """Another process's head arrived (None: some may have been missed, poll now)."""
        if position is None:
            self._hints += 1
            self._wake()
        else:
            self._raise(position)

    async def wait_beyond(self, position: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until the head passes ``position``; return it (raise TimeoutError at timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.known <= position:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed, hints = self._changed, self._hints
            wait = self.poll_interval
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError(f"the log did not pass position {position} in {timeout} s")
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                await self.poll()
                continue
            if self._hints != hints and self.known <= position:
                await self.poll()  # something may have been missed while disconnected
        return self.known

    async def poll(self) -> int:
        """Read the head from the database (one read shared by every concurrent caller)."""
        if self._poll is None or self._poll.done():
            self._poll = asyncio.ensure_future(self._read_head())
            self.polls += 1
        self._raise(await asyncio.shield(self._poll))
        return self.known

    async def close(self) -> None:
        """Publish the last head (waiting up to a second), then stop following."""
        publisher = self._publisher
        if publisher is not None and not publisher.done():
            # Other processes should hear of the last commits now, not at their next poll.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(publisher), _FINAL_PUBLISH_TIMEOUT)
            publisher.cancel()
        feed, self._feed = self._feed, None
        await self._tasks.stop()
        if feed is not None:
            await feed.close()
        self._wake()

    def _raise(self, position: int) -> None:
        if position > self.known:
            self.known = position
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:  # nobody waits: nothing to set (most commits)
            changed.set()

    async def _publish(self, feed: HeadFeed) -> None:
        published = 0
        while self._to_publish > published:
            published = self._to_publish
            try:
                await feed.publish(published)
                self.published += 1
            except Exception as exc:
                self.publish_failures += 1
                # Say it once per outage, not once per commit.
                level = logging.WARNING if self._publish_ok else logging.DEBUG
                log.log(level, "cannot publish head %d: %s (readers poll)", published, exc)
                self._publish_ok = False
                return
            self._publish_ok = True
