"""Typed events on every store: classes appended and read back as ``payload``, stored
events renamed and upcast on every read path (stream and log reads, live reads,
subscriptions, aggregates, state views), snapshots taken before an upcaster existed,
strict registries, unknown types, and a property test of the upcast reads."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidings
from tidings import Filter, NewEvent, RecordedEvent, Types, UnregisteredType
from tidings.aggregates import project
from tidings.subscriptions import subscribe
from tidings.types import VERSION_KEY
from tidings.views import View

# -- the classes and registries ---------------------------------------------------------


@dataclasses.dataclass
class PlacedDataclass:
    order: int
    total: int
    lines: list[str]


class PlacedStruct(msgspec.Struct):
    order: int
    total: int
    lines: list[str]


class PlacedModel(pydantic.BaseModel):
    order: int
    total: int
    lines: list[str]


KINDS = [PlacedDataclass, PlacedStruct, PlacedModel]


@dataclasses.dataclass
class Placed:
    """OrderPlaced at version 3 (it was OrderCreated {order, amount} at version 1)."""

    order: int
    total: int
    currency: str


def chain(strict: bool = False) -> Types:
    """OrderCreated renamed OrderPlaced; version 1 -> 2 -> 3; Placed is version 3."""
    types = Types(strict=strict)
    types.register(Placed, name="OrderPlaced", version=3)
    types.rename("OrderCreated", "OrderPlaced")

    @types.upcaster("OrderPlaced", 1, 2)
    def total_from_amount(data: dict[str, Any]) -> dict[str, Any]:
        return {"order": data["order"], "total": data["amount"]}

    @types.upcaster("OrderPlaced", 2, 3)
    def with_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return types


OLD = [
    NewEvent("OrderCreated", {"order": 1, "amount": 10}),  # the old name, version 1
    NewEvent("OrderPlaced", {"order": 2, "total": 20}, {VERSION_KEY: 2}),
    NewEvent("OrderPlaced", {"order": 3, "total": 30, "currency": "SEK"}, {VERSION_KEY: 3}),
    NewEvent("Noted", {"text": "no class, no upcaster"}),
]
CURRENT = [
    Placed(1, 10, "EUR"),
    Placed(2, 20, "EUR"),
    Placed(3, 30, "SEK"),
]


async def with_types(store_url: str, store: Any, types: Types | None) -> Any:
    """The same store with ``types``: set on a memory store, reopened on the others."""
    if store_url == "memory://":
        store.types = types
        return store
    await store.close()
    return await tidings.connect(store_url, types=types)


def stored_json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


# -- round trips ------------------------------------------------------------------------


@pytest.mark.remote
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
async def test_a_registered_class_round_trips_as_payload_on_every_read(
    store_url: str, kind: type
) -> None:
    types = Types()
    types.register(kind, name="OrderPlaced")
    async with await tidings.connect(store_url, types=types) as store:
        assert store.types is types
        first = kind(order=1, total=10, lines=["a"])
        second = kind(order=2, total=20, lines=[])
        await store.append("order-1", [NewEvent(None, first), NewEvent("", second)])
        await store.append("order-2", [NewEvent("OrderPlaced", first)])
        by_stream = [e async for e in store.read_stream("order-1")]
        by_log = [e async for e in store.read_all()]
        by_page = [e async for p in store.read_all_pages(page_size=2) for e in p]
        for events in (by_stream, by_log[:2], by_page[:2]):
            assert [e.type for e in events] == ["OrderPlaced", "OrderPlaced"]
            assert [e.payload for e in events] == [first, second]
            assert all(isinstance(e.payload, kind) for e in events)
            assert events[0].data == {"order": 1, "total": 10, "lines": ["a"]}  # data stays JSON
            assert events[0].metadata == {}  # version 1 records no version
        assert by_log[2].payload == first


@pytest.mark.remote
async def test_a_versioned_class_records_its_version_and_reads_back(store_url: str) -> None:
    store = await tidings.connect(store_url, types=chain())
    try:
        await store.append("order-9", [NewEvent(None, Placed(9, 90, "NOK"), {"by": "me"})])
        [event] = [e async for e in store.read_stream("order-9")]
        assert event.metadata == {"by": "me", VERSION_KEY: 3}
        assert event.payload == Placed(9, 90, "NOK")
        store = await with_types(store_url, store, None)  # no registry: as stored
        [event] = [e async for e in store.read_stream("order-9")]
        assert event.payload == {"order": 9, "total": 90, "currency": "NOK"}
    finally:
        await store.close()


@pytest.mark.remote
async def test_old_names_and_versions_read_renamed_and_upcast_everywhere(store_url: str) -> None:
    store = await tidings.connect(store_url)
    try:
        await store.append("order-1", OLD)
        store = await with_types(store_url, store, chain())
        events = [e async for e in store.read_stream("order-1")]
        assert [e.type for e in events] == ["OrderPlaced"] * 3 + ["Noted"]
        assert [e.payload for e in events[:3]] == CURRENT
        assert [e.metadata for e in events[:3]] == [{VERSION_KEY: 3}] * 3
        assert events[3].payload == {"text": "no class, no upcaster"}  # unknown: its JSON
        backwards = [e async for e in store.read_stream("order-1", backwards=True)]
        assert [e.payload for e in backwards[1:]] == CURRENT[::-1]
        logged = [e async for e in store.read_all()]
        assert [e.data for e in logged] == [e.data for e in events]
        # a filter on the new name finds the events stored under the old one
        placed = [e async for e in store.read_all(filter=Filter(types=["OrderPlaced"]))]
        assert [e.payload for e in placed] == CURRENT
        paged = [e async for p in store.read_all_pages(page_size=1) for e in p]
        assert [e.type for e in paged] == [e.type for e in events]
        # raw reads pass the stored JSON on untouched
        raw = [e async for p in store.read_all_pages(raw=True) for e in p]
        assert [e.type for e in raw] == ["OrderCreated", "OrderPlaced", "OrderPlaced", "Noted"]
        assert stored_json(raw[0].data) == {"order": 1, "amount": 10}
        assert stored_json(raw[0].metadata) == {}
        # and nothing stored was rewritten
        store = await with_types(store_url, store, None)
        again = [e async for e in store.read_stream("order-1")]
        assert [(e.type, e.data, e.metadata) for e in again] == [
            (e.type, e.data, e.metadata or {}) for e in OLD
        ]
    finally:
        await store.close()


@pytest.mark.remote
async def test_live_reads_get_upcast_events(store: tidings.EventStore) -> None:
    store.types = chain()  # type: ignore[attr-defined]
    old = [NewEvent("OrderPlaced", {"order": 1, "amount": 10}, {VERSION_KEY: 1})]

    async def follow() -> list[RecordedEvent]:
        got = []
        async for event in store.read_all(follow=True):
            got.append(event)
            if len(got) == 2:
                return got
        return got

    reader = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await store.append("order-1", old)
    await store.append("order-2", [NewEvent(None, Placed(2, 20, "EUR"))])
    live = await asyncio.wait_for(reader, 10)
    assert [e.payload for e in live] == [Placed(1, 10, "EUR"), Placed(2, 20, "EUR")]
    assert [e.metadata for e in live] == [{VERSION_KEY: 3}] * 2


async def test_subscriptions_get_upcast_events(store: tidings.EventStore) -> None:
    store.types = chain()  # type: ignore[attr-defined]
    await store.append(
        "order-1", [NewEvent("OrderPlaced", {"order": 1, "amount": 10}, {VERSION_KEY: 1})]
    )
    await store.append("order-2", [NewEvent(None, Placed(2, 20, "EUR"))])
    seen: list[Any] = []
    done = asyncio.Event()

    async def handler(events: list[RecordedEvent]) -> None:
        seen.extend(e.payload for e in events)
        if len(seen) >= 3:
            done.set()

    async with subscribe(store, "typed", handler, filter=Filter(types=["OrderPlaced"])):
        await store.append(
            "order-3", [NewEvent("OrderPlaced", {"order": 3, "amount": 5}, {VERSION_KEY: 1})]
        )
        await asyncio.wait_for(done.wait(), 10)
    assert seen == [Placed(1, 10, "EUR"), Placed(2, 20, "EUR"), Placed(3, 5, "EUR")]


# -- aggregates, views, snapshots -------------------------------------------------------


class OrderTotals(msgspec.Struct):
    """The projection after the upcasters: it folds OrderPlaced at version 3."""

    name = "OrderTotals"
    version = 1
    calls = 0

    total: int = 0
    count: int = 0

    def on_OrderPlaced(self, event: RecordedEvent) -> None:
        type(self).calls += 1
        placed: Placed = event.payload
        self.total += placed.total
        self.count += 1


class OrderTotalsBefore(msgspec.Struct):
    """The same projection (name and version) before them: OrderCreated {order, amount}."""

    name = "OrderTotals"
    version = 1

    total: int = 0
    count: int = 0

    def on_OrderCreated(self, event: RecordedEvent) -> None:
        self.total += event.data["amount"]
        self.count += 1


class OrderTotalsV2(OrderTotals):
    """What it computes changed: its version is raised, old snapshots are ignored."""

    version = 2


async def test_a_snapshot_folded_from_old_events_loads_after_the_upcasters(
    store_url: str,
) -> None:
    store = await tidings.connect(store_url)
    try:
        created = [NewEvent("OrderCreated", {"order": n, "amount": n}) for n in range(1, 6)]
        await store.append("order-1", created)
        before = await project(store, "order-1", OrderTotalsBefore, snapshot_every=1)
        assert (before.state.total, before.version, before.folded) == (15, 4, 5)

        store = await with_types(store_url, store, chain())
        await store.append("order-1", [NewEvent(None, Placed(6, 6, "EUR"))])
        OrderTotals.calls = 0
        loaded = await project(store, "order-1", OrderTotals)
        assert (loaded.state.total, loaded.state.count, loaded.version) == (21, 6, 5)
        assert (loaded.folded, OrderTotals.calls) == (1, 1)  # from the old snapshot
        replayed = await project(store, "order-1", OrderTotals, snapshots=False)
        assert (replayed.state, replayed.folded) == (loaded.state, 6)  # the same state
        bumped = await project(store, "order-1", OrderTotalsV2, snapshot_every=1)
        assert (bumped.state.total, bumped.folded) == (21, 6)  # through every upcaster
        again = await project(store, "order-1", OrderTotalsV2)
        assert (again.state.total, again.folded) == (21, 0)
    finally:
        await store.close()


async def test_commands_append_typed_events_and_fold_upcast_ones(store_url: str) -> None:
    store = await tidings.connect(store_url)
    try:
        await store.append("order-7", [NewEvent("OrderCreated", {"order": 7, "amount": 3})])
        store = await with_types(store_url, store, chain())

        def place_more(state: OrderTotals) -> list[NewEvent]:
            return [NewEvent(None, Placed(7, state.total * 2, "EUR"))]

        await store.execute("order-7", place_more, OrderTotals)
        loaded = await store.project("order-7", OrderTotals)
        assert (loaded.state.total, loaded.state.count) == (9, 2)
        [_, appended] = [e async for e in store.read_stream("order-7")]
        assert appended.metadata == {VERSION_KEY: 3}
    finally:
        await store.close()


async def test_a_state_view_folds_upcast_events(store: tidings.EventStore) -> None:
    types = chain()
    old = [NewEvent("OrderCreated", {"order": 1, "amount": 4})]
    await store.append("order-1", old)
    store.types = types  # type: ignore[attr-defined]

    def total(current: Any, event: RecordedEvent) -> Any:
        return (current or 0) + event.payload.total if event.type == "OrderPlaced" else current

    async with View(store, "totals", category="order", reducer=total) as view:
        last = await store.append("order-1", [NewEvent(None, Placed(1, 6, "EUR"))])
        assert await view.get(["1"], at_least=last.position) == {"1": 10}


# -- strict registries, unknown types ---------------------------------------------------


@dataclasses.dataclass
class Unregistered:
    n: int


async def test_a_strict_registry_refuses_an_unregistered_class_and_writes_nothing(
    store: tidings.EventStore,
) -> None:
    store.types = chain(strict=True)  # type: ignore[attr-defined]
    with pytest.raises(UnregisteredType, match="Unregistered"):
        await store.append(
            "order-1", [NewEvent(None, Placed(1, 1, "EUR")), NewEvent("Odd", Unregistered(1))]
        )
    with pytest.raises(UnregisteredType):
        async with store.transaction() as tx:
            tx.append("order-2", [NewEvent(None, Placed(2, 2, "EUR"))])
            tx.append("order-3", [NewEvent("Odd", Unregistered(2))])
    assert await store.head() == 0
    assert await store.stream_version("order-1") is None
    await store.append("order-1", [NewEvent("Odd", {"n": 1})])  # plain JSON is fine
    assert await store.head() == 1


async def test_unknown_types_read_as_their_json(store: tidings.EventStore) -> None:
    store.types = chain()  # type: ignore[attr-defined]
    await store.append(
        "misc-1",
        [
            NewEvent("Whatever", [1, "two", None]),
            NewEvent("Other", {"x": {"y": 1}}, {"tidings.version": 4}),
        ],
    )
    first, second = [e async for e in store.read_stream("misc-1")]
    assert (first.payload, second.payload) == ([1, "two", None], {"x": {"y": 1}})
    assert second.metadata == {VERSION_KEY: 4}


# -- the property: reading with upcasters equals upcasting the stored JSON by hand -------


NAMES = ["A", "B", "C"]
OLD_NAMES = {"A": "OldA", "B": "OldB"}  # C was never renamed


def step(name: str, k: int) -> Any:
    """A pure upcaster: it renames one key, adds another and changes a value."""

    def upcast(data: dict[str, Any]) -> dict[str, Any]:
        out = {f"{key}.{k}" if key == "x" else key: value for key, value in data.items()}
        out[f"{name}{k + 1}"] = len(data)
        return out

    return upcast


def registry(versions: dict[str, int]) -> Types:
    types = Types()
    for name, version in versions.items():
        for k in range(1, version):
            types.upcaster(name, k, k + 1)(step(name, k))
        if name in OLD_NAMES:
            types.rename(OLD_NAMES[name], name)
    return types


def by_hand(event: NewEvent, versions: dict[str, int]) -> tuple[str, Any]:
    name = {old: new for new, old in OLD_NAMES.items()}.get(event.type or "", event.type or "")
    data = event.data
    stored = (event.metadata or {}).get(VERSION_KEY, 1)
    if stored <= versions[name]:
        for k in range(stored, versions[name]):
            data = step(name, k)(data)
    return name, data


text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
versions_st = st.fixed_dictionaries({n: st.integers(1, 4) for n in NAMES})


@st.composite
def stored_events(draw: st.DrawFn) -> NewEvent:
    name = draw(st.sampled_from(NAMES))
    type_ = OLD_NAMES[name] if name in OLD_NAMES and draw(st.booleans()) else name
    data = draw(st.dictionaries(st.sampled_from(["x", "y", "z"]), json_values, max_size=3))
    version = draw(st.integers(1, 5))  # 5: from a newer writer than any registry here
    metadata = {} if version == 1 and draw(st.booleans()) else {VERSION_KEY: version}
    return NewEvent(type_, data, metadata)


async def _check_upcast_reads(store: Any, events: list[NewEvent], versions: dict[str, int]) -> None:
    await store.append("s-1", events)
    store.types = registry(versions)
    expected = [by_hand(e, versions) for e in events]
    read = [e async for e in store.read_stream("s-1")]
    logged = [e async for e in store.read_all()]
    for got in (read, logged):
        assert [(e.type, e.data) for e in got] == expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(stored_events(), min_size=1, max_size=12), versions=versions_st)
def test_upcast_reads_equal_upcasting_the_stored_json_by_hand_in_memory(
    events: list[NewEvent], versions: dict[str, int]
) -> None:
    async def run() -> None:
        async with await tidings.connect("memory://") as store:
            await _check_upcast_reads(store, events, versions)

    asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(stored_events(), min_size=1, max_size=12), versions=versions_st)
def test_upcast_reads_equal_upcasting_the_stored_json_by_hand_on_sqlite(
    events: list[NewEvent], versions: dict[str, int]
) -> None:
    async def run(path: Path) -> None:
        async with await tidings.connect(f"sqlite:///{path}", synchronous="normal") as store:
            await _check_upcast_reads(store, events, versions)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "events.db"))
