"""Run a coroutine eagerly: at once, in the caller's step, until it first has to wait.

A WebSocket send on a writable socket never waits (uvicorn frames the message and
hands it to the transport), so a fan-out to a thousand connections can make a thousand
sends in one step of one task instead of waking a thousand writer tasks. Python 3.12's
eager task factory does this for every task; this is the same idea for one call on
3.11: ``start`` drives the coroutine by hand, and only a send that does wait (a full
socket buffer) is handed to a task that finishes it.

The coroutine must not use ``asyncio.timeout`` or ``current_task``: its first step runs
inside the caller's task, so a caller that needs a deadline puts it on the returned task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None] | None:
    """Run ``coro`` until it finishes (None) or first waits: then a task finishes it.

    An exception raised before the first wait propagates to the caller."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, waiting), name=name)


async def _finish(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Go on with ``coro`` from where it waited on ``waiting`` (a future, or None for a
    bare yield), passing each result or error back into it."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await _Wait(waiting)
        except BaseException as exc:  # a failed future, or our cancellation: hand it in
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class _Wait:
    """Await a future that a coroutine already yielded (marked blocking), as its task
    would: yield it once, and let the coroutine itself take its result."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        if not self.future.done():
            self.future._asyncio_future_blocking = True
            yield self.future
