"""``View``: the latest value per key of a category, folded by a transactional subscription.

The subscription ``view:<name>`` reads the category's events and, for each batch, writes
the changed rows in the same database transaction that moves its checkpoint. The
checkpoint is the view's position: rows and position always agree, and a read returns
values together with the position they are folded up to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from tidings.codec import check_name, decode_json
from tidings.errors import InvalidEvent, InvalidInput, StoreClosed, ViewClosed
from tidings.events import Filter, RecordedEvent
from tidings.store.base import StoreFront, check_position
from tidings.subscriptions import Retry, Subscription
from tidings.views.fold import EVT_TYPES, Reducer, Stored, evt_reduce, fold_batch, key_of
from tidings.views.storage import Row, open_storage
from tidings.views.watch import Watch

log = logging.getLogger("tidings.views")

DEFAULT_ON_ERROR = Retry(attempts=3, backoff=0.1, then="park")
"""A view's default error policy: a few quick retries, then park the event and go on."""

_RESTART_DELAY = 0.5


class View:
    """The latest value per key of the streams ``<category>-<key>``.

    Without a ``reducer``, events of type ``new`` (data: the whole object), ``mod``
    (data: a partial object, shallow-merged into the value; creates a missing key) and
    ``del`` (removes the key) are folded, and other types ignored. With one,
    ``reducer(current_value_or_None, event)`` returns the new value (None deletes the key)
    for every event of the category.

    ``async with view:`` (or ``start()``/``close()``) folds the log in a background task;
    ``get``, ``wait`` and ``watch`` work whether this process folds the view or another
    one does. An event that cannot be folded (``new``/``mod`` data that is not a JSON
    object, a reducer that raises or returns something with no JSON form) goes through
    ``on_error``: by default three quick retries, then the event is parked
    (``tidings.subscriptions.parked(store, "view:<name>")``) and the view goes on.
    """

    def __init__(
        self,
        store: StoreFront,
        name: str,
        *,
        category: str,
        reducer: Reducer | None = None,
        on_error: Retry | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.25,
    ) -> None:
        try:
            check_name(name, "a view name")
            check_name(category, "a view category")
        except InvalidEvent as exc:
            raise InvalidInput(str(exc)) from exc
        if len(name) > 190:
            raise InvalidInput(f"a view name has at most 190 characters: {name!r}")
        if "-" in category:
            raise InvalidInput(
                f"a category holds no '-' (streams are <category>-<key>): {category!r}"
            )
        if reducer is not None and not callable(reducer):
            raise InvalidInput("reducer must be a callable (current_value, event) -> new value")
        if on_error is not None and not isinstance(on_error, Retry):
            raise InvalidInput(f"on_error must be a tidings.Retry, not {type(on_error).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be an int >= 1, not {batch_size!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise InvalidInput(f"poll_interval must be a number of seconds, not {poll_interval!r}")
        if not poll_interval > 0:
            raise InvalidInput(f"poll_interval must be > 0, not {poll_interval!r}")
        self.store = store
        self.name = name
        self.category = category
        self.reducer = reducer
        self.subscription_name = f"view:{name}"
        self.filter = Filter(categories=[category], types=None if reducer else EVT_TYPES)
        self.on_error = on_error or DEFAULT_ON_ERROR
        self.batch_size = batch_size
        self._poll_interval = float(poll_interval)
        self.last_error: str | None = None
        self._reduce: Reducer = reducer or evt_reduce
        self._rows = open_storage(store)
        self._pushed_through = 0  # every change up to here was pushed to watchers
        self._read_through = 0  # the highest checkpoint a read of this object saw
        self._staged: dict[str, Stored] = {}  # the open folding transaction's changes
        self._advanced = asyncio.Event()
        self._watchers: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    # -- state ----------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The position the view is folded up to, as this object last knew it (moved by
        its own folding and by every read)."""
        sub = self._subscription
        sub_position = sub.position if sub is not None and sub.position is not None else 0
        return max(self._pushed_through, self._read_through, sub_position)

    @property
    def running(self) -> bool:
        """Whether this object folds the view (between ``start()`` and ``stop()``)."""
        task = self._task
        return task is not None and not task.done() and not self._stop.is_set()

    # The WatchSource side, for watchers.
    @property
    def folding(self) -> bool:
        """Same as ``running``: committed changes are pushed to watchers."""
        return self.running

    @property
    def pushed_through(self) -> int:
        """The position up to which every committed change was pushed to watchers."""
        return self._pushed_through

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def poll_interval(self) -> float:
        """Seconds between checkpoint reads when the view is folded elsewhere."""
        return self._poll_interval

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Fold the log in a named, supervised background task (no-op when running)."""
        self._check_open()
        if self.running:
            return
        if self._task is not None:  # stop() timed out on it; it is on its way out
            await self._finish_task(10.0)
        await self._rows.prepare()
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(
            self._keep_folding(), name=f"tidings.view.{self.name}"
        )
        self._task.add_done_callback(lambda _: self._wake_watchers())  # they follow instead
        self._wake_watchers()

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop folding after the batch in hand (the rows and checkpoint stay)."""
        self._stop.set()
        if self._subscription is not None:
            await self._subscription.stop(timeout)  # tells the runner; we wait below
        await self._finish_task(timeout)
        self._wake_watchers()

    async def close(self) -> None:
        """Stop folding, end every watcher and release the view's connections."""
        await self.stop()
        self._closed = True
        self._wake_watchers()
        await self._rows.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ViewClosed(f"the view {self.name!r} is closed")

    async def _finish_task(self, timeout: float) -> None:  # noqa: ASYNC109
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if task.done():
                self._task = None
                self._subscription = None

    async def _keep_folding(self) -> None:
        """Run the folding subscription; restart it when it dies, until stopped."""
        while not self._stop.is_set():
            self._subscription = _folding_subscription(self)
            try:
                await self._subscription.run()
                return  # it returns when told to stop
            except StoreClosed:
                log.info("view %s: the store was closed; folding stops", self.name)
                return
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("view %s: folding failed; restarting it", self.name, exc_info=exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESTART_DELAY):
                    await self._stop.wait()

    # -- folding (called by the subscription) ------------------------------------------

    async def _fold(self, batch: list[RecordedEvent], tx: Any) -> None:
        """Fold ``batch`` and write the changed rows in the checkpoint's transaction."""
        keys = sorted({key_of(e.stream) for e in batch} - {""})
        stored = await self._rows.current(tx, self.name, keys)
        changes = fold_batch(self.name, batch, stored, self._reduce)
        if changes:
            await self._rows.write(tx, self.name, changes)
        self._staged = changes

    def _committed(self, position: int) -> None:
        """The checkpoint moved to ``position`` with the staged rows: tell everyone."""
        changes, self._staged = self._staged, {}
        self._rows.committed(self.name, changes)
        self._pushed_through = max(self._pushed_through, position)
        if changes:
            for watcher in list(self._watchers):
                watcher.push(changes)
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    def _rolled_back(self) -> None:
        self._staged = {}

    # -- reading ----------------------------------------------------------------------

    async def get(
        self,
        keys: Iterable[str] | None = None,
        *,
        at_least: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The current values of ``keys`` (None: every key); missing keys are absent.

        With ``at_least`` (say an append's ``position``), first wait until the view has
        folded the log up to there: read-your-writes. ``TimeoutError`` after ``timeout``.
        """
        wanted = _check_keys(keys)
        if at_least is not None:
            await self.wait(at_least, timeout)
        rows, _ = await self.read_rows(0, wanted)
        return {key: decode_json(text) for key, text, _ in rows if text is not None}

    async def get_at(
        self,
        keys: Iterable[str] | None = None,
        *,
        at_least: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> tuple[dict[str, Any], int]:
        """``get``, with the position the values reflect (read together, so they agree)."""
        wanted = _check_keys(keys)
        if at_least is not None:
            await self.wait(at_least, timeout)
        rows, position = await self.read_rows(0, wanted)
        values = {key: decode_json(text) for key, text, _ in rows if text is not None}
        return values, position

    async def wait(self, position: int, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Wait until the view has folded every event of its category up to ``position``;
        return the view's position. ``TimeoutError`` after ``timeout`` seconds.

        The view's checkpoint only stops at events of its category, so ``position`` may
        lie beyond it while nothing remains to fold: the view is then caught up.
        """
        self._check_open()
        check_position(position, "position")
        async with asyncio.timeout(timeout):
            await self.store.wait_for(position)
            while True:
                advanced = self._advanced
                folded = self._pushed_through if self.running else await self._checkpoint()
                folded = max(folded, self.position)
                if folded >= position or not await self._events_between(folded, position):
                    return folded
                # Woken by our own folding; a view folded elsewhere is polled.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await advanced.wait()

    async def _checkpoint(self) -> int:
        _, checkpoint = await self.read_rows(0, [])
        return checkpoint

    async def _events_between(self, after: int, through: int) -> bool:
        """Whether an event the view folds lies in ``(after, through]``."""
        found = [e async for e in self.store.read_all(after, self.filter, limit=1)]
        return bool(found) and found[0].position <= through

    async def read_rows(self, after: int, keys: list[str] | None) -> tuple[list[Row], int]:
        """In one snapshot: the rows (key, JSON text or None if deleted, position) of
        ``keys`` (None: all) changed after ``after``, and the view's checkpoint."""
        self._check_open()
        await self._rows.prepare()
        rows, checkpoint = await self._rows.read(self.name, self.subscription_name, after, keys)
        self._read_through = max(self._read_through, checkpoint)
        return rows, checkpoint

    def watch(self, keys: Iterable[str] | None = None) -> Watch:
        """An async iterator of ``Change``s of ``keys`` (None: every key): the current
        value of each existing key, then every change, stacked per key while the watcher
        is slow (see ``tidings.views.watch``)."""
        self._check_open()
        wanted = _check_keys(keys)
        watcher = Watch(self, None if wanted is None else frozenset(wanted))
        self._watchers.add(watcher)
        return watcher

    def forget(self, watch: Watch) -> None:
        """Stop pushing changes to ``watch`` (its ``aclose`` calls this)."""
        self._watchers.discard(watch)

    def _wake_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.wake()


def _folding_subscription(view: View) -> Subscription:
    """The view's subscription: a transactional handler, and a word to the view after
    each checkpoint move (commit) or failed one (rollback)."""
    return Subscription(
        view.store,
        view.subscription_name,
        view._fold,
        filter=view.filter,
        start="beginning",
        batch_size=view.batch_size,
        batch_timeout=0.0,
        on_error=view.on_error,
        on_commit=view._committed,
        on_rollback=view._rolled_back,
    )


def _check_keys(keys: Iterable[str] | None) -> list[str] | None:
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise InvalidInput(f"keys must be an iterable of str, not a single {type(keys).__name__}")
    wanted = list(dict.fromkeys(keys))
    for key in wanted:
        if not isinstance(key, str):
            raise InvalidInput(f"view keys are str, not {type(key).__name__}: {key!r}")
    return wanted
