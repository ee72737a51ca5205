"""The type registry on its own: registration, checks, naming and versioning appends,
reading stored events renamed and upcast, and the lazy payload. No store."""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

import tidings
from tidings import (
    EventDecodeError,
    Filter,
    InvalidEvent,
    NewEvent,
    RecordedEvent,
    TypeRegistryError,
    Types,
    UnregisteredType,
)
from tidings.codec import prepare_event
from tidings.types import VERSION_KEY, schema_version


@dataclasses.dataclass
class Placed:
    order: int
    total: int


class Paid(msgspec.Struct):
    order: int
    amount: int


class Shipped(pydantic.BaseModel):
    order: int
    carrier: str


def recorded(type_: str, data: Any, metadata: dict[str, Any] | None = None) -> RecordedEvent:
    return RecordedEvent(
        uuid.uuid4(), "order-1", type_, data, metadata or {}, 0, 1, datetime.now(UTC)
    )


def chain() -> Types:
    """OrderCreated (v1) renamed OrderPlaced, upcast 1 -> 2 -> 3."""
    types = Types()
    types.rename("OrderCreated", "OrderPlaced")

    @types.upcaster("OrderPlaced", 1, 2)
    def total_from_amount(data: dict[str, Any]) -> dict[str, Any]:
        return {"order": data["order"], "total": data["amount"]}

    @types.upcaster("OrderPlaced", 2, 3)
    def currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return types


# -- registering and checking ----------------------------------------------------------


def test_a_class_registers_under_its_name_at_version_1_by_default() -> None:
    types = Types()
    assert types.register(Placed) is Placed
    assert types.name_of(Placed) == "Placed"
    assert types.class_of("Placed") is Placed
    assert types.current_version("Placed") == 1
    assert types.current_version("Unknown") == 1


def test_register_works_as_a_class_decorator_with_a_name_and_version() -> None:
    types = Types()

    @types.register(name="order.placed", version=2)
    @dataclasses.dataclass
    class PlacedV2:
        order: int

    types.upcaster("order.placed", 1, 2)(lambda d: d)
    types.check()
    assert types.name_of(PlacedV2) == "order.placed"
    assert types.current_version("order.placed") == 2


def test_only_dataclasses_structs_and_pydantic_models_register() -> None:
    types = Types()
    for cls in (Placed, Paid, Shipped):
        types.register(cls)
    with pytest.raises(TypeRegistryError) as caught:
        types.register(dict)
    assert caught.value.problem == "invalid"


def test_a_name_or_class_registered_twice_differently_is_a_duplicate() -> None:
    types = Types()
    types.register(Placed)
    types.register(Placed)  # the same registration again changes nothing
    with pytest.raises(TypeRegistryError) as caught:
        types.register(Paid, name="Placed")
    assert (caught.value.type, caught.value.problem) == ("Placed", "duplicate")
    with pytest.raises(TypeRegistryError, match="already registered"):
        types.register(Placed, version=2)


def test_two_upcasters_for_one_step_are_a_duplicate() -> None:
    types = Types()
    types.upcaster("Placed", 1, 2)(lambda d: d)
    with pytest.raises(TypeRegistryError) as caught:
        types.upcaster("Placed", 1, 2)(lambda d: d)
    assert caught.value.problem == "duplicate"


def test_an_upcaster_goes_to_the_next_version_only() -> None:
    with pytest.raises(TypeRegistryError, match="one version to the next") as caught:
        Types().upcaster("Placed", 1, 3)
    assert caught.value.problem == "invalid"
    with pytest.raises(TypeRegistryError):
        Types().upcaster("Placed", 0, 1)


def test_a_missing_step_below_the_registered_version_is_a_gap() -> None:
    types = Types()
    types.register(Placed, version=3)
    types.upcaster("Placed", 2, 3)(lambda d: d)
    with pytest.raises(TypeRegistryError, match="no upcaster from version 1 to 2") as caught:
        types.check()
    assert (caught.value.type, caught.value.problem) == ("Placed", "gap")


def test_a_registered_version_above_1_without_upcasters_is_a_gap() -> None:
    types = Types()
    types.register(Placed, version=2)
    with pytest.raises(TypeRegistryError) as caught:
        types.check()
    assert caught.value.problem == "gap"


