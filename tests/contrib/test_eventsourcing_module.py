"""tidings.contrib.eventsourcing beyond the library's own test cases: how its model maps
onto tidings' (bytes kept exact, versions that skip, a second writer), a system of a
leader and a process application, and the events as a tidings reader sees them."""

from __future__ import annotations

import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from functools import singledispatchmethod
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System
from eventsourcing.utils import Environment

import tidings
import tidings.sync
from tidings.contrib.eventsourcing import (
    TidingsAggregateRecorder,
    TidingsApplicationRecorder,
    store_url,
)

pytestmark = pytest.mark.durable  # a second store object on the same database


@pytest.fixture
def store(store_url: str) -> Iterator[tidings.sync.SyncStore]:
    with tidings.sync.connect(store_url) as opened:
        yield opened


def stored(originator: UUID, version: int, state: bytes, topic: str = "t") -> StoredEvent:
    return StoredEvent(originator, version, topic, state)


def test_state_bytes_come_back_exact_and_json_state_is_readable_json(
    store: tidings.sync.SyncStore,
) -> None:
    recorder = TidingsApplicationRecorder(store, "app")
    one, two = uuid.uuid4(), uuid.uuid4()
    states = [
        b'{"amount":10,"note":"caf\\u00e9"}',  # JSON whose re-encoding differs: kept as bytes
        b'{"amount":10,"note":"plain"}',
        zlib.compress(b"compressed, so not JSON"),
        b"",
        "caf\u00e9".encode(),
    ]
    recorder.insert_events([stored(one, i + 1, s) for i, s in enumerate(states)])
    recorder.insert_events([stored(two, 1, b"[1,2.5,null]")])
    assert [e.state for e in recorder.select_events(one)] == states
    assert [n.state for n in recorder.select_notifications(None, 10)] == [*states, b"[1,2.5,null]"]
    seen = list(store.read_stream(f"app-{one}"))
    assert seen[1].data == {"amount": 10, "note": "plain"}
    assert seen[1].metadata == {"originator_version": 2}
    assert seen[2].metadata["state"] == "base64"
    assert next(iter(store.read_stream(f"app-{two}"))).data == [1, 2.5, None]


def test_versions_that_skip_are_selected_as_the_library_asks(
    store: tidings.sync.SyncStore,
) -> None:
    """Snapshots are recorded at versions with gaps between them."""
    recorder = TidingsAggregateRecorder(store, "app_snapshots")
    one = uuid.uuid4()
    recorder.insert_events([stored(one, v, str(v).encode()) for v in (1, 4, 5, 9)])

    def versions(**kw: Any) -> list[int]:
        return [e.originator_version for e in recorder.select_events(one, **kw)]

    assert versions() == [1, 4, 5, 9]
    assert versions(gt=1) == [4, 5, 9]
    assert versions(gt=2) == [4, 5, 9]
    assert versions(gt=5) == [9]
    assert versions(gt=9) == []
    assert versions(lte=4) == [1, 4]
    assert versions(gt=1, lte=8) == [4, 5]
    assert versions(desc=True, limit=1) == [9]
    assert versions(desc=True, lte=8, limit=1) == [5]
    assert versions(desc=True, lte=3) == [1]
    assert versions(desc=True, gt=4) == [9, 5]
    assert versions(desc=True, lte=0) == []
    assert versions(limit=2) == [1, 4]
    assert recorder.select_events(uuid.uuid4(), gt=3) == []


def test_a_second_writer_learns_where_a_stream_stands(store_url: str) -> None:
    with tidings.sync.connect(store_url) as a, tidings.sync.connect(store_url) as b:
        first, second = TidingsAggregateRecorder(a, "app"), TidingsAggregateRecorder(b, "app")
        one = uuid.uuid4()
        first.insert_events([stored(one, 1, b"1"), stored(one, 2, b"2")])
        second.insert_events([stored(one, 3, b"3")])  # it never saw the stream
        first.insert_events([stored(one, 4, b"4")])  # its own idea of the stream is stale
        with pytest.raises(IntegrityError):
            second.insert_events([stored(one, 4, b"again")])
        with pytest.raises(IntegrityError):  # lower versions after higher: refused
            second.insert_events([stored(one, 2, b"late")])
        assert [e.state for e in first.select_events(one)] == [b"1", b"2", b"3", b"4"]


