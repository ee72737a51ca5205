"""Read models: tables of the user's kept up to date by a durable subscription, rebuildable.

    async def apply(events, tx):                 # tx: the checkpoint's own transaction
        ...write the user's rows with tx...

    async def clear(tx):                         # empties the user's tables, for rebuilds
        ...

    model = tidings.ReadModel(store, "order_totals", apply, reset=clear)
    async with model:                            # follows the log
        ...
    await model.rebuild()                        # from zero, with a progress bar

The handler takes the checkpoint's transaction, so the rows and the read model's
position commit together: after a crash the model is exactly as far as it claims.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from tidings.errors import InvalidInput, TidingsError
from tidings.events import Filter
from tidings.store.base import StoreFront
from tidings.subscriptions import Retry, Subscription
from tidings.subscriptions.checkpoints import open_checkpoints

Apply = Callable[[list[Any], Any], Awaitable[object]]
Reset = Callable[[Any], Awaitable[object]]
Progress = Callable[[int, int], None]


class ReadModel:
    """A user's read model folded from the log by the subscription ``readmodel:<name>``.

    ``apply(events, tx)`` writes the model's rows in the checkpoint's transaction (an
    asyncpg connection on PostgreSQL, a sqlite3 connection on SQLite, None on memory);
    ``reset(tx)``, needed for ``rebuild``, empties them in one transaction with the
    checkpoint's return to zero.
    """

    def __init__(
        self,
        store: StoreFront,
        name: str,
        apply: Apply,
        *,
        reset: Reset | None = None,
        filter: Filter | None = None,
        batch_size: int = 500,
        on_error: Retry | None = None,
    ) -> None:
        if not callable(apply):
            raise InvalidInput("apply must be an async callable taking (events, tx)")
        self.store = store
        self.name = name
        self.apply = apply
        self.reset = reset
        self.subscription_name = f"readmodel:{name}"
        self._options: dict[str, Any] = {
            "filter": filter,
            "batch_size": batch_size,
            "batch_timeout": 0.0,
            "on_error": on_error,
        }
        self._running: Subscription | None = None

    def _subscription(self) -> Subscription:
        return Subscription(self.store, self.subscription_name, self.apply, **self._options)

    async def __aenter__(self) -> Self:
        self._running = self._subscription()
        await self._running.start_background()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._running is not None:
            await self._running.stop()
            self._running = None

    @property
    def position(self) -> int | None:
        """How far the model is folded, while it runs here."""
        return None if self._running is None else self._running.position

    async def rebuild(self, progress: Progress | bool = True) -> int:
        """Empty the model and fold the whole log again, up to the head at the start.

        ``progress`` is ``True`` for a bar on stderr, a ``callback(position, head)``, or
        ``False``. The model must not be running (in any process) meanwhile. Returns the
        position reached.
        """
        if self._running is not None:
            raise TidingsError(f"stop the read model {self.name!r} before rebuilding it")
        if self.reset is None:
            raise InvalidInput(f"the read model {self.name!r} has no reset: it cannot rebuild")
        report = _bar(self.name) if progress is True else (progress or None)
        head = await self.store.head()
        checkpoints = open_checkpoints(self.store)
        try:
            await checkpoints.ensure(self.subscription_name, 0)
            current = await checkpoints.load(self.subscription_name) or 0
            # Empty the rows and move the checkpoint to zero in one transaction.
            if not await checkpoints.advance(self.subscription_name, current, 0, self.reset):
                raise TidingsError(f"the read model {self.name!r} moved while rebuilding")
        finally:
            await checkpoints.close()
        sub = self._subscription()
        async with sub:
            while (sub.position or 0) < head:
                if report is not None:
                    report(sub.position or 0, head)
                await asyncio.sleep(0.05)
        if report is not None:
            report(head, head)
        return sub.position or 0


def _bar(name: str) -> Progress:
    """A one-line text progress bar on stderr."""
    started = time.monotonic()

    def show(position: int, head: int) -> None:
        done = position / head if head else 1.0
        filled = int(done * 30)
        rate = position / max(time.monotonic() - started, 1e-6)
        end = "\n" if position >= head else ""
        sys.stderr.write(
            f"\rrebuilding {name} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{position:,}/{head:,} {rate:,.0f} ev/s{end}"
        )
        sys.stderr.flush()

    return show
