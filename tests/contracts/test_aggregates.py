"""Projections, snapshots and command handlers, on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidings
from tidings import NO_STREAM, NewEvent, RecordedEvent, WrongExpectedVersion
from tidings.aggregates import Fold, StreamStore, execute, project, save_snapshot
from tidings.aggregates.snapshots import snapshots_of
from tidings.errors import SnapshotError

# -- projections used below ----------------------------------------------------------


class Order:
    """A plain class: state in attributes, one method per event type it knows."""

    calls: ClassVar[int] = 0  # on_* calls of every instance, to count events folded

    def __init__(self) -> None:
        self.total = 0
        self.lines: list[str] = []
        self.paid = False

    def on_Placed(self, event: RecordedEvent) -> None:
        type(self).calls += 1
        self.total += event.data["total"]
        self.lines.append(event.data["item"])

    def on_Paid(self, event: RecordedEvent) -> None:
        type(self).calls += 1
        self.paid = True


class OrderV2(Order):
    """The same snapshots' name with another version: Order's snapshots do not fit it."""

    name = "Order"
    version = 2


class Counter(msgspec.Struct):
    """A msgspec Struct state; its snapshot is its fields."""

    count: int = 0
    last: datetime | None = None

    def on_Incremented(self, event: RecordedEvent) -> None:
        self.count += 1
        self.last = event.time


@dataclasses.dataclass
class Tally:
    """A dataclass state whose field is called ``version``: not the snapshots' version."""

    version: int = -1
    seen: tuple[str, ...] = ()

    def on_Seen(self, event: RecordedEvent) -> None:
        self.version = event.version
        self.seen = (*self.seen, event.data)


class Custom:
    """Explicit snapshot() and restore() win over the default ways."""

    name = "custom-sum"

    def __init__(self) -> None:
        self.values: set[int] = set()

    def on_Added(self, event: RecordedEvent) -> None:
        self.values.add(event.data)

    def snapshot(self) -> Any:
        return {"sorted": sorted(self.values)}

    @classmethod
    def restore(cls, data: Any) -> Custom:
        restored = cls()
        restored.values = set(data["sorted"])
        return restored


def add_total(state: dict[str, int], event: RecordedEvent) -> dict[str, int]:
    if event.type == "Placed":
        state["total"] += event.data["total"]  # mutates in place: the initial must not change
        state["count"] += 1
    return state


TOTALS = Fold("totals", {"total": 0, "count": 0}, add_total)


def placed(total: int, item: str = "x") -> NewEvent:
    return NewEvent("Placed", {"total": total, "item": item})


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    Order.calls = 0


# -- folding -------------------------------------------------------------------------


async def test_a_class_projection_folds_known_types_and_ignores_the_rest(
    store: tidings.EventStore,
) -> None:
    await store.append(
        "order-1", [placed(10, "a"), NewEvent("Noted", "hi"), placed(5, "b"), NewEvent("Paid")]
    )
    loaded = await project(store, "order-1", Order)
    assert (loaded.state.total, loaded.state.lines, loaded.state.paid) == (15, ["a", "b"], True)
    assert (loaded.version, loaded.folded) == (3, 4)
    assert Order.calls == 3


async def test_a_fold_function_folds_from_a_fresh_copy_of_its_initial_state(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(10), NewEvent("Paid"), placed(7)])
    first = await project(store, "order-1", TOTALS)
    second = await project(store, "order-1", TOTALS)
    assert first.state == second.state == {"total": 17, "count": 2}
    assert TOTALS.initial == {"total": 0, "count": 0}
    assert first.version == 2


async def test_a_stream_that_does_not_exist_loads_as_the_initial_state_with_version_none(
    store: tidings.EventStore,
) -> None:
    loaded = await project(store, "order-404", Order, snapshot_every=1)
    assert (loaded.state.total, loaded.version, loaded.folded) == (0, None, 0)
    assert (await project(store, "order-404", TOTALS)).state == {"total": 0, "count": 0}
    assert await snapshots_of(store).load("order-404", "Order", 1) is None


