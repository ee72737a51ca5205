"""Watching a view: the current values first, then every change, stacked per key.

A watcher holds at most one pending change per key: a change that arrives while an
earlier one of the same key is still pending replaces it (each change carries the key's
full latest value, so a later ``mod`` is merged into an earlier one and ``del`` then
``new`` becomes a replacement). A slow watcher therefore holds memory bounded by the
number of keys, never a backlog, and what it eventually sees is the final state.

Two ways to learn of changes:

- **pushed**: while the view folds in this process, each folding transaction hands its
  changed keys to the watchers after it commits (never before);
- **followed**: otherwise (the view folds in another process, or not at all yet), the
  watcher reads the rows changed after the position it has seen, with the checkpoint
  in the same snapshot, every ``poll_interval`` seconds. Rows carry the position that
  last changed them and deleted keys keep a tombstone, so one indexed query finds
  exactly what changed, already stacked.

A watcher moves from following to pushed when the view starts folding here, and back
when it stops, without losing or repeating a change: it registers for pushes before it
reads, and drops every pushed change at or below the position its read covered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from types import TracebackType
from typing import Any, Protocol, Self

import msgspec

from tidings.codec import decode_json
from tidings.views.fold import Stored
from tidings.views.storage import Row


class Change(msgspec.Struct, frozen=True):
    """A key's value as of ``position`` (``value`` None: the key was deleted)."""

    key: str
    value: Any
    position: int


class WatchSource(Protocol):
    """What a watcher needs of its view."""

    @property
    def folding(self) -> bool:
        """Whether this process folds the view (and so pushes its changes)."""
        ...

    @property
    def pushed_through(self) -> int:
        """The position up to which every change was pushed to registered watchers."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the view was closed (its watchers end)."""
        ...

    @property
    def poll_interval(self) -> float:
        """Seconds between reads while following a view folded elsewhere."""
        ...

    async def read_rows(self, after: int, keys: list[str] | None) -> tuple[list[Row], int]:
        """Rows changed after ``after`` and the checkpoint, in one snapshot."""
        ...

    def forget(self, watch: Watch) -> None:
        """Stop telling ``watch`` anything."""
        ...


class Watch:
    """An async iterator of ``Change``: each watched key's current value (keys that
    exist), then every change. Use ``async for``; ``aclose()`` (or ``async with``) ends it.

    Cancelling a wait for the next change (``asyncio.wait_for``, a timeout) loses nothing.
    """

    def __init__(self, source: WatchSource, keys: frozenset[str] | None) -> None:
        self._source = source
        self._keys = keys
        self._key_list = None if keys is None else sorted(keys)
        self._after: int | None = None  # changes at or below it are known; None: not begun
        self._pushed = False  # registered for pushes from the view's folding
        self._pending: dict[str, Stored] = {}  # the stack: one latest change per key
        self._ready: collections.deque[Change] = collections.deque()
        self._present: set[str] = set()  # keys the watcher was last told exist
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def keys(self) -> frozenset[str] | None:
        """The watched keys (None: every key of the view)."""
        return self._keys

    @property
    def pending(self) -> int:
        """Stacked changes not yet handed out (at most one per key)."""
        return len(self._pending) + len(self._ready)

    def __aiter__(self) -> Self:
        return self

    async def snapshot(self) -> tuple[dict[str, Any], int]:
        """The watched keys' current values and the position they reflect, before any
        change; then iterate for the changes after it. Only as the watch's first step."""
        if self._after is not None:
            raise RuntimeError("a watch's snapshot is its first step")
        await self._read()
        values = {change.key: change.value for change in self._ready}
        self._ready.clear()
        return values, self._after or 0

    def take_ready(self) -> list[Change]:
        """Every change that can be had without waiting (stacked per key), at once."""
        if self._after is not None and self._pending:
            self._drain()
        taken = list(self._ready)
        self._ready.clear()
        return taken

    async def __anext__(self) -> Change:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._closed or self._source.closed:
                await self.aclose()
                raise StopAsyncIteration
            if self._after is None:
                await self._read()
            elif self._pending:
                self._drain()
            elif self._pushed and self._source.folding:
                self._wake.clear()
                await self._wake.wait()
            elif self._pushed:
                # The view stopped folding here: every change up to pushed_through was
                # pushed and drained; follow the checkpoint from there.
                self._pushed = False
                self._after = max(self._after, self._source.pushed_through)
            else:
                self._wake.clear()  # before reading: a wake during the read is kept
                await self._read()
                if not self._ready and not self._pushed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._source.poll_interval):
                            await self._wake.wait()

    async def _read(self) -> None:
        """Read what changed after ``_after`` (everything, the first time), registering
        for pushes first when the view folds here."""
        registering = not self._pushed and self._source.folding
        if registering:
            self._pushed = True
        try:
            rows, checkpoint = await self._source.read_rows(self._after or 0, self._key_list)
        except BaseException:
            if registering:  # pushes since registering are covered by the next read
                self._pushed = False
                self._pending.clear()
            raise
        for key, text, position in sorted(rows, key=lambda row: row[2]):
            self._offer(key, text, position)
        self._after = max(self._after or 0, checkpoint)

    def _drain(self) -> None:
        pending, self._pending = self._pending, {}
        after = self._after or 0
        for key, (text, position) in sorted(pending.items(), key=lambda item: item[1][1]):
            if position > after:  # at or below: the read already covered it
                self._offer(key, text, position)

    def _offer(self, key: str, text: str | None, position: int) -> None:
        if text is None:
            if key not in self._present:
                return  # the watcher never saw it exist: nothing to tell
            self._present.discard(key)
            self._ready.append(Change(key, None, position))
        else:
            self._present.add(key)
            self._ready.append(Change(key, decode_json(text), position))

    def push(self, changes: dict[str, Stored]) -> None:
        """Stack the changes of a committed folding transaction (the view calls this)."""
        if not self._pushed or self._closed:
            return
        keys = self._keys
        for key, change in changes.items():
            if keys is None or key in keys:
                self._pending[key] = change
        if self._pending:
            self._wake.set()

    def wake(self) -> None:
        """Have the watcher look again (the view started, stopped or closed)."""
        self._wake.set()

    async def aclose(self) -> None:
        """End the watch; the iterator stops and the view forgets it."""
        self._closed = True
        self._pending.clear()
        self._ready.clear()
        self._source.forget(self)
        self._wake.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