def test_upcasters_without_a_class_set_the_version_and_must_not_skip_one() -> None:
    types = Types()
    types.upcaster("Placed", 1, 2)(lambda d: d)
    types.upcaster("Placed", 3, 4)(lambda d: d)
    with pytest.raises(TypeRegistryError, match="from version 2 to 3"):
        types.check()


def test_an_upcaster_past_the_registered_version_is_a_conflict() -> None:
    types = Types()
    types.register(Placed, version=2)
    types.upcaster("Placed", 1, 2)(lambda d: d)
    types.upcaster("Placed", 2, 3)(lambda d: d)
    with pytest.raises(TypeRegistryError, match="past the registered version") as caught:
        types.check()
    assert caught.value.problem == "conflict"


def test_renames_that_loop_are_a_cycle() -> None:
    types = Types()
    types.rename("A", "B")
    types.rename("B", "C")
    types.check()  # a chain is fine
    types.rename("C", "A")
    with pytest.raises(TypeRegistryError, match="A -> B -> C -> A") as caught:
        types.check()
    assert caught.value.problem == "cycle"
    with pytest.raises(TypeRegistryError) as caught:
        Types().rename("A", "A")
    assert caught.value.problem == "cycle"


def test_a_name_renamed_twice_is_a_duplicate() -> None:
    types = Types()
    types.rename("A", "B")
    with pytest.raises(TypeRegistryError) as caught:
        types.rename("A", "C")
    assert caught.value.problem == "duplicate"


def test_a_renamed_name_cannot_keep_a_class_or_upcasters() -> None:
    types = Types()
    types.register(Placed, name="OrderCreated")
    types.rename("OrderCreated", "OrderPlaced")
    with pytest.raises(TypeRegistryError, match="also registered"):
        types.check()
    types = Types()
    types.rename("OrderCreated", "OrderPlaced")
    types.upcaster("OrderCreated", 1, 2)(lambda d: d)
    with pytest.raises(TypeRegistryError, match="under the new name"):
        types.check()


def test_the_registry_checks_itself_on_first_use_after_a_change() -> None:
    types = Types()
    types.register(Placed, version=2)
    with pytest.raises(TypeRegistryError):
        types.prepare(NewEvent(None, Placed(1, 2)))
    with pytest.raises(TypeRegistryError):
        types.read([recorded("Placed", {})])
    types.upcaster("Placed", 1, 2)(lambda d: d)
    assert types.prepare(NewEvent(None, Placed(1, 2))).type == "Placed"


def test_registry_errors_are_configuration_errors_and_pickle() -> None:
    error = TypeRegistryError("Placed", "gap", "detail")
    assert isinstance(error, tidings.ConfigurationError)
    again = pickle.loads(pickle.dumps(error))
    assert (again.type, again.problem, again.detail) == ("Placed", "gap", "detail")
    assert isinstance(UnregisteredType("X"), InvalidEvent)
    decode = pickle.loads(pickle.dumps(EventDecodeError("T", 2, 7, "bad")))
    assert (decode.type, decode.version, decode.position) == ("T", 2, 7)


# -- appends ----------------------------------------------------------------------------


def test_an_instance_gets_its_registered_name_when_the_type_is_left_empty() -> None:
    types = Types()
    types.register(Paid, name="PaymentTaken")
    for given in (None, "", "PaymentTaken"):
        prepared = prepare_event(NewEvent(given, Paid(1, 5)), 1 << 20, types)
        assert prepared.type == "PaymentTaken"
        assert prepared.metadata == "{}"  # version 1 records nothing
        assert msgspec.json.decode(prepared.data) == {"order": 1, "amount": 5}


def test_an_instance_with_another_type_is_refused() -> None:
    types = Types()
    types.register(Paid)
    with pytest.raises(InvalidEvent, match="does not match the data's class Paid"):
        prepare_event(NewEvent("Refunded", Paid(1, 5)), 1 << 20, types)


def test_the_schema_version_goes_in_the_metadata_above_version_1() -> None:
    types = chain()
    types.register(Placed, name="OrderPlaced", version=3)
    prepared = prepare_event(NewEvent(None, Placed(1, 5), {"by": "me"}), 1 << 20, types)
    assert msgspec.json.decode(prepared.metadata) == {"by": "me", VERSION_KEY: 3}
    # plain JSON under a versioned type is taken as the current version...
    prepared = prepare_event(NewEvent("OrderPlaced", {"order": 1}), 1 << 20, types)
    assert msgspec.json.decode(prepared.metadata) == {VERSION_KEY: 3}
    # ...unless the metadata says which version it is
    old = NewEvent("OrderPlaced", {"order": 1, "amount": 5}, {VERSION_KEY: 1})
    assert msgspec.json.decode(prepare_event(old, 1 << 20, types).metadata) == {VERSION_KEY: 1}


