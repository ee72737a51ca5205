"""The EventStore contract, written once and run on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from datetime import UTC, timedelta
from typing import Any

import msgspec
import pydantic
import pytest

import tidings
from tidings import ANY, NO_STREAM, STREAM_EXISTS, Audit, Filter, NewEvent
from tidings.store.base import StoreFront

pytestmark = pytest.mark.remote


def ev(type_: str = "Happened", data: object = None, **kw: object) -> NewEvent:
    return NewEvent(type_, {"n": 1} if data is None else data, **kw)  # type: ignore[arg-type]


async def all_events(store: tidings.EventStore, **kw: object) -> list[tidings.RecordedEvent]:
    return [e async for e in store.read_all(**kw)]  # type: ignore[arg-type]


async def stream_events(
    store: tidings.EventStore, stream: str, **kw: object
) -> list[tidings.RecordedEvent]:
    return [e async for e in store.read_stream(stream, **kw)]  # type: ignore[arg-type]


# -- appending ---------------------------------------------------------------------------


async def test_first_append_starts_at_version_zero_and_position_one(
    store: tidings.EventStore,
) -> None:
    result = await store.append("order-1", [ev("A"), ev("B")], expected_version=NO_STREAM)
    assert result == tidings.AppendResult("order-1", 0, 1, 2)
    assert await store.stream_version("order-1") == 1
    assert await store.head() == 2


async def test_empty_store_has_head_zero_and_no_streams(store: tidings.EventStore) -> None:
    assert await store.head() == 0
    assert await store.stream_version("nothing-1") is None
    assert await stream_events(store, "nothing-1") == []
    assert await all_events(store) == []
    assert [s async for s in store.list_streams()] == []


async def test_recorded_events_carry_what_was_appended(store: tidings.EventStore) -> None:
    event_id = uuid.uuid4()
    await store.append(
        "order-1", [NewEvent("Placed", {"total": 10, "é": "ü"}, {"trace": "t1"}, event_id)]
    )
    [event] = await stream_events(store, "order-1")
    assert event.id == event_id
    assert (event.stream, event.type, event.version, event.position) == ("order-1", "Placed", 0, 1)
    assert event.data == {"total": 10, "é": "ü"}
    assert event.metadata == {"trace": "t1"}
    assert event.category == "order"
    assert event.time.tzinfo is not None and event.time.utcoffset() == timedelta(0)
    assert event.time.microsecond % 1000 == 0


async def test_expected_version_exact_markers_and_any(store: tidings.EventStore) -> None:
    await store.append("s-1", [ev()], expected_version=NO_STREAM)
    await store.append("s-1", [ev()], expected_version=0)
    await store.append("s-1", [ev()], expected_version=STREAM_EXISTS)
    await store.append("s-1", [ev()], expected_version=ANY)
    await store.append("s-1", [ev()])
    assert await store.stream_version("s-1") == 4


@pytest.mark.parametrize(
    ("setup", "expected", "actual"),
    [(True, NO_STREAM, 0), (False, STREAM_EXISTS, None), (True, 5, 0), (False, 0, None)],
)
async def test_wrong_expected_version_raises_with_details_and_writes_nothing(
    store: tidings.EventStore, setup: bool, expected: tidings.Expected, actual: int | None
) -> None:
    if setup:
        await store.append("s-1", [ev()])
    head = await store.head()
    with pytest.raises(tidings.WrongExpectedVersion) as info:
        await store.append("s-1", [ev(), ev()], expected_version=expected)
    assert (info.value.stream, info.value.expected, info.value.actual) == ("s-1", expected, actual)
    assert await store.head() == head


async def test_concurrent_appends_fail_alone(store: tidings.EventStore) -> None:
    await store.append("s-1", [ev()])
    results = await asyncio.gather(
        *(store.append(f"other-{i}", [ev()]) for i in range(20)),
        store.append("s-1", [ev()], expected_version=7),
        *(store.append(f"more-{i}", [ev()], expected_version=NO_STREAM) for i in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], tidings.WrongExpectedVersion)
    assert await store.head() == 41


async def test_one_winner_per_version_among_concurrent_writers(store: tidings.EventStore) -> None:
    async def writer(n: int) -> tuple[int, int]:
        wins = conflicts = 0
        for _ in range(15):
            version = await store.stream_version("race-1")
            expected = NO_STREAM if version is None else version
            try:
                await store.append("race-1", [ev(data={"writer": n})], expected_version=expected)
                wins += 1
            except tidings.WrongExpectedVersion:
                conflicts += 1
        return wins, conflicts

    outcomes = await asyncio.gather(*(writer(n) for n in range(8)))
    wins = sum(w for w, _ in outcomes)
    events = await stream_events(store, "race-1")
    assert [e.version for e in events] == list(range(wins))
    assert sum(c for _, c in outcomes) + wins == 8 * 15
    assert wins >= 15  # every round has a winner


async def test_positions_are_contiguous_and_time_never_decreases(store: tidings.EventStore) -> None:
    await asyncio.gather(*(store.append(f"s-{i % 7}", [ev(), ev()]) for i in range(60)))
    events = await all_events(store)
    assert [e.position for e in events] == list(range(1, 121))
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    by_stream: dict[str, list[int]] = {}
    for e in events:
        by_stream.setdefault(e.stream, []).append(e.version)
    assert all(v == list(range(len(v))) for v in by_stream.values())


# -- data kinds --------------------------------------------------------------------------


@dataclasses.dataclass
class Placed:
    order: int
    lines: list[str]


class Shipped(msgspec.Struct):
    order: int
    carrier: str


class Paid(pydantic.BaseModel):
    order: int
    amount: float


async def test_data_accepts_json_dataclasses_structs_and_pydantic(
    store: tidings.EventStore,
) -> None:
    values = [
        Placed(1, ["a"]),
        Shipped(1, "ups"),
        Paid(order=1, amount=9.5),
        [1, "x"],
        "text",
        3,
        None,
        True,
    ]
    await store.append("order-1", [NewEvent("T", v) for v in values])
    stored = [e.data for e in await stream_events(store, "order-1")]
    assert stored == [
        {"order": 1, "lines": ["a"]},
        {"order": 1, "carrier": "ups"},
        {"order": 1, "amount": 9.5},
        [1, "x"],
        "text",
        3,
        None,
        True,
    ]


# -- reading -----------------------------------------------------------------------------


async def test_read_stream_forward_backward_from_version_and_limit(
    store: tidings.EventStore,
) -> None:
    await store.append("s-1", [ev(data={"i": i}) for i in range(10)])
    await store.append("s-2", [ev()])
    versions = lambda events: [e.version for e in events]  # noqa: E731
    assert versions(await stream_events(store, "s-1")) == list(range(10))
    assert versions(await stream_events(store, "s-1", from_version=7)) == [7, 8, 9]
    assert versions(await stream_events(store, "s-1", from_version=2, limit=3)) == [2, 3, 4]
    assert versions(await stream_events(store, "s-1", backwards=True)) == list(range(9, -1, -1))
    assert versions(await stream_events(store, "s-1", from_version=3, backwards=True)) == [
        3,
        2,
        1,
        0,
    ]
    assert versions(await stream_events(store, "s-1", backwards=True, limit=2)) == [9, 8]
    assert await stream_events(store, "s-1", from_version=10) == []
    assert await stream_events(store, "s-1", limit=0) == []


async def test_read_all_is_exclusive_of_the_checkpoint_and_pages_through_large_logs(
    store: tidings.EventStore,
) -> None:
    for chunk in range(5):
        await store.append(f"big-{chunk}", [ev(data={"i": i}) for i in range(500)])
    events = await all_events(store)
    assert [e.position for e in events] == list(range(1, 2501))
    assert [e.position for e in await all_events(store, from_position=2498)] == [2499, 2500]
    assert [e.position for e in await all_events(store, from_position=999, limit=3)] == [
        1000,
        1001,
        1002,
    ]
    assert len(await all_events(store, from_position=10, limit=1500)) == 1500
    assert await all_events(store, from_position=2500) == []


async def test_read_all_filters_by_category_prefix_and_type(store: tidings.EventStore) -> None:
    await store.append("order-1", [ev("Placed"), ev("Paid")])
    await store.append("stock-1", [ev("Reserved")])
    await store.append("order-22", [ev("Placed")])
    await store.append("orderly-1", [ev("Placed")])

    async def streams(f: Filter, **kw: object) -> list[tuple[str, str]]:
        return [(e.stream, e.type) for e in await all_events(store, filter=f, **kw)]

    assert await streams(Filter(categories=["order"])) == [
        ("order-1", "Placed"),
        ("order-1", "Paid"),
        ("order-22", "Placed"),
    ]
    assert await streams(Filter(stream_prefix="order-2")) == [("order-22", "Placed")]
    assert await streams(Filter(types=["Placed"])) == [
        ("order-1", "Placed"),
        ("order-22", "Placed"),
        ("orderly-1", "Placed"),
    ]
    assert await streams(Filter(categories=["order", "stock"], types=["Reserved", "Paid"])) == [
        ("order-1", "Paid"),
        ("stock-1", "Reserved"),
    ]
    assert await streams(Filter(types=["Placed"]), from_position=1, limit=1) == [
        ("order-22", "Placed")
    ]
    assert await streams(Filter()) == await streams(Filter(stream_prefix=""))


async def test_read_all_pages_gives_the_same_log_in_non_empty_pages(
    store: tidings.EventStore,
) -> None:
    for i in range(25):
        await store.append(f"p-{i % 3}", [ev(data={"i": i})])

    async def sizes_and_positions(**kw: Any) -> tuple[list[int], list[int]]:
        pages = [page async for page in store.read_all_pages(**kw)]
        return [len(p) for p in pages], [e.position for p in pages for e in p]

    assert await sizes_and_positions(page_size=10) == ([10, 10, 5], list(range(1, 26)))
    assert await sizes_and_positions(from_position=5, limit=7, page_size=4) == (
        [4, 3],
        list(range(6, 13)),
    )
    # A stream pattern drops rows after the database read them: no empty page is yielded.
    sizes, positions = await sizes_and_positions(
        filter=Filter(stream_pattern=r"p-1"), page_size=2, limit=5
    )
    assert 0 not in sizes
    assert positions == [e.position for e in await all_events(store) if e.stream == "p-1"][:5]
    with pytest.raises(tidings.InvalidInput):
        await sizes_and_positions(page_size=0)


async def test_list_streams_in_name_order_with_prefix_after_and_limit(
    store: tidings.EventStore,
) -> None:
    for name in ["order-2", "order-1", "stock-1", "order-10"]:
        await store.append(name, [ev(), ev()] if name == "order-10" else [ev()])
    infos = [s async for s in store.list_streams()]
    assert [(s.name, s.version) for s in infos] == [
        ("order-1", 0),
        ("order-10", 1),
        ("order-2", 0),
        ("stock-1", 0),
    ]
    assert [s.name async for s in store.list_streams(prefix="order-")] == [
        "order-1",
        "order-10",
        "order-2",
    ]
    assert [s.name async for s in store.list_streams(after="order-10")] == ["order-2", "stock-1"]
    assert [s.name async for s in store.list_streams(prefix="order-", limit=2)] == [
        "order-1",
        "order-10",
    ]


# -- transactions and audit --------------------------------------------------------------


async def test_transaction_is_atomic_across_streams_with_an_audit_record(
    store: tidings.EventStore,
) -> None:
    await store.append("order-42", [ev("Placed")])
    async with store.transaction(audit=Audit(user="alice", extra={"ip": "1.2.3.4"})) as tx:
        tx.append("order-42", [ev("Paid")], expected_version=0)
        tx.append("stock-7", [ev("Reserved"), ev("Reserved")], expected_version=NO_STREAM)
    assert tx.results == [
        tidings.AppendResult("order-42", 1, 1, 2),
        tidings.AppendResult("stock-7", 0, 1, 4),
    ]
    events = await all_events(store)
    first_audit = await store.audit(events[0])
    assert first_audit is None
    audits = [await store.audit(e) for e in events[1:]]
    assert all(a == audits[0] for a in audits)
    audit = audits[0]
    assert audit is not None and audit.user == "alice" and audit.extra == {"ip": "1.2.3.4"}
    assert audit.created <= audit.arrived and audit.arrived.tzinfo is not None
    assert await store.audit(events[1].position) == audit
    assert await store.audit(999) is None


async def test_audited_and_plain_appends_committed_together_keep_their_own_audit(
    store: tidings.EventStore,
) -> None:
    async def audited(n: int) -> None:
        async with store.transaction(audit=Audit(user=f"user-{n}")) as tx:
            tx.append(f"paid-{n}", [ev("Paid"), ev("Paid")])

    # Started in one turn of the loop, they share a group commit where the backend has one.
    await asyncio.gather(
        *(store.append(f"plain-{n}", [ev(), ev()]) for n in range(5)),
        *(audited(n) for n in range(3)),
        *(store.append(f"plain-{n}", [ev()]) for n in range(5, 8)),
    )
    for event in await all_events(store):
        audit = await store.audit(event)
        if event.stream.startswith("plain-"):
            assert audit is None, event
        else:
            assert audit is not None and audit.user == "user-" + event.stream.split("-")[1]


async def test_transaction_with_one_conflict_writes_nothing(store: tidings.EventStore) -> None:
    await store.append("order-42", [ev()])
    with pytest.raises(tidings.WrongExpectedVersion) as info:
        async with store.transaction(audit=Audit("bob")) as tx:
            tx.append("stock-7", [ev()])
            tx.append("order-42", [ev()], expected_version=NO_STREAM)
            tx.append("stock-8", [ev()])
    assert info.value.stream == "order-42"
    assert await store.head() == 1
    assert await store.stream_version("stock-7") is None


async def test_transaction_sees_its_own_earlier_appends(store: tidings.EventStore) -> None:
    async with store.transaction() as tx:
        tx.append("s-1", [ev()], expected_version=NO_STREAM)
        tx.append("s-1", [ev()], expected_version=0)
    assert [r.last_version for r in tx.results] == [0, 1]
    assert await store.audit(1) is None


async def test_transaction_body_raising_writes_nothing(store: tidings.EventStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.append("s-1", [ev()])
            raise RuntimeError("changed my mind")
    assert await store.head() == 0


async def test_transaction_refuses_bad_appends_at_once_and_empty_commits(
    store: tidings.EventStore,
) -> None:
    with pytest.raises(tidings.InvalidEvent):
        async with store.transaction() as tx:
            tx.append("s-1", [ev()])
            tx.append("", [ev()])
    with pytest.raises(tidings.InvalidEvent):
        async with store.transaction():
            pass
    assert await store.head() == 0


# -- idempotency -------------------------------------------------------------------------


async def test_reappending_the_same_ids_and_content_returns_the_first_result(
    store: tidings.EventStore,
) -> None:
    events = [ev("A", id=uuid.uuid4()), ev("B", id=uuid.uuid4())]
    first = await store.append("s-1", events, expected_version=NO_STREAM)
    await store.append("s-2", [ev()])
    again = await store.append("s-1", events, expected_version=NO_STREAM)
    assert again == first
    assert await store.head() == 3
    assert await store.append("s-1", events[:1]) == tidings.AppendResult("s-1", 0, 0, 1)


async def test_same_id_with_other_content_or_place_is_a_duplicate(
    store: tidings.EventStore,
) -> None:
    event_id = uuid.uuid4()
    await store.append("s-1", [NewEvent("A", {"x": 1}, id=event_id)])
    with pytest.raises(tidings.DuplicateEventId) as info:
        await store.append("s-1", [NewEvent("A", {"x": 2}, id=event_id)])
    assert info.value.event_id == event_id
    with pytest.raises(tidings.DuplicateEventId):
        await store.append("s-1", [NewEvent("B", {"x": 1}, id=event_id)])
    with pytest.raises(tidings.DuplicateEventId):
        await store.append("s-2", [NewEvent("A", {"x": 1}, id=event_id)])
    with pytest.raises(tidings.DuplicateEventId):
        await store.append("s-1", [NewEvent("A", {"x": 1}, id=event_id), ev(id=uuid.uuid4())])
    assert await store.head() == 1


async def test_content_is_compared_as_json_not_as_text(store: tidings.EventStore) -> None:
    event_id = uuid.uuid4()
    first = await store.append("s-1", [NewEvent("A", {"a": 1, "b": [1, 2]}, {"m": 1}, event_id)])
    again = await store.append("s-1", [NewEvent("A", {"b": [1, 2], "a": 1}, {"m": 1}, event_id)])
    assert again == first


async def test_concurrent_retries_of_one_append_write_it_once(store: tidings.EventStore) -> None:
    events = [ev(id=uuid.uuid4()) for _ in range(3)]
    results = await asyncio.gather(*(store.append("s-1", events) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert await store.head() == 3


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    ["", "x" * 256, 42, None, "bad\nname"],
    ids=["empty", "long", "int", "none", "control"],
)
async def test_bad_stream_names_are_refused(
    refusing_store: tidings.EventStore, stream: object
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidEvent):
        await store.append(stream, [ev()])  # type: ignore[arg-type]
    assert await store.head() == 0


@pytest.mark.parametrize(
    "event",
    [
        NewEvent("", {}),
        NewEvent("x" * 256, {}),
        NewEvent("T", {(1, 2): "tuple key"}),
        NewEvent("T", object()),
        NewEvent("T", {"x": float("nan")}),
        NewEvent("T", [float("inf")]),
        NewEvent("T", {"text": "nul\x00inside"}),
        NewEvent("T", {"key\x00": 1}),
        NewEvent("T", {}, metadata={"m": "\x00"}),
        NewEvent("T", {}, metadata=["not", "a", "dict"]),  # type: ignore[arg-type]
        NewEvent("T", {}, id="not-a-uuid"),  # type: ignore[arg-type]
        "not an event",
    ],
    ids=[
        "empty-type",
        "long-type",
        "tuple-key",
        "object",
        "nan",
        "inf",
        "nul",
        "nul-key",
        "nul-metadata",
        "metadata",
        "id",
        "str",
    ],
)
async def test_bad_events_are_refused_and_nothing_is_written(
    refusing_store: tidings.EventStore, event: object
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidEvent):
        await store.append("s-1", [ev(), event])  # type: ignore[list-item]
    assert await store.head() == 0


@pytest.mark.parametrize("events", [[], (), ev()], ids=["list", "tuple", "bare-event"])
async def test_empty_or_bare_batches_are_refused(
    refusing_store: tidings.EventStore, events: object
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidEvent):
        await store.append("s-1", events)  # type: ignore[arg-type]
    assert await store.head() == 0


async def test_the_same_id_twice_in_one_append_is_refused(
    refusing_store: tidings.EventStore,
) -> None:
    store = refusing_store
    event_id = uuid.uuid4()
    with pytest.raises(tidings.InvalidEvent):
        await store.append("s-1", [ev(id=event_id), ev(id=event_id)])
    assert await store.head() == 0


@pytest.mark.parametrize("expected", ["1", 1.0, True, -1, -5, None, [0]])
async def test_expected_versions_of_the_wrong_kind_are_refused(
    refusing_store: tidings.EventStore, expected: object
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidExpectedVersion):
        await store.append("s-1", [ev()], expected_version=expected)  # type: ignore[arg-type]
    assert await store.head() == 0


@pytest.mark.parametrize("kw", [{"limit": -1}, {"from_position": -1}, {"limit": "3"}])
async def test_bad_read_arguments_are_refused(
    refusing_store: tidings.EventStore, kw: dict[str, object]
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidInput):
        await all_events(store, **kw)
    assert await store.head() == 0


async def test_events_over_the_size_limit_are_refused(store_url: str) -> None:
    from tests.conftest import with_option

    store = await tidings.connect(with_option(store_url, "max_event_bytes", 1000))
    async with store:
        await store.append("s-1", [ev(data="x" * 900)])
        with pytest.raises(tidings.InvalidEvent, match="limit is 1000"):
            await store.append("s-1", [ev(data="x" * 1000)])
        assert await store.head() == 1


async def test_default_size_limit_is_one_mebibyte(store: tidings.EventStore) -> None:
    await store.append("s-1", [ev(data="x" * 1_000_000)])
    with pytest.raises(tidings.InvalidEvent):
        await store.append("s-1", [ev(data="x" * (1024 * 1024))])


async def test_a_closed_store_refuses_use(store_url: str) -> None:
    store = await tidings.connect(store_url)
    await store.close()
    with pytest.raises(tidings.StoreClosed):
        await store.append("s-1", [ev()])
    with pytest.raises(tidings.StoreClosed):
        await store.head()


# -- durability --------------------------------------------------------------------------


@pytest.mark.durable
async def test_events_survive_reopening_the_store(store_url: str) -> None:
    async with await tidings.connect(store_url) as store:
        await store.append("s-1", [ev(data={"i": i}) for i in range(3)])
        async with store.transaction(audit=Audit("carol", {"k": [1]})) as tx:
            tx.append("s-2", [ev()])
    async with await tidings.connect(store_url) as store:
        events = await all_events(store)
        assert [(e.stream, e.version, e.position) for e in events] == [
            ("s-1", 0, 1),
            ("s-1", 1, 2),
            ("s-1", 2, 3),
            ("s-2", 0, 4),
        ]
        audit = await store.audit(4)
        assert audit is not None and audit.user == "carol" and audit.extra == {"k": [1]}
        result = await store.append("s-1", [ev()], expected_version=2)
        assert result.position == 5
        assert events[-1].time.astimezone(UTC) <= (await all_events(store, from_position=4))[0].time


async def test_text_that_only_looks_like_an_escaped_nul_is_stored(
    store: tidings.EventStore,
) -> None:
    await store.append("s-1", [NewEvent("T", {"path": "C:\\u0000"})])
    [event] = await stream_events(store, "s-1")
    assert event.data == {"path": "C:\\u0000"}


async def test_a_bad_event_never_fails_its_neighbours(store: tidings.EventStore) -> None:
    async def bad() -> None:
        await store.append("bad-1", [NewEvent("T", {"x": "\x00"})])

    outcomes = await asyncio.gather(
        *(store.append(f"good-{i}", [ev()]) for i in range(10)), bad(), return_exceptions=True
    )
    assert isinstance(outcomes[-1], tidings.InvalidEvent)
    assert all(isinstance(o, tidings.AppendResult) for o in outcomes[:-1])


@pytest.mark.parametrize(
    "audit", [Audit("nul\x00user"), Audit("u", {"x": float("nan")}), Audit("u", {"k": "\x00"})]
)
async def test_bad_audit_records_are_refused(
    refusing_store: tidings.EventStore, audit: Audit
) -> None:
    store = refusing_store
    with pytest.raises(tidings.InvalidEvent):
        async with store.transaction(audit=audit) as tx:
            tx.append("s-1", [ev()])
    assert await store.head() == 0


async def test_reads_page_through_small_pages_in_every_direction(store_url: str) -> None:
    from tests.conftest import with_option

    async with await tidings.connect(with_option(store_url, "page_size", 3)) as store:
        await store.append("s-1", [ev(data={"i": i}) for i in range(10)])
        for name in ["a-1", "b-1", "c-1", "d-1", "e-1"]:
            await store.append(name, [ev()])
        forward = [e.version for e in await stream_events(store, "s-1")]
        backward = [e.version for e in await stream_events(store, "s-1", backwards=True)]
        assert forward == list(range(10)) and backward == list(range(9, -1, -1))
        assert [
            e.version
            for e in await stream_events(store, "s-1", from_version=8, backwards=True, limit=7)
        ] == [8, 7, 6, 5, 4, 3, 2]
        assert [e.position for e in await all_events(store, from_position=2, limit=7)] == list(
            range(3, 10)
        )
        assert [e.position for e in await all_events(store)] == list(range(1, 16))
        names = [s.name async for s in store.list_streams()]
        assert names == ["a-1", "b-1", "c-1", "d-1", "e-1", "s-1"]
        assert [s.name async for s in store.list_streams(after="b-1", limit=4)] == [
            "c-1",
            "d-1",
            "e-1",
            "s-1",
        ]


async def test_closing_finishes_appends_already_made(store_url: str) -> None:
    store = await tidings.connect(store_url)
    appends = [asyncio.ensure_future(store.append(f"s-{i}", [ev()])) for i in range(50)]
    await asyncio.sleep(0)  # the appends have started, and wait for the writer
    await store.close()
    results = await asyncio.wait_for(asyncio.gather(*appends), 10)
    assert sorted(r.position for r in results) == list(range(1, 51))


async def test_raw_pages_carry_the_stored_json_undecoded(store: tidings.EventStore) -> None:
    data = {"name": "Zoë", "items": [1, 2.5, None], "nested": {"ok": True}}
    await store.append("order-1", [tidings.NewEvent("Placed", data, {"by": "alice"})])
    assert isinstance(store, StoreFront)
    [page] = [p async for p in store.read_all_pages(raw=True)]
    [event] = page
    for value, expected in ((event.data, data), (event.metadata, {"by": "alice"})):
        decoded = msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value
        assert decoded == expected
    assert msgspec.json.decode(msgspec.json.encode(event))["data"] == data
