"""The relay: a supervised task that publishes saved messages, in order per key, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Protocol, Self

import msgspec

from tidings.errors import InvalidInput, StoreUnavailable
from tidings.supervise import Supervisor

if TYPE_CHECKING:
    from tidings.outbox import Outbox

log = logging.getLogger("tidings.outbox")

RELAY_TASK = "tidings.outbox.relay"


class Publisher(Protocol):
    """What a relay publishes to: any ``tidings.notify.Notifier`` will do."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` on ``channel``; raise when it could not be sent."""
        ...


class Row(NamedTuple):
    """One saved message, as a relay reads it."""

    id: int
    key: str
    channel: str
    payload: bytes
    attempts: int


class Retry(NamedTuple):
    """A message whose publish failed: try its key again after ``delay`` seconds."""

    id: int
    delay: float
    error: str


class Claim(Protocol):
    """Rows a relay holds (their keys are its alone) until it settles or abandons them."""

    rows: list[Row]

    def alive(self) -> bool:
        """Whether the hold stands long enough for one more publish."""
        ...

    async def settle(self, published: Sequence[int], retries: Sequence[Retry]) -> None:
        """Delete the published rows, put the failed keys off, and commit."""
        ...

    async def abandon(self) -> None:
        """Roll back: every row stays, to be published again."""
        ...


class Source(Protocol):
    """One relay's own connection to the outbox table."""

    async def claim(self, limit: int, lease: float) -> Claim | None:
        """Hold the keys of up to ``limit`` due rows, oldest first; None if none is due.

        ``lease``: how long a hold that outlives its relay (a crash) keeps other relays
        off, where the database cannot tell (SQLite); ``alive()`` turns false by half of it.
        """
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class RelayStats(msgspec.Struct, frozen=True):
    """What a relay has done since it was made.

    ``published``: messages the notifier took; ``failed``: publishes that raised or
    timed out (each puts its key off with backoff); ``retried``: publishes of a message
    that had failed before; ``pending``: rows the last round read but left in the table
    because their key failed (a lower bound of the backlog); ``rounds``: rounds that
    claimed rows; ``last_error``: the last publish or database error, as text.
    """

    published: int
    failed: int
    retried: int
    pending: int
    rounds: int
    running: bool
    last_error: str | None