def test_a_bad_or_contradicting_version_in_the_metadata_is_refused() -> None:
    types = chain()
    types.register(Placed, name="OrderPlaced", version=3)
    for bad in (0, 4, "2", 2.0, True):
        with pytest.raises(InvalidEvent, match="must be an int from 1 to 3"):
            types.prepare(NewEvent("OrderPlaced", {}, {VERSION_KEY: bad}))
    with pytest.raises(InvalidEvent, match="says 2"):
        types.prepare(NewEvent(None, Placed(1, 2), {VERSION_KEY: 2}))


def test_appending_under_a_renamed_type_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="renamed to 'OrderPlaced'"):
        chain().prepare(NewEvent("OrderCreated", {"order": 1}))


def test_a_strict_registry_refuses_an_unregistered_class_but_not_json() -> None:
    types = Types(strict=True)
    types.register(Paid)
    with pytest.raises(UnregisteredType) as caught:
        types.prepare(NewEvent("Placed", Placed(1, 2)))
    assert caught.value.class_name == "Placed"
    with pytest.raises(UnregisteredType):
        types.prepare(NewEvent("Shipped", Shipped(order=1, carrier="x")))
    types.prepare(NewEvent("Placed", {"order": 1}))
    types.prepare(NewEvent("Placed", [1, 2]))
    Types().prepare(NewEvent("Placed", Placed(1, 2)))  # not strict: stored as its JSON


def test_a_missing_type_says_what_to_do() -> None:
    with pytest.raises(InvalidEvent, match="event type is missing"):
        prepare_event(NewEvent(None, {"a": 1}), 1 << 20, Types())
    with pytest.raises(InvalidEvent, match="event type is missing"):
        prepare_event(NewEvent(data=Placed(1, 2)), 1 << 20)


# -- reads ------------------------------------------------------------------------------


def test_a_stored_old_name_at_version_1_reads_renamed_and_upcast_twice() -> None:
    types = chain()
    [event] = types.read([recorded("OrderCreated", {"order": 1, "amount": 5})])
    assert event.type == "OrderPlaced"
    assert event.data == {"order": 1, "total": 5, "currency": "EUR"}
    assert event.metadata == {VERSION_KEY: 3}
    assert schema_version(event) == 3


def test_each_stored_version_is_upcast_from_where_it_stands() -> None:
    types = chain()
    v2 = recorded("OrderPlaced", {"order": 1, "total": 5}, {VERSION_KEY: 2, "by": "x"})
    v3 = recorded("OrderPlaced", {"order": 1, "total": 5, "currency": "SEK"}, {VERSION_KEY: 3})
    [a, b] = types.read([v2, v3])
    assert a.data == {"order": 1, "total": 5, "currency": "EUR"}
    assert a.metadata == {VERSION_KEY: 3, "by": "x"}
    assert b is v3  # already current: the very same event


def test_an_event_from_a_newer_version_is_left_as_stored() -> None:
    types = chain()
    future = recorded("OrderPlaced", {"new": True}, {VERSION_KEY: 9})
    assert types.read([future]) == [future]
    assert types.read([future])[0].payload == {"new": True}


def test_an_unknown_type_reads_as_its_json() -> None:
    types = chain()
    event = recorded("Unknown", {"a": [1]})
    [read] = types.read([event])
    assert read is event
    assert read.payload == {"a": [1]}


def test_a_bad_stored_version_or_a_failing_upcaster_names_the_event() -> None:
    types = chain()
    with pytest.raises(EventDecodeError, match="position 1") as caught:
        types.read([recorded("OrderPlaced", {}, {VERSION_KEY: "two"})])
    assert caught.value.version == "two"
    with pytest.raises(EventDecodeError, match="upcaster 1 -> 2") as caught:
        types.read([recorded("OrderCreated", {"no amount": 1})])
    assert isinstance(caught.value.__cause__, KeyError)


def test_upcast_gives_what_a_read_gives() -> None:
    types = chain()
    assert types.upcast("OrderCreated", {"order": 1, "amount": 2}) == (
        "OrderPlaced",
        3,
        {"order": 1, "total": 2, "currency": "EUR"},
    )
    assert types.upcast("Other", {"x": 1}, 4) == ("Other", 4, {"x": 1})