def test_an_insert_naming_an_originator_twice_lands_in_the_order_given(
    store: tidings.sync.SyncStore,
) -> None:
    recorder = TidingsApplicationRecorder(store, "app")
    one, two = uuid.uuid4(), uuid.uuid4()
    ids = recorder.insert_events([stored(one, 1, b"1"), stored(two, 1, b"2"), stored(one, 2, b"3")])
    assert ids == [1, 2, 3]
    assert [(n.originator_id, n.state) for n in recorder.select_notifications(1, 5)] == [
        (one, b"1"),
        (two, b"2"),
        (one, b"3"),
    ]
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(one, 3, b"x"), stored(one, 3, b"y")])


def test_the_library_settings_name_the_store() -> None:
    assert store_url(Environment("A", {"TIDINGS_URL": "sqlite:///x.db"})) == "sqlite:///x.db"
    assert store_url(Environment("A", {"A_TIDINGS_URL": "memory://"})) == "memory://"
    assert store_url(Environment("A", {"SQLITE_DBNAME": ":memory:"})) == "memory://"
    assert store_url(Environment("A", {"SQLITE_DBNAME": "file:/tmp/a.db?mode=rw"})) == (
        "sqlite:////tmp/a.db"
    )
    pg = {
        "POSTGRES_DBNAME": "app",
        "POSTGRES_HOST": "db",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": "p@ss",
        "POSTGRES_SCHEMA": "s1",
    }
    assert store_url(Environment("A", pg)) == "postgresql://u:p%40ss@db:5432/app?schema=s1"
    assert store_url(Environment("A", {})) == "memory://"


# -- a system: a leader and a process application ------------------------------------------


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


class Accounts(Application[UUID]):
    def open(self, owner: str) -> UUID:
        account = Account(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: int) -> None:
        account: Account = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)


class Total(Aggregate):
    @event("Started")
    def __init__(self) -> None:
        self.amount = 0
        self.deposits = 0

    @staticmethod
    def create_id() -> UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, "total")

    @event("Added")
    def add(self, amount: int) -> None:
        self.amount += amount
        self.deposits += 1


class Totals(ProcessApplication[UUID]):
    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        """Other events do not count."""

    @policy.register
    def _(self, domain_event: Account.Deposited, processing_event: ProcessingEvent[UUID]) -> None:
        try:
            total: Total = self.repository.get(Total.create_id())
        except Exception:  # the first deposit starts the total
            total = Total()
        total.add(domain_event.amount)  # type: ignore[attr-defined]
        processing_event.collect_events(total)

    def total(self) -> Total:
        return self.repository.get(Total.create_id())


def run_system(url: str) -> SingleThreadedRunner[UUID]:
    runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(
        System(pipes=[[Accounts, Totals]]),
        env={"PERSISTENCE_MODULE": "tidings.contrib.eventsourcing", "TIDINGS_URL": url},
    )
    runner.start()
    return runner


def test_a_process_application_counts_each_event_once_across_restarts(store_url: str) -> None:
    runner = run_system(store_url)
    accounts = runner.get(Accounts)
    alice = accounts.open("alice")
    for amount in (10, 20, 30):
        accounts.deposit(alice, amount)
    total = runner.get(Totals).total()
    assert (total.amount, total.deposits) == (60, 3)
    runner.stop()

    runner = run_system(store_url)  # starts from its tracking checkpoint: nothing twice
    accounts = runner.get(Accounts)
    accounts.deposit(alice, 5)
    total = runner.get(Totals).total()
    assert (total.amount, total.deposits) == (65, 4)
    last = accounts.recorder.max_notification_id()
    assert runner.get(Totals).recorder.max_tracking_id("Accounts") == last
    runner.stop()

    with tidings.sync.connect(store_url) as store:
        streams = sorted(s.name.partition("-")[0] for s in store.list_streams())
        assert streams == ["Accounts", "Totals"]
        history = list(store.read_stream(f"Accounts-{alice}"))
        assert [e.type.rpartition(".")[2] for e in history] == [
            "Opened",
            "Deposited",
            "Deposited",
            "Deposited",
            "Deposited",
        ]
        assert [e.metadata["originator_version"] for e in history] == [1, 2, 3, 4, 5]
        assert store.checkpoint("Totals-Accounts") == last


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "left-open"])
def test_a_module_level_application_lets_the_interpreter_exit(closed: bool) -> None:
    """The library's Application.__del__ closes again at interpreter shutdown, when the
    sync loop no longer runs: that must not wait for it."""
    script = (
        "from eventsourcing.application import Application\n"
        "app = Application(env={'PERSISTENCE_MODULE': 'tidings.contrib.eventsourcing',"
        " 'TIDINGS_URL': 'memory://'})\n" + ("app.close()\n" if closed else "") + "print('done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
