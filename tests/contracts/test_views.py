"""State views on every store: new/mod/del and reducers, read-your-writes, stacked watches."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidings
from tidings import NewEvent
from tidings.errors import InvalidInput, ViewClosed
from tidings.subscriptions import Retry, parked
from tidings.views import DEFAULT_ON_ERROR, Change, View, Watch


def new(data: Any) -> NewEvent:
    return NewEvent("new", data)


def mod(data: Any) -> NewEvent:
    return NewEvent("mod", data)


DEL = NewEvent("del")


async def next_change(watch: Watch, timeout: float = 5) -> Change:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        return await anext(watch)


async def drain(watch: Watch, quiet: float = 0.3) -> list[Change]:
    """Every change the watcher hands out until it has nothing for ``quiet`` seconds."""
    got = []
    while True:
        try:
            got.append(await next_change(watch, quiet))
        except TimeoutError:
            return got


def apply(state: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
    for change in changes:
        if change.value is None:
            state.pop(change.key, None)
        else:
            state[change.key] = change.value
    return state


async def test_new_mod_and_del_keep_the_latest_value_per_key(store: tidings.EventStore) -> None:
    async with View(store, "profiles", category="profile") as view:
        await store.append("profile-1", [new({"name": "Ada", "age": 36})])
        await store.append("profile-1", [mod({"age": 37, "city": "London"})])
        await store.append("profile-2", [mod({"x": 1})])  # a mod of a missing key creates it
        await store.append("profile-3", [new({"gone": True}), DEL])
        await store.append("profile-4", [new({"a": 1}), DEL, new({"b": 2})])  # a replacement
        await store.append("profile-1", [NewEvent("Renamed", {"name": "Bob"})])  # not evt's
        await store.append("order-1", [new({"other": "category"})])
        last = await store.append("profile", [new({"no": "key"})])  # the stream has no key
        values = await view.get(["1", "2", "3", "4", "5"], at_least=last.position)
        assert values == {
            "1": {"name": "Ada", "age": 37, "city": "London"},
            "2": {"x": 1},
            "4": {"b": 2},
        }
        assert await view.get() == values  # every key
        assert view.position >= last.position - 2  # folded up to its last event at least


async def test_a_reducer_folds_every_event_of_the_category(store: tidings.EventStore) -> None:
    def count(current: Any, event: tidings.RecordedEvent) -> Any:
        if event.type == "Reset":
            return None
        return (current or 0) + event.data["n"]

    async with View(store, "counters", category="counter", reducer=count) as view:
        await store.append("counter-a", [NewEvent("Added", {"n": 2}), NewEvent("Added", {"n": 3})])
        await store.append("counter-b", [NewEvent("Added", {"n": 1}), NewEvent("Reset")])
        last = await store.append("counter-c", [NewEvent("Added", {"n": 7})])
        assert await view.get(["a", "b", "c"], at_least=last.position) == {"a": 5, "c": 7}


async def test_get_at_least_an_append_position_reads_your_writes(
    store: tidings.EventStore,
) -> None:
    async with View(store, "profiles", category="profile") as view:
        for n in range(20):
            result = await store.append(f"profile-{n % 3}", [mod({"n": n})])
            values = await view.get([str(n % 3)], at_least=result.position)
            assert values[str(n % 3)]["n"] == n
        # A position of another category: the view has nothing more to fold up to it.
        other = await store.append("order-1", [new({"x": 1})])
        async with asyncio.timeout(5):
            await view.get(["0"], at_least=other.position)
        with pytest.raises(TimeoutError):
            await view.get(["0"], at_least=other.position + 1, timeout=0.1)


async def test_watch_yields_current_values_then_every_change(store: tidings.EventStore) -> None:
    await store.append("profile-1", [new({"v": 1})])
    await store.append("profile-2", [new({"v": 2})])
    async with View(store, "profiles", category="profile") as view:
        await view.wait(await store.head())
        async with view.watch(["1", "3"]) as watch:
            first = await next_change(watch)
            assert (first.key, first.value) == ("1", {"v": 1})
            await store.append("profile-2", [mod({"v": 22})])  # not watched
            await store.append("profile-3", [new({"v": 3})])
            assert (await next_change(watch)).value == {"v": 3}
            await store.append("profile-1", [mod({"w": 1})])
            change = await next_change(watch)
            assert (change.key, change.value) == ("1", {"v": 1, "w": 1})
            deleted = await store.append("profile-3", [DEL])
            change = await next_change(watch)
            assert change == Change("3", None, deleted.position)
        async for _ in watch:  # closed: the iterator has ended
            raise AssertionError("a closed watch yields nothing")


@pytest.mark.parametrize("followed", [False, True], ids=["pushed", "followed"])
async def test_a_slow_watcher_gets_changes_stacked_into_the_final_state(
    store: tidings.EventStore, followed: bool
) -> None:
    await store.append("profile-a", [new({"n": 0})])
    await store.append("profile-b", [new({"n": 0})])
    await store.append("profile-c", [new({"n": 0})])
    async with View(store, "profiles", category="profile", poll_interval=0.05) as view:
        # "followed": a view object that does not fold, as in another process.
        reader = View(store, "profiles", category="profile", poll_interval=0.05)
        watched = reader if followed else view
        try:
            async with watched.watch(["a", "b", "c"]) as watch:
                initial = [await next_change(watch) for _ in range(3)]
                state = apply({}, initial)
                assert state == {"a": {"n": 0}, "b": {"n": 0}, "c": {"n": 0}}
                last = None
                for n in range(1, 101):  # the watcher reads none of these meanwhile
                    key = "abc"[n % 3]
                    if n % 10 == 0:
                        events = [DEL, new({"n": n, "fresh": True})]  # del then new
                    elif n == 50:
                        events = [DEL]
                    else:
                        events = [mod({"n": n, f"k{n % 4}": n})]
                    last = await store.append(f"profile-{key}", events)
                assert last is not None
                final = await view.get(["a", "b", "c"], at_least=last.position)
                await watched.wait(last.position, timeout=5)
                assert watch.pending <= 3
                stacked = await drain(watch)
                assert len(stacked) <= 3
                assert apply(state, stacked) == final
        finally:
            await reader.close()


@pytest.mark.durable
async def test_stop_and_start_resume_from_the_checkpoint(store_url: str) -> None:
    def count(current: Any, event: tidings.RecordedEvent) -> Any:
        return (current or 0) + 1  # folding an event twice would show

    store = await tidings.connect(store_url)
    try:
        view = View(store, "counts", category="counter", reducer=count)
        await view.start()
        last = await store.append("counter-a", [NewEvent("Hit")] * 3)
        await view.wait(last.position, timeout=5)
        await view.stop()
        await view.stop()  # idempotent
        last = await store.append("counter-a", [NewEvent("Hit")] * 2)
        assert await view.get(["a"]) == {"a": 3}  # stopped: folded up to where it stopped
        await view.start()
        assert await view.get(["a"], at_least=last.position, timeout=5) == {"a": 5}
        await view.close()
        with pytest.raises(ViewClosed):
            await view.get(["a"])
    finally:
        await store.close()
    # The rows and the checkpoint are in the database: a new process finds them.
    store = await tidings.connect(store_url)
    try:
        last = await store.append("counter-b", [NewEvent("Hit")])
        async with View(store, "counts", category="counter", reducer=count) as view:
            assert await view.get(["a", "b"], at_least=last.position, timeout=5) == {
                "a": 5,
                "b": 1,
            }
    finally:
        await store.close()


async def test_a_view_object_restarted_keeps_its_rows(store: tidings.EventStore) -> None:
    async with View(store, "profiles", category="profile") as view:
        last = await store.append("profile-1", [new({"v": 1})])
        await view.wait(last.position)
    last = await store.append("profile-1", [mod({"w": 2})])
    async with View(store, "profiles", category="profile") as view:
        assert await view.get(["1"], at_least=last.position, timeout=5) == {"1": {"v": 1, "w": 2}}


async def test_an_event_that_cannot_be_folded_is_parked_and_the_view_goes_on(
    store: tidings.EventStore,
) -> None:
    assert DEFAULT_ON_ERROR.then == "park"
    quick = Retry(attempts=1, backoff=0, then="park")
    async with View(store, "profiles", category="profile", on_error=quick) as view:
        await store.append("profile-1", [new({"v": 1})])
        bad = await store.append("profile-1", [mod([1, 2, 3])])  # not a JSON object
        last = await store.append("profile-2", [new({"v": 2})])
        values = await view.get(["1", "2"], at_least=last.position, timeout=10)
        assert values == {"1": {"v": 1}, "2": {"v": 2}}
        [item] = await parked(store, "view:profiles")
        assert item.position == bad.position
        assert "JSON object" in item.error


async def test_a_watcher_follows_a_view_folded_elsewhere(store: tidings.EventStore) -> None:
    reader = View(store, "profiles", category="profile", poll_interval=0.05)
    try:
        async with reader.watch() as watch:
            async with View(store, "profiles", category="profile") as folder:
                await store.append("profile-1", [new({"v": 1})])
                assert (await next_change(watch)).value == {"v": 1}
                gone = await store.append("profile-1", [DEL])
                assert await next_change(watch) == Change("1", None, gone.position)
                last = await store.append("profile-2", [new({"v": 2})])
                await folder.wait(last.position)
            # The folder stopped: nothing is lost, nothing repeats.
            assert await next_change(watch) == Change("2", {"v": 2}, last.position)
            assert await drain(watch, 0.2) == []
            assert await reader.get() == {"2": {"v": 2}}
    finally:
        await reader.close()


async def test_a_watcher_switches_to_pushes_when_the_view_starts_here(
    store: tidings.EventStore,
) -> None:
    view = View(store, "profiles", category="profile", poll_interval=0.05)
    try:
        await store.append("profile-1", [new({"v": 1})])
        watch = view.watch()
        task = asyncio.create_task(drain(watch, 0.5))
        await asyncio.sleep(0.1)
        await view.start()
        for n in range(2, 6):
            await store.append(f"profile-{n}", [new({"v": n})])
        await view.stop()
        last = await store.append("profile-9", [new({"v": 9})])
        await view.start()
        await view.wait(last.position)
        changes = await task
        assert [c.key for c in changes] == ["1", "2", "3", "4", "5", "9"]
        await watch.aclose()
    finally:
        await view.close()


async def test_views_refuse_bad_names_and_keys(store: tidings.EventStore) -> None:
    with pytest.raises(InvalidInput):
        View(store, "profiles", category="pro-file")
    with pytest.raises(InvalidInput):
        View(store, "", category="profile")
    with pytest.raises(InvalidInput):
        View(store, "profiles", category="profile", reducer="nope")  # type: ignore[arg-type]
    view = View(store, "profiles", category="profile")
    try:
        with pytest.raises(InvalidInput):
            await view.get("42")
        with pytest.raises(InvalidInput):
            await view.get([42])  # type: ignore[list-item]
        with pytest.raises(InvalidInput):
            view.watch("42")
    finally:
        await view.close()


# -- a view equals a fold of the log, after random concurrent appends -----------------

KEYS = ["a", "b", "c", "d"]
operations = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.sampled_from(["new", "mod", "mod", "del"]),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(-5, 5), max_size=2),
    ),
    min_size=1,
    max_size=40,
)


def fold_log(events: list[tidings.RecordedEvent]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for event in events:
        key = event.stream.partition("-")[2]
        if event.type == "new":
            state[key] = dict(event.data)
        elif event.type == "mod":
            state[key] = {**state.get(key, {}), **event.data}
        elif event.type == "del":
            state.pop(key, None)
    return state


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, writers=st.integers(1, 4), batch_size=st.sampled_from([1, 3, 500]))
def test_a_view_equals_a_fold_of_the_log(
    store_url: str, ops: list[tuple[str, str, dict[str, int]]], writers: int, batch_size: int
) -> None:
    asyncio.run(_fold_equals_log(store_url, ops, writers, batch_size))


async def _fold_equals_log(
    store_url: str, ops: list[tuple[str, str, dict[str, int]]], writers: int, batch_size: int
) -> None:
    category = "p" + uuid.uuid4().hex[:8]  # a category of its own per example
    store = await tidings.connect(store_url)
    try:
        view = View(store, category, category=category, batch_size=batch_size)
        watched: dict[str, Any] = {}
        moved = asyncio.Event()
        watch = view.watch()

        async def follow() -> None:
            last_seen: dict[str, int] = {}
            async for change in watch:  # never a change twice, never one out of order
                assert change.position > last_seen.get(change.key, 0)
                last_seen[change.key] = change.position
                apply(watched, [change])
                moved.set()

        async def write(share: list[tuple[str, str, dict[str, int]]]) -> None:
            for key, kind, data in share:
                await store.append(f"{category}-{key}", [NewEvent(kind, data)])

        watcher = asyncio.create_task(follow())
        async with view:
            await asyncio.gather(*(write(ops[i::writers]) for i in range(writers)))
            head = await store.head()
            values = await view.get(KEYS, at_least=head, timeout=10)
            log = [e async for e in store.read_all(0, tidings.Filter(categories=[category]))]
            assert values == fold_log(log)
            async with asyncio.timeout(5):
                while watched != values:
                    moved.clear()
                    await moved.wait()
        await watcher  # the view closed: the watch ended (an assertion in it raises here)
    finally:
        await store.close()
