"""What the group-commit writers of every backend share: pending appends and answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tidings.events import AppendResult
from tidings.store.planner import Group

Outcome = list[AppendResult] | BaseException
"""A group's answer: its results, or the error it failed with."""


class Pending:
    """A group waiting for a writer, and the future its caller awaits."""

    __slots__ = ("future", "group", "size")

    def __init__(self, group: Group, loop: asyncio.AbstractEventLoop) -> None:
        self.group = group
        self.size = sum(len(a.events) for a in group.appends)
        self.future: asyncio.Future[list[AppendResult]] = loop.create_future()


def settle(batch: Sequence[Pending], outcomes: Sequence[Outcome]) -> None:
    """Answer every caller of a batch (on the event loop's thread)."""
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.future.done():  # the caller was cancelled; its append stands anyway
            continue
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)