async def test_bad_projections_and_options_are_refused(store: tidings.EventStore) -> None:
    with pytest.raises(tidings.InvalidInput):
        await project(store, "order-1", Order(), snapshot_every=1)  # type: ignore[arg-type]
    with pytest.raises(tidings.InvalidInput):
        await project(store, "order-1", Order, snapshot_every=0)
    with pytest.raises(tidings.InvalidInput):
        Fold("", 0, lambda s, e: s)
    with pytest.raises(tidings.InvalidInput):
        Fold("n", 0, lambda s, e: s, version=-1)
    with pytest.raises(tidings.InvalidInput):
        await execute(store, "order-1", lambda s: [], Order, retries=-1)


# -- snapshots -----------------------------------------------------------------------


async def test_the_load_after_a_snapshot_reads_only_the_newer_events(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(i) for i in range(5)])
    first = await project(store, "order-1", Order, snapshot_every=3)
    assert (first.folded, Order.calls) == (5, 5)  # 5 >= 3: a snapshot at version 4

    await store.append("order-1", [placed(100), NewEvent("Paid")])
    Order.calls = 0
    second = await project(store, "order-1", Order, snapshot_every=3)
    assert (second.folded, Order.calls, second.version) == (2, 2, 6)
    assert (second.state.total, second.state.paid) == (110, True)
    assert second.state.lines == ["x"] * 6

    third = await project(store, "order-1", Order)
    assert (third.folded, third.version, third.state.total) == (2, 6, 110)  # 2 < 3: none taken


async def test_no_snapshot_is_taken_before_snapshot_every_events_were_folded(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(1)] * 4)
    await project(store, "order-1", Order, snapshot_every=5)
    assert await snapshots_of(store).load("order-1", "Order", 1) is None
    await store.append("order-1", [placed(1)])
    await project(store, "order-1", Order, snapshot_every=5)
    assert (await project(store, "order-1", Order)).folded == 0


async def test_a_snapshot_of_another_projection_version_is_ignored_and_replaced(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(3), placed(4)])
    await save_snapshot(store, "order-1", Order)
    assert (await project(store, "order-1", Order)).folded == 0

    v2 = await project(store, "order-1", OrderV2, snapshot_every=1)
    assert (v2.folded, v2.state.total) == (2, 7)  # version 1's snapshot ignored
    assert (await project(store, "order-1", OrderV2)).folded == 0  # its own replaced it
    assert (await project(store, "order-1", Order)).folded == 2  # and version 1 reads all


async def test_save_snapshot_takes_one_on_demand(store: tidings.EventStore) -> None:
    assert (await save_snapshot(store, "order-1", Order)).version is None  # nothing to save
    await store.append("order-1", [placed(2), placed(3)])
    saved = await save_snapshot(store, "order-1", TOTALS)
    assert (saved.version, saved.state) == (1, {"total": 5, "count": 2})
    loaded = await project(store, "order-1", TOTALS)
    assert (loaded.folded, loaded.version, loaded.state) == (0, 1, {"total": 5, "count": 2})
    unsnapshotted = await project(store, "order-1", TOTALS, snapshots=False)
    assert (unsnapshotted.folded, unsnapshotted.state) == (2, loaded.state)


async def test_struct_dataclass_and_custom_states_come_back_from_snapshots_as_they_were(
    store: tidings.EventStore,
) -> None:
    await store.append("counter-1", [NewEvent("Incremented")] * 3)
    await store.append("tally-1", [NewEvent("Seen", "a"), NewEvent("Seen", "b")])
    await store.append("set-1", [NewEvent("Added", n) for n in (3, 1, 3, 2)])
    projections: list[tuple[str, type[Any]]] = [
        ("counter-1", Counter),
        ("tally-1", Tally),
        ("set-1", Custom),
    ]
    for stream, projection in projections:
        fresh = await save_snapshot(store, stream, projection)
        restored = await project(store, stream, projection)
        assert restored.folded == 0
        if isinstance(fresh.state, Custom):
            assert restored.state.values == fresh.state.values == {1, 2, 3}
        else:
            assert restored.state == fresh.state
    counter = (await project(store, "counter-1", Counter)).state
    assert counter.count == 3 and isinstance(counter.last, datetime)
    assert counter.last.tzinfo is not None
    tally = (await project(store, "tally-1", Tally)).state
    assert tally == Tally(1, ("a", "b"))
    # A dataclass field named `version` is state, not the snapshots' version (still 1).
    assert await snapshots_of(store).load("tally-1", "Tally", 1) is not None