def test_a_filter_on_a_type_takes_in_its_old_names() -> None:
    types = chain()
    wide = types.read_filter(Filter(types=["OrderPlaced"]))
    assert wide is not None and wide.types == ("OrderPlaced", "OrderCreated")
    old = types.read_filter(Filter(types=["OrderCreated"], categories=["order"]))
    assert old is not None and set(old.types or ()) == {"OrderCreated", "OrderPlaced"}
    assert old.categories == ("order",)
    plain = Filter(types=["Other"])
    assert types.read_filter(plain) is plain
    assert types.read_filter(None) is None


# -- the payload ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Placed, {"order": 1, "total": 5}),
        (Paid, {"order": 1, "amount": 5}),
        (Shipped, {"order": 1, "carrier": "post"}),
    ],
)
def test_the_payload_is_the_registered_class(cls: type, data: dict[str, Any]) -> None:
    types = Types()
    types.register(cls)
    [event] = types.read([recorded(cls.__name__, data)])
    assert isinstance(event.payload, cls)
    assert event.payload == cls(**data)
    assert event.payload is event.payload  # built once, then kept
    assert event.data == data


def test_the_payload_is_built_lazily_and_once() -> None:
    calls = []

    @dataclasses.dataclass
    class Counted:
        n: int

        def __post_init__(self) -> None:
            calls.append(self.n)

    types = Types()
    types.register(Counted)
    events = types.read([recorded("Counted", {"n": i}) for i in range(3)])
    assert calls == []
    assert events[1].payload.n == 1
    assert events[1].payload.n == 1
    assert calls == [1]


def test_data_that_does_not_fit_the_class_raises_on_payload_access_only() -> None:
    types = Types()
    types.register(Paid)
    [event] = types.read([recorded("Paid", {"order": "one"})])
    assert event.data == {"order": "one"}
    with pytest.raises(EventDecodeError, match="does not fit Paid"):
        _ = event.payload


def test_an_event_without_a_registry_has_its_data_as_payload() -> None:
    event = recorded("Paid", {"order": 1, "amount": 5})
    assert event.payload is event.data


def test_a_typed_event_encodes_and_compares_as_before() -> None:
    types = Types()
    types.register(Paid)
    plain = recorded("Paid", {"order": 1, "amount": 5})
    twin = RecordedEvent(*(getattr(plain, f) for f in plain.__struct_fields__))
    [typed] = types.read([twin])
    _ = typed.payload
    assert typed == plain and hash(plain.id) == hash(typed.id)
    assert msgspec.json.encode(typed) == msgspec.json.encode(plain)
    assert msgspec.to_builtins(typed) == msgspec.to_builtins(plain)
    assert msgspec.structs.astuple(typed) == msgspec.structs.astuple(plain)


# -- connecting with a registry ---------------------------------------------------------


async def test_connect_checks_the_registry_before_opening_a_store(tmp_path: Any) -> None:
    broken = Types()
    broken.register(Placed, version=2)
    with pytest.raises(TypeRegistryError, match="no upcaster from version 1 to 2"):
        await tidings.connect(f"sqlite:///{tmp_path / 'never.db'}", types=broken)
    assert not (tmp_path / "never.db").exists()
    with pytest.raises(tidings.ConfigurationError, match=r"types must be a tidings\.Types"):
        await tidings.connect("memory://", types={"Placed": Placed})


async def test_a_registry_set_on_an_open_store_is_checked_and_kept() -> None:
    async with await tidings.connect("memory://") as store:
        assert store.types is None
        broken = Types()
        broken.upcaster("Placed", 2, 3)(lambda d: d)
        with pytest.raises(TypeRegistryError):
            store.types = broken
        assert store.types is None
        types = Types()
        types.register(Placed)
        store.types = types
        async with store.transaction() as tx:
            tx.append("order-1", [NewEvent(None, Placed(1, 2))])
        assert [e.payload async for e in store.read_stream("order-1")] == [Placed(1, 2)]


def test_the_blocking_facade_takes_a_registry() -> None:
    import tidings.sync

    types = Types()
    types.register(Paid)
    store = tidings.sync.connect("memory://", types=types)
    try:
        store.append("order-1", [NewEvent(None, Paid(1, 5))])
        assert [e.payload for e in store.read_stream("order-1")] == [Paid(1, 5)]
    finally:
        store.close()
