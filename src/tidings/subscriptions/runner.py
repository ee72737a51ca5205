"""A durable subscription: catch up in batches, follow live, move the checkpoint after.

The runner reads the log from its checkpoint with ``read_all(follow=True)`` (woken
by the notifier, polling as the fallback), hands batches to the handler and moves
the checkpoint past a batch only once the handler has returned, by compare-and-set.
A handler cancelled, a process stopped or killed mid-batch leaves the checkpoint
before that batch, which is delivered again: at least once. A handler that takes a
second argument gets the checkpoint's own transaction to write in: its writes and the
checkpoint move commit together, so they happen exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import msgspec

from tidings.errors import InvalidInput, TidingsError
from tidings.events import Filter, RecordedEvent
from tidings.store.base import StoreFront
from tidings.subscriptions.checkpoints import Checkpoints, Work, open_checkpoints
from tidings.subscriptions.feed import LogFeed
from tidings.subscriptions.groupstore import open_groups, supports_groups

log = logging.getLogger("tidings.subscriptions")

Handler = Callable[..., Awaitable[object]]
Start = Literal["beginning", "end"] | int
Mover = Callable[[int, Work | None], Awaitable[None]]
"""Moves a checkpoint to a position (with a handler's work in its transaction); raises
``SubscriptionConflict`` when it may not."""


class Retry(msgspec.Struct, frozen=True):
    """What to do when the handler raises: retry ``attempts`` times with exponential
    backoff from ``backoff`` seconds (capped at ``backoff_max``), then ``block`` (keep
    retrying, the subscription halted with its error visible) or ``park`` (set the
    failing event aside, once, and go on)."""

    attempts: int = 5
    backoff: float = 0.5
    then: Literal["block", "park"] = "block"
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidInput(f"Retry attempts must be an int, not {self.attempts!r}")
        if self.attempts < 1 or self.backoff < 0 or self.backoff_max < self.backoff:
            raise InvalidInput("Retry needs attempts >= 1 and 0 <= backoff <= backoff_max")
        if self.then not in ("block", "park"):
            raise InvalidInput(f'Retry then must be "block" or "park", not {self.then!r}')

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))


class SubscriptionConflict(TidingsError):
    """The checkpoint moved under the runner (a reset, or another runner)."""


class _Stop(Exception):
    """Raised inside the runner when it is asked to stop while waiting to retry."""


class Subscription:
    """A named, durable reader of the log that calls ``handler`` with batches of events.

    ``start`` (``"beginning"``, ``"end"`` or a position) is used only when the
    subscription is first created; afterwards it resumes from its checkpoint.

    With ``member`` (an id unique in the group) it runs as one member of a consumer
    group: the work is split by stream into ``partitions`` (fixed when the group is
    first created), which live members share through leases of ``lease_ttl`` seconds
    (see ``tidings.subscriptions.groups``).
    """

    def __init__(
        self,
        store: StoreFront,
        name: str,
        handler: Handler,
        *,
        filter: Filter | None = None,
        start: Start = "beginning",
        batch_size: int = 100,
        batch_timeout: float = 0.05,
        on_error: Retry | None = None,
        on_commit: Callable[[int], None] | None = None,
        on_rollback: Callable[[], None] | None = None,
        member: str | None = None,
        partitions: int = 16,
        lease_ttl: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInput(f"a subscription name is a str of 1 to 200 characters: {name!r}")
        if not callable(handler):
            raise InvalidInput("the handler must be an async callable")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be an int >= 1, not {batch_size!r}")
        if not (isinstance(start, int) and start >= 0) and start not in ("beginning", "end"):
            raise InvalidInput(f'start must be "beginning", "end" or a position, not {start!r}')
        if filter is not None and not isinstance(filter, Filter):
            raise InvalidInput(f"filter must be a tidings.Filter, not {type(filter).__name__}")
        _check_group(member, partitions, lease_ttl)
        if member is not None and not supports_groups(store):
            raise InvalidInput("consumer groups need a SQLite or PostgreSQL store")
        self.store = store
        self.name = name
        self.handler = handler
        self.filter = filter
        self.start = start
        self.batch_size = batch_size
        self.batch_timeout = float(batch_timeout)
        self.on_error = on_error or Retry()
        # Called at once (no await between) after a checkpoint move commits / fails.
        self.on_commit = on_commit
        self.on_rollback = on_rollback
        self.member = member
        self.partitions = partitions
        self.lease_ttl = float(lease_ttl)
        self.owned: dict[int, int] = {}
        """A group member's partitions (partition -> checkpoint); empty otherwise."""
        self.position: int | None = None
        self.handled = 0
        self.state = "idle"
        self.last_error: str | None = None
        self._transactional = _takes_transaction(handler)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop()`` (or cancellation); raises only what cannot be retried."""
        checkpoints = open_checkpoints(self.store)
        try:
            if self.member is None:
                await self._refuse_group()
            start = await checkpoints.ensure(self.name, await self._start_position())
            await checkpoints.set_state(self.name, "running", None)
            self.state = "running"
            if self.member is not None:
                # groups builds on this module: imported here, when a member runs
                from tidings.subscriptions.groups import GroupMember

                await GroupMember(self, checkpoints, start).run()
                return
            self.position = start
            while not self._stopping.is_set():
                try:
                    await self._follow(checkpoints)
                except _Stop:
                    break
                except SubscriptionConflict:
                    moved = await checkpoints.load(self.name)
                    log.info("subscription %s: checkpoint moved to %s", self.name, moved)
                    self.position = moved if moved is not None else 0
        finally:
            self.state = "stopped"
            with contextlib.suppress(Exception):
                if self.member is None:  # a group runs on while other members do
                    await checkpoints.set_state(self.name, "stopped", self.last_error)
            await checkpoints.close()

    async def start_background(self) -> None:
        """Run in a named background task (``async with`` does this)."""
        self._task = asyncio.get_running_loop().create_task(
            self.run(), name=f"tidings.subscription.{self.name}"
        )

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop after the batch in hand (cancelled after ``timeout``: its checkpoint stays)."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start_background()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the loop -------------------------------------------------------------------

    async def _refuse_group(self) -> None:
        """A single runner on a consumer group's name would move a checkpoint the group
        does not read, and handle events the members handle too: refuse it."""
        if not supports_groups(self.store):
            return
        groups = open_groups(self.store)
        try:
            partitions = await groups.partitions(self.name)
        finally:
            await groups.close()
        if partitions:
            raise InvalidInput(
                f"subscription {self.name!r} is a consumer group ({partitions} partitions):"
                " run it with member=..."
            )

    async def _start_position(self) -> int:
        if self.start == "beginning":
            return 0
        if self.start == "end":
            return await self.store.head()
        return int(self.start)

    async def _follow(self, checkpoints: Checkpoints) -> None:
        assert self.position is not None
        loop = asyncio.get_running_loop()
        stopping = loop.create_task(self._stopping.wait())
        try:
            async with self.feed(self.position, f"tidings.subscription.{self.name}.reader") as feed:
                while not self._stopping.is_set() and await feed.wait([stopping], None):
                    batch = await feed.batch(self.batch_size, self.batch_timeout)
                    await self._handle(checkpoints, batch)
        finally:
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)

    def feed(self, start: int, task_name: str) -> LogFeed:
        """The log past ``start``, through this subscription's filter, in batches."""
        page_size = max(self.store.page_size, self.batch_size)
        return LogFeed(self.store, start, self.filter, page_size, task_name)

    async def _handle(
        self, checkpoints: Checkpoints, batch: list[RecordedEvent], move: Mover | None = None
    ) -> None:
        """Deliver a batch, under the error policy, and move the checkpoint past it (with
        ``move``; by default the subscription's own checkpoint)."""
        move = move or partial(self._move, checkpoints)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._deliver(move, batch)
                if self.state != "running":
                    self.state, self.last_error = "running", None
                return
            except (SubscriptionConflict, _Stop):
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "subscription %s: handler failed at %d (attempt %d): %s",
                    self.name,
                    batch[0].position,
                    attempt,
                    self.last_error,
                )
                if attempt >= self.on_error.attempts:
                    if self.on_error.then == "park":
                        await self._park_through(checkpoints, batch, move)
                        return
                    if self.state != "blocked":
                        await checkpoints.set_state(self.name, "blocked", self.last_error)
                        self.state = "blocked"  # once it is visible to others too
                await self._pause(self.on_error.delay(min(attempt, 30)))

    async def _park_through(
        self, checkpoints: Checkpoints, batch: list[RecordedEvent], move: Mover
    ) -> None:
        """Deliver a failing batch event by event; park each event that still fails."""
        for event in batch:
            for attempt in range(1, self.on_error.attempts + 1):
                try:
                    await self._deliver(move, [event])
                    break
                except (SubscriptionConflict, _Stop):
                    raise
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if attempt == self.on_error.attempts or len(batch) == 1:
                        await checkpoints.park(self.name, event, error, attempt)
                        log.warning(
                            "subscription %s parked %d: %s", self.name, event.position, error
                        )
                        await move(event.position, None)
                        break
                    await self._pause(self.on_error.delay(attempt))

    async def _deliver(self, move: Mover, batch: list[RecordedEvent]) -> None:
        if self._transactional:
            await move(batch[-1].position, lambda tx: self.handler(batch, tx))
        else:
            await self.handler(batch)
            await move(batch[-1].position, None)
        self.handled += len(batch)

    async def _move(self, checkpoints: Checkpoints, to: int, work: Any) -> None:
        assert self.position is not None
        try:
            moved = await checkpoints.advance(self.name, self.position, to, work)
        except BaseException:
            if self.on_rollback is not None:
                self.on_rollback()
            raise
        if not moved:
            if self.on_rollback is not None:
                self.on_rollback()
            raise SubscriptionConflict(f"the checkpoint of {self.name} moved")
        self.position = to
        if self.on_commit is not None:
            self.on_commit(to)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        if self._stopping.is_set():
            raise _Stop  # leave the batch for the next run


def _check_group(member: str | None, partitions: int, lease_ttl: float) -> None:
    if member is not None and (not isinstance(member, str) or not member or len(member) > 200):
        raise InvalidInput(f"a group member id is a str of 1 to 200 characters: {member!r}")
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise InvalidInput(f"partitions must be an int, not {partitions!r}")
    if not 1 <= partitions <= 4096:
        raise InvalidInput(f"partitions must be between 1 and 4096, not {partitions}")
    if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)):
        raise InvalidInput(f"lease_ttl must be a number of seconds, not {lease_ttl!r}")
    if not 0.2 <= lease_ttl <= 3600:
        raise InvalidInput(f"lease_ttl must be between 0.2 and 3600 seconds, not {lease_ttl}")


def _takes_transaction(handler: Handler) -> bool:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2
