"""A view watcher on its own: stacking per key, pushes racing a read, pushed to followed."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tidings.views import Change, Watch
from tidings.views.storage import Row


class Source:
    """A stand-in view: rows and a checkpoint in memory, a read that can be held."""

    def __init__(self, folding: bool) -> None:
        self.folding = folding
        self.pushed_through = 0
        self.closed = False
        self.poll_interval = 0.01
        self.rows: dict[str, tuple[str | None, int]] = {}
        self.checkpoint = 0
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()
        self.forgotten: list[Watch] = []

    def set(self, key: str, value: object, position: int) -> None:
        self.rows[key] = (None if value is None else json.dumps(value), position)
        self.checkpoint = position

    async def read_rows(self, after: int, keys: list[str] | None) -> tuple[list[Row], int]:
        snapshot = [
            (k, text, at)
            for k, (text, at) in self.rows.items()
            if at > after and (keys is None or k in keys)
        ]
        checkpoint = self.checkpoint
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        return snapshot, checkpoint

    def forget(self, watch: Watch) -> None:
        self.forgotten.append(watch)


def stored(value: object, position: int) -> tuple[str | None, int]:
    return (None if value is None else json.dumps(value), position)


async def next_change(watch: Watch, timeout: float = 2) -> Change:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        return await anext(watch)


async def test_changes_pushed_while_the_first_read_runs_are_not_told_twice() -> None:
    source = Source(folding=True)
    source.set("a", {"v": 1}, 5)
    source.gate = asyncio.Event()
    watch = Watch(source, None)  # type: ignore[arg-type]
    first = asyncio.create_task(anext(watch))
    await source.reading.wait()  # registered for pushes, reading the snapshot at 5
    watch.push({"a": stored({"v": 1}, 5)})  # committed before the read's snapshot: covered
    watch.push({"b": stored({"v": 2}, 6)})  # committed after it: new
    source.gate.set()
    assert await first == Change("a", {"v": 1}, 5)
    assert await next_change(watch) == Change("b", {"v": 2}, 6)
    assert watch.pending == 0


async def test_a_slow_watcher_holds_one_change_per_key_the_latest() -> None:
    source = Source(folding=True)
    source.set("a", {"n": 0}, 1)
    watch = Watch(source, frozenset({"a", "b", "c"}))  # type: ignore[arg-type]
    assert await next_change(watch) == Change("a", {"n": 0}, 1)
    for n in range(2, 102):  # the watcher reads none of these meanwhile
        watch.push({"abc"[n % 3]: stored({"n": n}, n), "zzz": stored({"n": n}, n)})
    watch.push({"b": stored(None, 102)})  # b: new then deleted, never seen: nothing to tell
    watch.push({"c": stored(None, 103)})
    watch.push({"c": stored({"fresh": True}, 104)})  # c: del then new is a replacement
    assert watch.pending == 3
    got = [await next_change(watch) for _ in range(2)]
    assert sorted(got, key=lambda c: c.key) == [
        Change("a", {"n": 99}, 99),
        Change("c", {"fresh": True}, 104),
    ]
    assert watch.pending == 0


async def test_a_cancelled_wait_loses_nothing() -> None:
    source = Source(folding=True)
    watch = Watch(source, None)  # type: ignore[arg-type]
    for _ in range(3):
        with contextlib.suppress(TimeoutError):
            await next_change(watch, 0.02)
    watch.push({"a": stored({"v": 1}, 1)})
    assert await next_change(watch) == Change("a", {"v": 1}, 1)


async def test_a_watcher_follows_the_checkpoint_when_the_view_stops_folding_here() -> None:
    source = Source(folding=True)
    watch = Watch(source, None)  # type: ignore[arg-type]
    waiting = asyncio.create_task(anext(watch))
    await source.reading.wait()
    await asyncio.sleep(0)
    source.set("a", {"v": 1}, 1)  # committed and pushed
    watch.push({"a": stored({"v": 1}, 1)})
    source.pushed_through = 1
    assert await waiting == Change("a", {"v": 1}, 1)
    source.folding = False  # the view stops here; another process folds on
    watch.wake()
    source.set("b", {"v": 2}, 2)
    assert await next_change(watch) == Change("b", {"v": 2}, 2)
    source.set("a", None, 3)
    assert await next_change(watch) == Change("a", None, 3)
    await watch.aclose()
    assert source.forgotten == [watch]
    assert [c async for c in watch] == []