class Keyed:
    """A plain class: its annotations bring back what JSON alone would not (int keys, tuples)."""

    pair: tuple[int, int]
    names: dict[int, str]

    def __init__(self) -> None:
        self.pair = (0, 0)
        self.names = {}

    def on_Named(self, event: RecordedEvent) -> None:
        self.pair = (event.version, event.data["n"])
        self.names[event.version] = event.data["name"]


def by_version(state: dict[int, str], event: RecordedEvent) -> dict[int, str]:
    return {**state, event.version: event.type}


async def test_int_keys_and_tuples_come_back_from_snapshots_by_their_declared_types(
    store: tidings.EventStore,
) -> None:
    await store.append("k-1", [NewEvent("Named", {"n": n, "name": f"n{n}"}) for n in (5, 6)])
    keyed = (await save_snapshot(store, "k-1", Keyed)).state
    restored = await project(store, "k-1", Keyed)
    assert restored.folded == 0
    assert (restored.state.pair, restored.state.names) == (keyed.pair, keyed.names)
    assert restored.state.names == {0: "n5", 1: "n6"} and restored.state.pair == (1, 6)

    versions: Fold[dict[int, str]] = Fold("by-version", {}, by_version, state_type=dict[int, str])
    await save_snapshot(store, "k-1", versions)
    loaded = await project(store, "k-1", versions)
    assert (loaded.folded, loaded.state) == (0, {0: "Named", 1: "Named"})


async def test_a_snapshot_never_goes_backwards_within_a_projection_version(
    store: tidings.EventStore,
) -> None:
    snapshots = snapshots_of(store)
    await snapshots.save("order-1", "p", 1, 7, '{"n": 7}')
    await snapshots.save("order-1", "p", 1, 5, '{"n": 5}')  # older: kept out
    await snapshots.save("order-1", "p", 1, 7, '{"n": 70}')  # same version: kept out
    found = await snapshots.load("order-1", "p", 1)
    assert found is not None and found.version == 7 and msgspec.json.decode(found.state) == {"n": 7}
    await snapshots.save("order-1", "p", 2, 3, '{"n": 3}')  # another projection version: replaces
    assert await snapshots.load("order-1", "p", 1) is None
    found = await snapshots.load("order-1", "p", 2)
    assert found is not None and found.version == 3
    await snapshots.save("order-1", "q", 1, 1, "[]")  # another name: a row of its own
    assert await snapshots.load("order-1", "p", 2) == found


async def test_state_with_no_json_form_cannot_be_snapshotted(store: tidings.EventStore) -> None:
    await store.append("order-1", [placed(1)])
    nan = Fold("nan", 0.0, lambda s, e: float("nan"))
    with pytest.raises(SnapshotError):
        await save_snapshot(store, "order-1", nan)
    assert (await project(store, "order-1", nan)).folded == 1  # loading alone still works


async def test_a_snapshot_that_no_longer_restores_says_to_raise_the_version(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(1)])
    await snapshots_of(store).save("order-1", "Counter", 1, 0, '{"count": "many"}')
    with pytest.raises(SnapshotError, match="raise its version"):
        await project(store, "order-1", Counter)


class Wrapped:
    """A store of the user's own: reads and appends, but tidings keeps no snapshots for it."""

    def __init__(self, inner: tidings.EventStore) -> None:
        self.read_stream = inner.read_stream
        self.append = inner.append


async def test_a_store_tidings_keeps_no_snapshots_for_loads_from_zero(
    store: tidings.EventStore,
) -> None:
    wrapped = Wrapped(store)
    await store.append("order-1", [placed(4)])
    assert (await project(wrapped, "order-1", Order)).state.total == 4
    assert await execute(wrapped, "order-1", lambda o: [NewEvent("Paid")], Order) is not None
    with pytest.raises(tidings.ConfigurationError):
        await save_snapshot(wrapped, "order-1", Order)


