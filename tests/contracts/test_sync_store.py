"""The EventStore contract through the blocking facade (tidings.sync), on every backend.

These are plain ``def`` tests: the facade runs its own event loop in a thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import tidings
import tidings.sync
from tests.conftest import with_option
from tidings import ANY, NO_STREAM, STREAM_EXISTS, Audit, Filter, NewEvent


def ev(type_: str = "Happened", data: object = None, **kw: Any) -> NewEvent:
    return NewEvent(type_, {"n": 1} if data is None else data, **kw)


@pytest.fixture
def sync_store(store_url: str) -> Iterator[tidings.sync.SyncStore]:
    store = tidings.sync.connect(store_url)
    try:
        yield store
    finally:
        store.close()


# -- appending ---------------------------------------------------------------------------


def test_append_with_expected_versions(sync_store: tidings.sync.SyncStore) -> None:
    first = sync_store.append("order-1", [ev("A"), ev("B")], expected_version=NO_STREAM)
    assert first == tidings.AppendResult("order-1", 0, 1, 2)
    sync_store.append("order-1", [ev()], expected_version=1)
    sync_store.append("order-1", [ev()], expected_version=STREAM_EXISTS)
    sync_store.append("order-1", [ev()], expected_version=ANY)
    assert sync_store.append("order-1", [ev()]) == tidings.AppendResult("order-1", 5, 5, 6)
    assert sync_store.stream_version("order-1") == 5
    assert sync_store.stream_version("nothing-1") is None
    assert sync_store.head() == 6
    assert sync_store.url == sync_store.store.url


@pytest.mark.parametrize(
    ("setup", "expected", "actual"),
    [(True, NO_STREAM, 0), (False, STREAM_EXISTS, None), (True, 5, 0), (False, 0, None)],
)
def test_wrong_expected_version_raises_with_details_and_writes_nothing(
    sync_store: tidings.sync.SyncStore,
    setup: bool,
    expected: tidings.Expected,
    actual: int | None,
) -> None:
    if setup:
        sync_store.append("s-1", [ev()])
    head = sync_store.head()
    with pytest.raises(tidings.WrongExpectedVersion) as info:
        sync_store.append("s-1", [ev(), ev()], expected_version=expected)
    assert (info.value.stream, info.value.expected, info.value.actual) == ("s-1", expected, actual)
    assert sync_store.head() == head


def test_bad_input_raises_the_same_errors(sync_store: tidings.sync.SyncStore) -> None:
    with pytest.raises(tidings.InvalidEvent):
        sync_store.append("", [ev()])
    with pytest.raises(tidings.InvalidExpectedVersion):
        sync_store.append("s-1", [ev()], expected_version=-7)
    with pytest.raises(tidings.InvalidInput):
        sync_store.wait_for(-1)
    with pytest.raises(tidings.InvalidInput):
        next(sync_store.read_all(limit=-1))
    assert sync_store.head() == 0


def test_idempotent_append_by_id(sync_store: tidings.sync.SyncStore) -> None:
    events = [ev("A", id=uuid.uuid4()), ev("B", id=uuid.uuid4())]
    first = sync_store.append("s-1", events, expected_version=NO_STREAM)
    sync_store.append("s-2", [ev()])
    assert sync_store.append("s-1", events, expected_version=NO_STREAM) == first
    assert sync_store.head() == 3
    with pytest.raises(tidings.DuplicateEventId) as info:
        sync_store.append("s-1", [NewEvent("A", {"other": True}, id=events[0].id)])
    assert info.value.event_id == events[0].id
    assert sync_store.head() == 3


# -- transactions and audit --------------------------------------------------------------


def test_transaction_commits_all_with_one_audit_record(
    sync_store: tidings.sync.SyncStore,
) -> None:
    sync_store.append("order-42", [ev("Placed")])
    with sync_store.transaction(audit=Audit(user="alice", extra={"ip": "1.2.3.4"})) as tx:
        tx.append("order-42", [ev("Paid")], expected_version=0)
        tx.append("stock-7", [ev("Reserved"), ev("Reserved")], expected_version=NO_STREAM)
        assert tx.results == []
    assert tx.results == [
        tidings.AppendResult("order-42", 1, 1, 2),
        tidings.AppendResult("stock-7", 0, 1, 4),
    ]
    events = list(sync_store.read_all())
    assert sync_store.audit(events[0]) is None
    audits = [sync_store.audit(e) for e in events[1:]]
    audit = audits[0]
    assert all(a == audit for a in audits)
    assert audit is not None and audit.user == "alice" and audit.extra == {"ip": "1.2.3.4"}
    assert audit.created <= audit.arrived
    assert sync_store.audit(events[1].position) == audit
    assert sync_store.audit(999) is None


def test_transaction_with_one_conflict_writes_nothing(sync_store: tidings.sync.SyncStore) -> None:
    sync_store.append("order-42", [ev()])
    with (
        pytest.raises(tidings.WrongExpectedVersion) as info,
        sync_store.transaction(audit=Audit("bob")) as tx,
    ):
        tx.append("stock-7", [ev()])
        tx.append("order-42", [ev()], expected_version=NO_STREAM)
    assert (info.value.stream, info.value.actual) == ("order-42", 0)
    assert sync_store.head() == 1
    assert sync_store.stream_version("stock-7") is None


def test_transaction_discarded_on_exception(sync_store: tidings.sync.SyncStore) -> None:
    with pytest.raises(RuntimeError, match="changed my mind"), sync_store.transaction() as tx:
        tx.append("s-1", [ev()])
        raise RuntimeError("changed my mind")
    assert sync_store.head() == 0
    with pytest.raises(tidings.InvalidEvent), sync_store.transaction() as tx:
        tx.append("s-1", [ev()])
        tx.append("", [ev()])  # refused at once
    with pytest.raises(tidings.InvalidEvent), sync_store.transaction():
        pass  # nothing to commit
    with pytest.raises(tidings.InvalidEvent):
        sync_store.transaction(audit=Audit("nul\x00user"))
    assert sync_store.head() == 0


def test_transaction_commit_without_a_with_block(sync_store: tidings.sync.SyncStore) -> None:
    tx = sync_store.transaction()
    tx.append("s-1", [ev()], expected_version=NO_STREAM)
    tx.append("s-1", [ev()], expected_version=0)
    assert [r.last_version for r in tx.commit()] == [0, 1]
    assert tx.results[-1].position == 2


# -- reading -----------------------------------------------------------------------------


def test_read_stream_forward_backward_and_limit(sync_store: tidings.sync.SyncStore) -> None:
    sync_store.append("s-1", [ev(data={"i": i}) for i in range(10)])
    sync_store.append("s-2", [ev()])

    def versions(**kw: Any) -> list[int]:
        return [e.version for e in sync_store.read_stream("s-1", **kw)]

    assert versions() == list(range(10))
    assert [e.data["i"] for e in sync_store.read_stream("s-1")] == list(range(10))
    assert versions(from_version=7) == [7, 8, 9]
    assert versions(from_version=2, limit=3) == [2, 3, 4]
    assert versions(backwards=True) == list(range(9, -1, -1))
    assert versions(from_version=3, backwards=True) == [3, 2, 1, 0]
    assert versions(backwards=True, limit=2) == [9, 8]
    assert versions(from_version=10) == []
    assert versions(limit=0) == []
    assert list(sync_store.read_stream("nothing-1")) == []


def test_reads_longer_than_a_round_trip_and_a_page(store_url: str) -> None:
    with tidings.sync.connect(with_option(store_url, "page_size", 7)) as store:
        store.append("big-1", [ev(data={"i": i}) for i in range(600)])
        for i in range(300):
            store.append(f"s-{i:03d}", [ev()])
        assert [e.version for e in store.read_stream("big-1")] == list(range(600))
        assert [e.version for e in store.read_stream("big-1", backwards=True, limit=333)] == list(
            range(599, 266, -1)
        )
        assert [e.position for e in store.read_all()] == list(range(1, 901))
        assert [e.position for e in store.read_all(from_position=50, limit=400)] == list(
            range(51, 451)
        )
        names = [s.name for s in store.list_streams()]
        assert names == ["big-1"] + [f"s-{i:03d}" for i in range(300)]


def test_read_all_with_filters_and_limit(sync_store: tidings.sync.SyncStore) -> None:
    sync_store.append("order-1", [ev("Placed"), ev("Paid")])
    sync_store.append("stock-1", [ev("Reserved")])
    sync_store.append("order-22", [ev("Placed")])
    sync_store.append("orderly-1", [ev("Placed")])

    def streams(f: Filter | None = None, **kw: Any) -> list[tuple[str, str]]:
        return [(e.stream, e.type) for e in sync_store.read_all(filter=f, **kw)]

    assert [e.position for e in sync_store.read_all()] == [1, 2, 3, 4, 5]
    assert [e.position for e in sync_store.read_all(from_position=3)] == [4, 5]
    assert [e.position for e in sync_store.read_all(from_position=1, limit=2)] == [2, 3]
    assert streams(Filter(categories=["order"])) == [
        ("order-1", "Placed"),
        ("order-1", "Paid"),
        ("order-22", "Placed"),
    ]
    assert streams(Filter(stream_prefix="order-2")) == [("order-22", "Placed")]
    assert streams(Filter(types=["Placed"]), from_position=1, limit=1) == [("order-22", "Placed")]
    assert streams(Filter(stream_pattern=r"order-\d")) == [
        ("order-1", "Placed"),
        ("order-1", "Paid"),
    ]


def test_read_all_pages(sync_store: tidings.sync.SyncStore) -> None:
    for i in range(25):
        sync_store.append(f"p-{i % 3}", [ev(data={"i": i})])

    def sizes_and_positions(**kw: Any) -> tuple[list[int], list[int]]:
        pages = list(sync_store.read_all_pages(**kw))
        return [len(p) for p in pages], [e.position for p in pages for e in p]

    assert sizes_and_positions(page_size=10) == ([10, 10, 5], list(range(1, 26)))
    assert sizes_and_positions(from_position=5, limit=7, page_size=4) == (
        [4, 3],
        list(range(6, 13)),
    )
    sizes, positions = sizes_and_positions(filter=Filter(stream_pattern="p-1"), page_size=2)
    assert 0 not in sizes
    assert positions == [e.position for e in sync_store.read_all() if e.stream == "p-1"]
    with pytest.raises(tidings.InvalidInput):
        sizes_and_positions(page_size=0)


def test_list_streams_with_prefix_after_and_limit(sync_store: tidings.sync.SyncStore) -> None:
    for name in ["order-2", "order-1", "stock-1", "order-10"]:
        sync_store.append(name, [ev(), ev()] if name == "order-10" else [ev()])
    assert [(s.name, s.version) for s in sync_store.list_streams()] == [
        ("order-1", 0),
        ("order-10", 1),
        ("order-2", 0),
        ("stock-1", 0),
    ]
    assert [s.name for s in sync_store.list_streams(prefix="order-")] == [
        "order-1",
        "order-10",
        "order-2",
    ]
    assert [s.name for s in sync_store.list_streams(after="order-10")] == ["order-2", "stock-1"]
    assert [s.name for s in sync_store.list_streams(prefix="order-", limit=2)] == [
        "order-1",
        "order-10",
    ]


# -- live reads --------------------------------------------------------------------------


def test_wait_for_returns_the_head_or_times_out(sync_store: tidings.sync.SyncStore) -> None:
    with pytest.raises(TimeoutError):
        sync_store.wait_for(1, timeout=0.1)
    sync_store.append("s-1", [ev(), ev()])
    assert sync_store.wait_for(2, timeout=0.5) == 2
    assert sync_store.wait_for(0) == 2


def test_wait_for_wakes_on_an_append_from_another_thread(
    sync_store: tidings.sync.SyncStore,
) -> None:
    writer = threading.Timer(0.1, lambda: sync_store.append("s-1", [ev(), ev(), ev()]))
    started = time.monotonic()
    writer.start()
    try:
        assert sync_store.wait_for(3, timeout=10) >= 3
    finally:
        writer.join()
    assert time.monotonic() - started < 5


def test_follow_sees_appends_made_from_another_thread(sync_store: tidings.sync.SyncStore) -> None:
    sync_store.append("order-1", [ev(data={"n": 0})])
    seen: list[int] = []
    reader_done = threading.Event()

    def reader() -> None:
        with sync_store.read_all(follow=True) as events:
            for event in events:
                seen.append(event.data["n"])
                if len(seen) == 4:
                    break
        reader_done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(1, 4):
        time.sleep(0.02)
        sync_store.append(f"order-{n}", [ev(data={"n": n})])
    assert reader_done.wait(10)
    thread.join()
    assert seen == [0, 1, 2, 3]


def test_follow_with_a_filter_and_a_limit_ends_after_it(
    sync_store: tidings.sync.SyncStore,
) -> None:
    sync_store.append("stock-1", [ev()])
    sync_store.append("order-1", [ev()])
    writer = threading.Timer(
        0.05, lambda: [sync_store.append(f"{c}-2", [ev()]) for c in ("stock", "order")]
    )
    writer.start()
    try:
        events = list(
            sync_store.read_all(filter=Filter(categories=["order"]), limit=2, follow=True)
        )
    finally:
        writer.join()
    assert [e.stream for e in events] == ["order-1", "order-2"]


def test_closing_an_iterator_early(sync_store: tidings.sync.SyncStore) -> None:
    sync_store.append("s-1", [ev(data={"i": i}) for i in range(5)])
    events = sync_store.read_stream("s-1")
    assert next(events).version == 0
    events.close()
    assert list(events) == []
    events.close()  # again: nothing happens

    follow = sync_store.read_all(follow=True)
    assert next(follow).position == 1
    follow.close()
    with pytest.raises(StopIteration):
        next(follow)

    with sync_store.read_all_pages(follow=True, page_size=2) as pages:
        assert [e.position for e in next(pages)] == [1, 2]
    assert list(pages) == []

    unused = sync_store.list_streams()
    unused.close()
    assert list(unused) == []
    assert sync_store.head() == 5  # the store is still fine


def test_closing_a_follow_from_another_thread_ends_its_wait(
    sync_store: tidings.sync.SyncStore,
) -> None:
    sync_store.append("s-1", [ev()])
    follow = sync_store.read_all(from_position=1, follow=True)
    closer = threading.Timer(0.1, follow.close)
    closer.start()
    try:
        assert list(follow) == []  # waited for a new event until the close
    finally:
        closer.join()
    sync_store.append("s-1", [ev()])
    assert [e.position for e in sync_store.read_all()] == [1, 2]


# -- closing -----------------------------------------------------------------------------


def test_a_closed_store_refuses_use(store_url: str) -> None:
    store = tidings.sync.connect(store_url)
    store.append("s-1", [ev()])
    store.close()
    store.close()  # again: nothing happens
    with pytest.raises(tidings.StoreClosed):
        store.append("s-1", [ev()])
    with pytest.raises(tidings.StoreClosed):
        store.head()
    with pytest.raises(tidings.StoreClosed):
        next(store.read_all())
    with pytest.raises(tidings.StoreClosed):
        store.transaction()


def test_closing_from_the_loop_thread_closes_without_waiting_for_itself(store_url: str) -> None:
    """A finalizer the garbage collector runs on the loop's thread may close a store."""
    store = tidings.sync.connect(store_url)
    store.append("s-1", [ev()])

    async def close_there() -> None:
        store.close()  # on the loop thread: it must not block on that very loop

    store.call(close_there)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            store.head()
        except tidings.StoreClosed:
            return
        time.sleep(0.01)
    pytest.fail("the store did not close")


@pytest.mark.durable
def test_events_survive_reopening_the_store(store_url: str) -> None:
    with tidings.sync.connect(store_url) as store:
        store.append("s-1", [ev(), ev()])
        with store.transaction(audit=Audit("carol", {"k": [1]})) as tx:
            tx.append("s-2", [ev()])
    with tidings.sync.connect(store_url) as store:
        assert [(e.stream, e.position) for e in store.read_all()] == [
            ("s-1", 1),
            ("s-1", 2),
            ("s-2", 3),
        ]
        audit = store.audit(3)
        assert audit is not None and audit.user == "carol"
