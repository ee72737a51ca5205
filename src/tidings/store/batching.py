"""What the group-commit writers of every backend share: pending appends and answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tidings.events import AppendResult
from tidings.store.planner import Group

Outcome = list[AppendResult] | BaseException
"""A group's answer: its results, or the error it failed with."""


class Pending:
    """A group waiting for a writer, and the future its caller awaits."""

    __slots__ = ("future", "group", "size")

    def __init__(self, group: Group, loop: asyncio.AbstractEventLoop) -> None:
        self.group = group
        appends = group.appends
        self.size = (
            len(appends[0].events) if len(appends) == 1 else sum(len(a.events) for a in appends)
        )
        self.future: asyncio.Future[list[AppendResult]] = loop.create_future()


class Slots:
    """A bound on the appends waiting for a writer: waiters past ``limit`` wait for room.

    ``asyncio.Semaphore`` does the same at ~2 µs an append, most of it checking for
    waiters that the common case (room to spare) never has.
    """

    __slots__ = ("_freed", "limit", "taken")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._freed: asyncio.Event | None = None

    def take_now(self) -> bool:
        """Take a slot if one is free (no coroutine made: the common case)."""
        if self.taken < self.limit:
            self.taken += 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting while all are taken."""
        while self.taken >= self.limit:
            if self._freed is None:
                self._freed = asyncio.Event()
            await self._freed.wait()
        self.taken += 1

    def give(self) -> None:
        """Give a slot back, waking whoever waits for one."""
        self.taken -= 1
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()


def settle(
    batch: Sequence[Pending],
    outcomes: Sequence[Outcome],
    committed: Callable[[int], None] | None = None,
) -> None:
    """Answer every caller of a batch (on the event loop's thread), after telling
    ``committed`` the highest position the batch reached (once, not once an append)."""
    if committed is not None:
        reached = max(
            (r.position for o in outcomes if not isinstance(o, BaseException) for r in o),
            default=0,
        )
        if reached:
            committed(reached)
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.future.done():  # the caller was cancelled; its append stands anyway
            continue
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)