async def test_snapshots_false_folds_from_zero_and_can_rebuild_the_snapshot(
    store: tidings.EventStore,
) -> None:
    await store.append("order-1", [placed(1), placed(2)])
    await snapshots_of(store).save("order-1", "totals", 1, 1, '{"total": 99, "count": 9}')
    assert (await project(store, "order-1", TOTALS)).state == {"total": 99, "count": 9}
    rebuilt = await project(store, "order-1", TOTALS, snapshots=False, snapshot_every=1)
    assert (rebuilt.folded, rebuilt.state) == (2, {"total": 3, "count": 2})
    # Same stream version as the stored one: a rebuild does not replace it (never sideways).
    assert (await project(store, "order-1", TOTALS)).state == {"total": 99, "count": 9}


async def test_an_async_on_method_is_refused(store: tidings.EventStore) -> None:
    class Slow:
        async def on_Placed(self, event: RecordedEvent) -> None:
            pass

    await store.append("order-1", [placed(1)])
    with pytest.raises(tidings.InvalidInput, match="plain method"):
        await project(store, "order-1", Slow)


# -- command handlers ------------------------------------------------------------------


def increment(counter: Counter) -> list[NewEvent]:
    return [NewEvent("Incremented", {"from": counter.count})]


async def test_execute_appends_at_the_version_it_loaded(store: tidings.EventStore) -> None:
    first = await execute(store, "counter-1", increment, Counter)
    assert first is not None and (first.first_version, first.last_version) == (0, 0)
    second = await execute(store, "counter-1", increment, Counter)
    assert second is not None and second.first_version == 1

    stream = "counter-1"

    async def sneaky(counter: Counter) -> list[NewEvent]:
        # Another writer lands between the load and the append: the loaded version is stale.
        await store.append(stream, [NewEvent("Incremented", {"from": "elsewhere"})])
        return increment(counter)

    with pytest.raises(WrongExpectedVersion) as caught:
        await execute(store, stream, sneaky, Counter, retries=0)
    assert (caught.value.expected, caught.value.actual) == (1, 2)

    stream = "counter-2"
    with pytest.raises(WrongExpectedVersion) as caught:
        await execute(store, stream, sneaky, Counter, retries=0)
    assert (caught.value.expected, caught.value.actual) == (NO_STREAM, 0)


async def test_a_conflict_reloads_and_runs_the_command_again(store: tidings.EventStore) -> None:
    seen: list[int] = []

    async def once_sneaky(counter: Counter) -> list[NewEvent]:
        seen.append(counter.count)
        if len(seen) == 1:
            await store.append("counter-1", [NewEvent("Incremented")])
        return increment(counter)

    result = await execute(store, "counter-1", once_sneaky, Counter)
    assert seen == [0, 1]
    assert result is not None and result.first_version == 1
    events = [e async for e in store.read_stream("counter-1")]
    assert events[-1].data == {"from": 1}


async def test_concurrent_commands_on_one_stream_all_land_exactly_once(
    store: tidings.EventStore,
) -> None:
    results = await asyncio.gather(
        *(execute(store, "counter-1", increment, Counter, retries=10) for _ in range(10))
    )
    assert sorted(r.first_version for r in results if r is not None) == list(range(10))
    loaded = await project(store, "counter-1", Counter)
    assert (loaded.state.count, loaded.version) == (10, 9)
    froms = [e.data["from"] async for e in store.read_stream("counter-1")]
    assert froms == list(range(10))  # each decided on the state it appended after


async def test_retries_exhausted_raise_the_last_wrong_expected_version(
    store: tidings.EventStore,
) -> None:
    calls = 0

    async def always_beaten(counter: Counter) -> list[NewEvent]:
        nonlocal calls
        calls += 1
        await store.append("counter-1", [NewEvent("Incremented")])
        return increment(counter)

    with pytest.raises(WrongExpectedVersion) as caught:
        await execute(store, "counter-1", always_beaten, Counter, retries=2)
    assert calls == 3
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert await store.stream_version("counter-1") == 2  # only the other writer's events


