"""The ``eventsourcing`` library's own recorder, factory and application test cases, on
tidings: subclassed once per backend (memory, SQLite, PostgreSQL, and a tidings server
over HTTP), as the library's own persistence modules subclass them.

The classes are generated below: ``TestAggregateRecorderOnSQLite`` and so on. A case
that cannot pass on tidings would be listed in docs/eventsourcing.md; none is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests.application import ExampleApplicationTestCase
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

import tidings.sync
from tests.conftest import POSTGRES_URL, pg_execute, require_postgres, with_option
from tidings.contrib.eventsourcing import (
    Factory,
    TidingsAggregateRecorder,
    TidingsApplicationRecorder,
    TidingsProcessRecorder,
    TidingsTrackingRecorder,
)

MODULE = "tidings.contrib.eventsourcing"
CATEGORY = "eventsourcing"


class OnTidings:
    """A fresh tidings store of ``backend`` for each test: ``self.url``."""

    backend = "memory"
    url = "memory://"

    @pytest.fixture(autouse=True)
    def _tidings_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
        self._opened: list[tidings.sync.SyncStore] = []
        schema = None
        server = None
        if self.backend == "memory":
            self.url = "memory://"
        elif self.backend == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'events.db'}"
        elif self.backend == "postgres":
            require_postgres()
            schema = "t_" + uuid.uuid4().hex[:16]
            self.url = with_option(POSTGRES_URL, "schema", schema)
        else:  # a real `tidings serve` on SQLite
            server = request.getfixturevalue("spare_servers").take("http-sqlite")
            self.url = server.url
        try:
            yield
        finally:
            for store in self._opened:
                store.close()
            if server is not None:
                server.stop()
            if schema is not None:
                asyncio.run(pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def open_store(self) -> tidings.sync.SyncStore:
        store = tidings.sync.connect(self.url)
        self._opened.append(store)
        return store


class AggregateRecorderCase(OnTidings, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return TidingsAggregateRecorder(self.open_store(), CATEGORY)


class ApplicationRecorderCase(OnTidings, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return TidingsApplicationRecorder(self.open_store(), CATEGORY)

    def test_insert_subscribe(self) -> None:
        """The library leaves this case optional; tidings' live reads pass it."""
        self.optional_test_insert_subscribe()


class TrackingRecorderCase(OnTidings, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return TidingsTrackingRecorder(self.open_store(), CATEGORY)


class ProcessRecorderCase(OnTidings, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return TidingsProcessRecorder(self.open_store(), CATEGORY)


class NonInterleavingCase(OnTidings, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return TidingsApplicationRecorder(self.open_store(), CATEGORY)


class FactoryCase(OnTidings, InfrastructureFactoryTestCase[Factory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": MODULE, "TIDINGS_URL": self.url})
        super().setUp()

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return TidingsAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return TidingsApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return TidingsTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return MyTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return TidingsProcessRecorder


class MyTrackingRecorder(TidingsTrackingRecorder):
    """A subclass the factory must build when it is named."""


class ExampleApplicationCase(OnTidings, ExampleApplicationTestCase):
    expected_factory_topic = "tidings.contrib.eventsourcing:Factory"

    @pytest.fixture(autouse=True)
    def _environment(self, _tidings_store: None, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PERSISTENCE_MODULE", MODULE)
        monkeypatch.setenv("TIDINGS_URL", self.url)


CASES: dict[str, type[Any]] = {
    "AggregateRecorder": AggregateRecorderCase,
    "ApplicationRecorder": ApplicationRecorderCase,
    "TrackingRecorder": TrackingRecorderCase,
    "ProcessRecorder": ProcessRecorderCase,
    "NonInterleavingNotificationIDs": NonInterleavingCase,
    "InfrastructureFactory": FactoryCase,
    "ExampleApplication": ExampleApplicationCase,
}
BACKENDS = {"Memory": "memory", "SQLite": "sqlite", "PostgreSQL": "postgres", "Server": "http"}

for _case, _base in CASES.items():
    for _label, _backend in BACKENDS.items():
        _name = f"Test{_case}On{_label}"
        _attrs: dict[str, Any] = {"backend": _backend, "__module__": __name__}
        if _backend == "postgres":
            _attrs["pytestmark"] = [pytest.mark.postgres]
        globals()[_name] = type(_name, (_base,), _attrs)

# pytest collects every unittest.TestCase it finds in a module, whatever its name: the
# library's abstract cases and the bases above go, the generated classes stay.
del _case, _base, _label, _backend, _name, _attrs, CASES
del AggregateRecorderTestCase, ApplicationRecorderTestCase, InfrastructureFactoryTestCase
del NonInterleavingNotificationIDsBaseCase, ProcessRecorderTestCase, TrackingRecorderTestCase
del ExampleApplicationTestCase
del AggregateRecorderCase, ApplicationRecorderCase, TrackingRecorderCase, ProcessRecorderCase
del NonInterleavingCase, FactoryCase, ExampleApplicationCase
