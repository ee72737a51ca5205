"""Projections, snapshots and command handlers: fold a stream into state, decide, append.

A projection is a class whose instances are the state, with one ``on_<EventType>``
method per event type it cares about, or a ``Fold`` of a function::

    class Order:
        version = 1                      # bump when the folding changes

        def __init__(self) -> None:
            self.total = 0

        def on_Placed(self, event: tidings.RecordedEvent) -> None:
            self.total += event.data["total"]

    loaded = await project(store, "order-42", Order, snapshot_every=100)
    pay = lambda order: [tidings.NewEvent("Paid", {"total": order.total})]
    await execute(store, "order-42", pay, Order)  # reloads and retries on a conflict
"""

from __future__ import annotations

from tidings.aggregates.commands import Command, Decision, execute
from tidings.aggregates.loading import project, save_snapshot
from tidings.aggregates.projection import Fold, Projected
from tidings.aggregates.streams import StreamStore
from tidings.store.features import provide

__all__ = [
    "Command",
    "Decision",
    "Fold",
    "Projected",
    "StreamStore",
    "execute",
    "project",
    "save_snapshot",
]

provide("project", project)
provide("execute", execute)
