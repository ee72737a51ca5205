"""The sync facade's machinery: its loop thread, threads at once, iterators, closing."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import tidings
import tidings.sync
from tidings import NO_STREAM, NewEvent
from tidings.sync import SyncIterator, SyncStore
from tidings.sync import loop as sync_loop


def ev(**data: object) -> NewEvent:
    return NewEvent("Happened", data)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'e.db'}"


@pytest.fixture
def store(url: str) -> Iterator[SyncStore]:
    s = tidings.sync.connect(url)
    try:
        yield s
    finally:
        s.close()


def run_threads(count: int, target: object) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)


# -- the loop thread ---------------------------------------------------------------------


def test_one_daemon_loop_thread_drives_every_store() -> None:
    with tidings.sync.connect("memory://") as a, tidings.sync.connect("memory://") as b:
        assert a._loop is b._loop is sync_loop.loop_thread()
        loops = [t for t in threading.enumerate() if t.name == "tidings-sync-loop"]
        assert len(loops) == 1 and loops[0].daemon
        assert a._loop.thread is loops[0]


def test_the_loop_thread_starts_once_when_many_threads_ask_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync_loop, "_current", None)
    barrier = threading.Barrier(16)
    got: list[sync_loop.LoopThread] = []

    def ask(_: int) -> None:
        barrier.wait()
        got.append(sync_loop.loop_thread())

    run_threads(16, ask)
    started = got[0]
    try:
        assert len(got) == 16 and all(g is started for g in got)
        assert started.thread.name == "tidings-sync-loop" and started.thread.is_alive()
    finally:
        started.loop.call_soon_threadsafe(started.loop.stop)
        started.thread.join(5)
        started.loop.close()


def test_a_call_from_the_loop_thread_raises_instead_of_deadlocking(store: SyncStore) -> None:
    store.append("s-1", [ev()])

    async def inside() -> list[BaseException]:
        errors: list[BaseException] = []
        for call in (
            store.head,
            lambda: store.append("s-1", [ev()]),
            lambda: store.read_all(),
            lambda: store.transaction(),
            lambda: tidings.sync.connect("memory://"),
        ):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)
        assert await store.store.head() == 1  # the async store is the way in here
        return errors

    errors = store._loop.run(inside)
    assert len(errors) == 5
    assert all("own event-loop thread" in str(e) for e in errors)
    assert store.head() == 1  # the loop still runs


# -- many threads ------------------------------------------------------------------------


def test_many_threads_appending_at_once_all_land_contiguously(store: SyncStore) -> None:
    threads, each = 16, 25

    def writer(n: int) -> None:
        for i in range(each):
            store.append("shared-1", [ev(writer=n, i=i)])
            store.append(f"own-{n}", [ev(i=i)], expected_version=NO_STREAM if i == 0 else i - 1)

    run_threads(threads, writer)
    total = threads * each * 2
    assert store.head() == total
    events = list(store.read_all())
    assert [e.position for e in events] == list(range(1, total + 1))
    shared = list(store.read_stream("shared-1"))
    assert [e.version for e in shared] == list(range(threads * each))
    for n in range(threads):
        mine = [e.data["i"] for e in shared if e.data["writer"] == n]
        assert mine == list(range(each))  # each thread's appends in its own order
        assert [e.version for e in store.read_stream(f"own-{n}")] == list(range(each))


def test_one_winner_per_version_among_threads(store: SyncStore) -> None:
    wins: list[int] = []
    conflicts: list[int] = []

    def writer(n: int) -> None:
        for _ in range(10):
            version = store.stream_version("race-1")
            try:
                store.append("race-1", [ev(n=n)], NO_STREAM if version is None else version)
                wins.append(n)
            except tidings.WrongExpectedVersion:
                conflicts.append(n)

    run_threads(8, writer)
    assert len(wins) + len(conflicts) == 80 and len(wins) >= 10
    assert [e.version for e in store.read_stream("race-1")] == list(range(len(wins)))


def test_threads_transact_and_follow_at_once(store: SyncStore) -> None:
    seen: list[int] = []
    follower_ready = threading.Event()

    def follow() -> None:
        with store.read_all(follow=True) as events:
            follower_ready.set()
            for event in events:
                seen.append(event.position)
                if event.position == 40:
                    return

    reader = threading.Thread(target=follow)
    reader.start()
    assert follower_ready.wait(5)

    def writer(n: int) -> None:
        for i in range(5):
            with store.transaction(tidings.Audit(f"user-{n}")) as tx:
                tx.append(f"a-{n}", [ev(i=i)])
                tx.append(f"b-{n}", [ev(i=i)])
            assert [r.stream for r in tx.results] == [f"a-{n}", f"b-{n}"]

    run_threads(4, writer)
    reader.join(10)
    assert seen == list(range(1, 41))
    first, second = store.audit(1), store.audit(2)
    assert first is not None and first == second  # one audit record per transaction


# -- iterators ---------------------------------------------------------------------------


class Source:
    """An async generator that records what happened to it."""

    def __init__(self, count: int | None = None, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.started = threading.Event()
        self.closed = threading.Event()
        self.thread: str | None = None

    async def __call__(self) -> AsyncIterator[int]:
        self.thread = threading.current_thread().name
        self.started.set()
        try:
            n = 0
            while self.count is None or n < self.count:
                if n == self.fail_after:
                    raise tidings.StoreUnavailable("memory://", "gone")
                yield n
                n += 1
                await asyncio.sleep(0)
            if self.count is None:
                await asyncio.Event().wait()
        finally:
            self.closed.set()


def test_an_iterator_runs_its_source_on_the_loop_thread() -> None:
    source = Source(count=600)
    assert list(SyncIterator(sync_loop.loop_thread(), source, batch=256)) == list(range(600))
    assert source.thread == "tidings-sync-loop"
    assert source.closed.is_set()


def test_an_iterator_closed_early_releases_its_generator() -> None:
    source = Source(count=100)
    items = SyncIterator[int](sync_loop.loop_thread(), source, batch=7)
    assert [next(items), next(items)] == [0, 1]
    assert not source.closed.is_set()
    items.close()
    assert source.closed.is_set()  # closed on the loop before close() returned
    assert list(items) == []


def test_a_garbage_collected_iterator_releases_its_generator() -> None:
    source = Source()
    items = SyncIterator[int](sync_loop.loop_thread(), source)
    assert next(items) == 0
    del items
    gc.collect()
    assert source.closed.wait(5)


def test_closing_from_another_thread_ends_a_waiting_next() -> None:
    source = Source(count=1)  # one item, then waits for ever
    items = SyncIterator[int](sync_loop.loop_thread(), source)
    assert next(items) == 0
    closer = threading.Timer(0.1, items.close)
    closer.start()
    started = time.monotonic()
    with pytest.raises(StopIteration):
        next(items)
    closer.join()
    assert time.monotonic() - started < 5
    assert source.closed.is_set()


def test_an_error_comes_after_the_items_before_it() -> None:
    source = Source(count=10, fail_after=3)
    items = SyncIterator[int](sync_loop.loop_thread(), source, batch=100)
    got: list[int] = []
    with pytest.raises(tidings.StoreUnavailable):
        for item in items:
            got.append(item)
    assert got == [0, 1, 2]
    assert list(items) == []


def test_an_unused_iterator_never_opens_its_source() -> None:
    source = Source(count=3)
    items = SyncIterator[int](sync_loop.loop_thread(), source)
    items.close()
    del items
    gc.collect()
    assert not source.started.is_set()


def test_closing_a_store_follow_closes_the_store_generator(store: SyncStore) -> None:
    opened: list[str] = []
    closed = threading.Event()
    pages = store.store.read_all_pages

    async def spy(*args: object) -> AsyncIterator[list[tidings.RecordedEvent]]:
        opened.append(threading.current_thread().name)
        try:
            async for page in pages(*args):  # type: ignore[arg-type]
                yield page
        finally:
            closed.set()

    store.append("s-1", [ev(), ev()])
    store.store.read_all_pages = spy  # type: ignore[method-assign]
    events = store.read_all(follow=True)
    assert [next(events).position, next(events).position] == [1, 2]
    assert not closed.is_set()
    events.close()
    assert closed.is_set() and opened == ["tidings-sync-loop"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_during_a_waiting_next_ends_the_read_on_the_loop(store: SyncStore) -> None:
    closed = threading.Event()
    pages = store.store.read_all_pages

    async def spy(*args: object) -> AsyncIterator[list[tidings.RecordedEvent]]:
        try:
            async for page in pages(*args):  # type: ignore[arg-type]
                yield page
        finally:
            closed.set()

    store.store.read_all_pages = spy  # type: ignore[method-assign]
    events = store.read_all(follow=True)
    main = threading.main_thread().ident
    assert main is not None
    ctrl_c = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(events)
    finally:
        ctrl_c.join()
    assert closed.wait(5)  # the cancelled step closed the generator on the loop
    assert list(events) == []
    store.append("s-1", [ev()])
    assert store.head() == 1


# -- closing, forking --------------------------------------------------------------------


def test_use_after_close_raises_store_closed(url: str) -> None:
    store = tidings.sync.connect(url)
    store.append("s-1", [ev()])
    with store.transaction() as tx:
        tx.append("s-2", [ev()])
    unfinished = store.transaction()
    unfinished.append("s-3", [ev()])
    store.close()
    for call in (
        lambda: store.append("s-1", [ev()]),
        store.head,
        lambda: store.stream_version("s-1"),
        lambda: store.audit(1),
        lambda: store.wait_for(1),
        lambda: next(store.read_stream("s-1")),
        lambda: next(store.read_all()),
        lambda: next(store.read_all_pages()),
        lambda: next(store.list_streams()),
        lambda: store.transaction(),
        unfinished.commit,
    ):
        with pytest.raises(tidings.StoreClosed):
            call()


def test_connect_errors_are_the_async_ones() -> None:
    with pytest.raises(tidings.ConfigurationError):
        tidings.sync.connect("nonsense://x")
    with pytest.raises(tidings.ConfigurationError):
        tidings.sync.connect("memory://", max_event_bytes="lots")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_loop_of_its_own() -> None:
    parent = tidings.sync.connect("memory://")
    parent.append("s-1", [ev()])
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            try:
                parent.head()
            except RuntimeError as exc:
                if "forked" in str(exc):
                    with tidings.sync.connect("memory://") as child:
                        child.append("s-1", [ev()])
                        code = 0 if child.head() == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    parent.close()
    assert os.waitstatus_to_exitcode(status) == 0