class Refused(Exception):
    pass


async def test_a_command_that_raises_propagates_and_appends_nothing(
    store: tidings.EventStore,
) -> None:
    def refuse(counter: Counter) -> list[NewEvent]:
        raise Refused(counter.count)

    with pytest.raises(Refused) as caught:
        await execute(store, "counter-1", refuse, Counter)
    assert caught.value.args == (0,)
    assert await store.stream_version("counter-1") is None


async def test_an_empty_decision_appends_nothing(store: tidings.EventStore) -> None:
    assert await execute(store, "counter-1", lambda c: [], Counter) is None
    assert await execute(store, "counter-1", lambda c: None, Counter) is None

    async def nothing(counter: Counter) -> list[NewEvent]:
        return []

    assert await execute(store, "counter-1", nothing, Counter) is None
    assert await store.stream_version("counter-1") is None


async def test_commands_load_through_snapshots(store: tidings.EventStore) -> None:
    await store.append("order-1", [placed(1)] * 6)

    def pay(order: Order) -> list[NewEvent]:
        return [] if order.paid else [NewEvent("Paid", {"total": order.total})]

    assert await execute(store, "order-1", pay, Order, snapshot_every=5) is not None
    Order.calls = 0
    assert await execute(store, "order-1", pay, Order, snapshot_every=5) is None
    assert Order.calls == 1  # the snapshot at version 5, then the Paid event alone


# -- snapshots never change the state (hypothesis) -------------------------------------


class Summary(msgspec.Struct):
    total: int = 0
    by_type: dict[str, int] = {}
    last: list[int] = []

    def on_A(self, event: RecordedEvent) -> None:
        self._add(event)

    def on_B(self, event: RecordedEvent) -> None:
        self._add(event)
        self.total *= -1

    def _add(self, event: RecordedEvent) -> None:
        self.total += event.data
        self.by_type[event.type] = self.by_type.get(event.type, 0) + 1
        self.last = [*self.last[-2:], event.version]


def fold_list(state: list[Any], event: RecordedEvent) -> list[Any]:
    return [*state, [event.type, event.data]][-4:]


LAST_FOUR: Fold[list[Any]] = Fold("last-four", [], fold_list)

batches = st.lists(
    st.lists(st.tuples(st.sampled_from("ABC"), st.integers(-100, 100)), min_size=1, max_size=5),
    max_size=8,
)
loads = st.lists(st.one_of(st.none(), st.integers(1, 6)), min_size=1, max_size=9)


async def _check_snapshots_never_change_state(
    store: StreamStore, appends: list[list[tuple[str, int]]], every: list[int | None]
) -> None:
    for i, batch in enumerate([*appends, []]):
        if batch:
            await store.append("s-1", [NewEvent(t, d) for t, d in batch])
        snapshot_every = every[i % len(every)]
        projections: list[type[Any] | Fold[Any]] = [Summary, LAST_FOUR]
        for projection in projections:
            loaded = await project(store, "s-1", projection, snapshot_every=snapshot_every)
            plain = await project(store, "s-1", projection, snapshots=False)
            assert (loaded.state, loaded.version) == (plain.state, plain.version)
            assert plain.folded == (0 if plain.version is None else plain.version + 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=batches, every=loads)
def test_state_loaded_through_snapshots_equals_state_folded_from_zero_in_memory(
    appends: list[list[tuple[str, int]]], every: list[int | None]
) -> None:
    async def run() -> None:
        async with await tidings.connect("memory://") as store:
            await _check_snapshots_never_change_state(store, appends, every)

    asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=batches, every=loads)
def test_state_loaded_through_snapshots_equals_state_folded_from_zero_on_sqlite(
    appends: list[list[tuple[str, int]]], every: list[int | None]
) -> None:
    async def run(path: Path) -> None:
        async with await tidings.connect(f"sqlite:///{path}", synchronous="normal") as store:
            await _check_snapshots_never_change_state(store, appends, every)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "events.db"))