class Relay:
    """Publishes an outbox's messages to a notifier, in order per key, at least once.

    Each round holds the keys of the oldest due rows (no other relay, in any process,
    publishes them meanwhile), publishes each key's rows in order, deletes what was
    published and commits. When a publish fails, that key alone waits: its oldest row
    is tried again after ``backoff * 2**attempts`` seconds (at most ``backoff_max``),
    and its later rows wait behind it. A crash after a publish and before the commit
    publishes again: delivery is at least once.

    Rounds run every ``poll_interval`` seconds, at once after a full round, and when
    ``wake()`` is called. Use it with ``async with relay:`` or ``start()``/``stop()``.
    """

    def __init__(
        self,
        outbox: Outbox,
        notifier: Publisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        backoff: float = 0.5,
        backoff_max: float = 60.0,
        publish_timeout: float = 10.0,
        concurrency: int = 16,
        stop_timeout: float = 10.0,
    ) -> None:
        if not callable(getattr(notifier, "publish", None)):
            raise InvalidInput(f"a relay needs an object with publish(), not {notifier!r}")
        _positive_int("batch_size", batch_size)
        _positive_int("concurrency", concurrency)
        for name, value in (
            ("poll_interval", poll_interval),
            ("backoff", backoff),
            ("backoff_max", backoff_max),
            ("publish_timeout", publish_timeout),
            ("stop_timeout", stop_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidInput(f"{name} must be a number above 0, not {value!r}")
        self.outbox = outbox
        self.notifier = notifier
        self.batch_size = batch_size
        self.poll_interval = float(poll_interval)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.publish_timeout = float(publish_timeout)
        self.concurrency = concurrency
        self.stop_timeout = float(stop_timeout)
        # A claim stops publishing by half its lease, so a publish under way (at most
        # publish_timeout) always ends before another relay may take its keys.
        self._lease = max(30.0, 4 * self.publish_timeout)
        self._published = 0
        self._failed = 0
        self._retried = 0
        self._pending = 0
        self._rounds = 0
        self._last_error: str | None = None
        self._source: Source | None = None
        self._supervisor: Supervisor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._round_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start publishing in the background (a supervised task named ``tidings.outbox.relay``)."""
        if self._task is not None and not self._task.done():
            return
        self.outbox._check_open()
        self._stopping = False
        self._supervisor = Supervisor()
        self._task = self._supervisor.spawn(RELAY_TASK, self._run)

    async def stop(self) -> None:
        """Finish the round under way (up to ``stop_timeout`` seconds), stop, disconnect."""
        self._stopping = True
        self._wakeup.set()
        task, supervisor = self._task, self._supervisor
        self._task = self._supervisor = None
        if task is not None:
            # asyncio.wait neither raises the task's error nor cancels it on timeout.
            await asyncio.wait({task}, timeout=self.stop_timeout)
        if supervisor is not None:
            await supervisor.stop()
        await self._disconnect()
        self.outbox._forget(self)

    @property
    def running(self) -> bool:
        """Whether the background task is alive."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Run a round now (say, right after the application committed a save)."""
        self._wakeup.set()

    def stats(self) -> RelayStats:
        """Counters of what this relay has done."""
        return RelayStats(
            published=self._published,
            failed=self._failed,
            retried=self._retried,
            pending=self._pending,
            rounds=self._rounds,
            running=self.running,
            last_error=self._last_error,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- rounds ---------------------------------------------------------------------

    async def run_once(self) -> int:
        """Run one round now; return how many rows it claimed (0: nothing was due)."""
        async with self._round_lock:
            if self._source is None:
                self._source = await self.outbox._source()
            claim = await self._source.claim(self.batch_size, self._lease)
            if claim is None:
                self._pending = 0
                return 0
            try:
                published, retries, left = await self._publish(claim)
                await claim.settle(published, retries)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(claim.abandon())
                raise
            self._rounds += 1
            self._pending = left
            return len(claim.rows)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                claimed = await self.run_once()
                failures = 0
            except StoreUnavailable as exc:
                # Lost or refused the database: reconnect after a growing pause.
                self._last_error = str(exc)
                log.warning("outbox relay: %s", exc)
                await self._disconnect()
                failures += 1
                await self._pause(min(self.backoff_max, self.backoff * 2 ** (failures - 1)))
                continue
            if claimed < self.batch_size:
                await self._pause(self.poll_interval)

    async def _pause(self, seconds: float) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def _disconnect(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            with contextlib.suppress(Exception):
                await source.close()

    async def _publish(self, claim: Claim) -> tuple[list[int], list[Retry], int]:
        """Publish each key's rows in order, keys side by side; a failure stops its key."""
        by_key: dict[str, list[Row]] = {}
        for row in claim.rows:  # rows come in id order, so each key's list is in order
            by_key.setdefault(row.key, []).append(row)
        published: list[int] = []
        retries: list[Retry] = []
        left = 0
        slots = asyncio.Semaphore(self.concurrency)

        async def publish_key(rows: list[Row]) -> None:
            nonlocal left
            async with slots:
                for i, row in enumerate(rows):
                    if not claim.alive():  # our locks may be gone: leave the rest
                        left += len(rows) - i
                        return
                    if row.attempts:
                        self._retried += 1
                    try:
                        async with asyncio.timeout(self.publish_timeout):
                            await self.notifier.publish(row.channel, row.payload)
                    except Exception as exc:
                        self._failed += 1
                        error = f"{type(exc).__name__}: {exc}"
                        self._last_error = error
                        delay = min(self.backoff_max, self.backoff * 2**row.attempts)
                        log.warning(
                            "outbox relay: publishing key %r failed (attempt %d), "
                            "retrying in %.2fs: %s",
                            row.key,
                            row.attempts + 1,
                            delay,
                            error,
                        )
                        retries.append(Retry(row.id, delay, error))
                        left += len(rows) - i
                        return
                    published.append(row.id)
                    self._published += 1

        if len(by_key) == 1:
            await publish_key(next(iter(by_key.values())))
        else:
            async with asyncio.TaskGroup() as group:
                for rows in by_key.values():
                    group.create_task(publish_key(rows), name="tidings.outbox.publish")
        return published, retries, left


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be an int >= 1, not {value!r}")
