"""Coalesced sending: publishes made while one is in flight go out together, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Item = tuple[str, bytes, asyncio.Future[None]]


class SendQueue:
    """One drainer sends everything queued, a batch per round trip.

    ``send_batch(pairs)`` sends ``(channel, payload)`` pairs in order; ``cut(pairs)``
    (optional) says how many of the queued pairs may share one batch.
    """

    def __init__(
        self,
        name: str,
        send_batch: Callable[[list[tuple[str, bytes]]], Awaitable[None]],
        max_batch: int = 500,
        cut: Callable[[list[tuple[str, bytes]]], int] | None = None,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self._send_batch = send_batch
        self._cut = cut
        self._queue: list[Item] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def send(self, channel: str, payload: bytes) -> None:
        """Queue one message and wait until its batch was sent (or failed).

        The first caller with nothing in flight sends at once on its own task (no hop
        to another task: a lone publisher pays one round trip, no more); callers that
        arrive meanwhile queue up and go out together next.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((channel, payload, future))
        if self._busy:
            await future
            return
        self._busy = True
        try:
            await self._drain(until=future)
        finally:
            self._busy = False
            if self._queue:  # others are waiting (or this caller was cancelled): a task goes on
                self._busy = True
                self._drainer = asyncio.get_running_loop().create_task(
                    self._drain_then_idle(), name=self.name
                )
        await future

    async def _drain_then_idle(self) -> None:
        try:
            await self._drain()
        finally:
            self._busy = False

    def fail_all(self, exc: BaseException) -> None:
        """Fail everything queued (the connection is gone) and stop the drainer."""
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        self._busy = False
        for _, _, future in self._queue:
            _fail(future, exc)
        self._queue.clear()

    async def _drain(self, until: asyncio.Future[None] | None = None) -> None:
        while self._queue and (until is None or not until.done()):
            pairs = [(c, p) for c, p, _ in self._queue[: self.max_batch]]
            count = self._cut(pairs) if self._cut is not None else len(pairs)
            batch = self._queue[:count]
            del self._queue[:count]
            try:
                await self._send_batch(pairs[:count])
            except BaseException as exc:
                for _, _, future in batch:
                    _fail(
                        future, exc if isinstance(exc, Exception) else ConnectionError("cancelled")
                    )
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    """Fail a send's future; marked retrieved, since its sender may be gone (a publish
    cancelled at close) and asyncio would log the error as never retrieved."""
    if not future.done():
        future.set_exception(exc)
        future.exception()
