"""tidings as a persistence module of the ``eventsourcing`` library.

Set ``PERSISTENCE_MODULE=tidings.contrib.eventsourcing`` in an application's environment
and its events go to a tidings store::

    from eventsourcing.application import Application

    app = MyApplication(env={
        "PERSISTENCE_MODULE": "tidings.contrib.eventsourcing",
        "TIDINGS_URL": "postgresql://postgres@127.0.0.1/app",
    })

The store's URL is ``TIDINGS_URL`` (any tidings URL: ``memory://``, ``sqlite:///...``,
``postgresql://...``, or a tidings server's ``https://...`` with ``TIDINGS_TOKEN``); without
it, the library's own settings are read (``SQLITE_DBNAME``, or ``POSTGRES_DBNAME`` with
``POSTGRES_HOST``, ``POSTGRES_PORT``, ``POSTGRES_USER``, ``POSTGRES_PASSWORD``,
``POSTGRES_SCHEMA``), and then an in-memory store. Like every library setting, each may
be prefixed with the application's name (``BANKACCOUNTS_TIDINGS_URL``).

An application's streams are ``<category>-<originator id>``, its snapshots'
``<category>_snapshots-<originator id>``; the category is ``TIDINGS_CATEGORY``, else the
application's name. ``ORIGINATOR_ID_TYPE`` is ``uuid`` (the default) or ``text``.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote, urlencode

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

import tidings.sync
from tidings.contrib.eventsourcing.mapping import IdType
from tidings.contrib.eventsourcing.recorders import (
    TidingsAggregateRecorder,
    TidingsApplicationRecorder,
    TidingsProcessRecorder,
    TidingsSubscription,
    TidingsTrackingRecorder,
)

__all__ = [
    "Factory",
    "TidingsAggregateRecorder",
    "TidingsApplicationRecorder",
    "TidingsProcessRecorder",
    "TidingsSubscription",
    "TidingsTrackingRecorder",
    "store_url",
]


def store_url(env: Environment) -> str:
    """The tidings URL an application's environment names (see the module's docstring)."""
    url = env.get("TIDINGS_URL")
    if url:
        return url
    sqlite = env.get("SQLITE_DBNAME")
    if sqlite:
        if sqlite == ":memory:" or "mode=memory" in sqlite:
            return "memory://"
        path = sqlite.removeprefix("file:").partition("?")[0]
        return f"sqlite:///{path}"
    dbname = env.get("POSTGRES_DBNAME")
    if dbname:
        user = quote(env.get("POSTGRES_USER") or "postgres", safe="")
        password = env.get("POSTGRES_PASSWORD")
        auth = user if not password else f"{user}:{quote(password, safe='')}"
        host = env.get("POSTGRES_HOST") or "127.0.0.1"
        port = env.get("POSTGRES_PORT") or "5432"
        schema = env.get("POSTGRES_SCHEMA")
        query = f"?{urlencode({'schema': schema})}" if schema else ""
        return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}{query}"
    return "memory://"


class Factory(InfrastructureFactory[TidingsTrackingRecorder]):
    """Builds the library's recorders on one tidings store, opened from the environment
    and closed by ``close()`` (the application's ``close()`` calls it)."""

    TIDINGS_URL = "TIDINGS_URL"
    TIDINGS_TOKEN = "TIDINGS_TOKEN"
    TIDINGS_CATEGORY = "TIDINGS_CATEGORY"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.url = store_url(self.env)
        options: dict[str, Any] = {}
        token = self.env.get(self.TIDINGS_TOKEN)
        if token:
            options["token"] = token
        id_type = self.env.get(self.ORIGINATOR_ID_TYPE, "uuid").lower()
        if id_type not in ("uuid", "text"):
            raise ValueError(
                f"Invalid {self.ORIGINATOR_ID_TYPE} {id_type!r}: it is 'uuid' or 'text'"
            )
        self.originator_id_type = cast(IdType, id_type)
        self.category = self.env.get(self.TIDINGS_CATEGORY) or self.env.name or "eventsourcing"
        self.store = tidings.sync.connect(self.url, **options)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The recorder of ``purpose`` (``events``, or ``snapshots``: its own category)."""
        category = self.category if purpose == "events" else f"{self.category}_{purpose}"
        return TidingsAggregateRecorder(self.store, category, self.originator_id_type)

    def application_recorder(self) -> ApplicationRecorder:
        """The application's events, with notification ids (the global positions)."""
        cls: type[TidingsApplicationRecorder] = TidingsApplicationRecorder
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        if topic:
            cls = resolve_topic(topic)
        return cls(self.store, self.category, self.originator_id_type)

    def tracking_recorder(
        self, tracking_recorder_class: type[TidingsTrackingRecorder] | None = None
    ) -> TidingsTrackingRecorder:
        """Tracking records as named checkpoints of the store."""
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else TidingsTrackingRecorder
        if not (isinstance(cls, type) and issubclass(cls, TidingsTrackingRecorder)):
            raise TypeError(f"{cls!r} is not a TidingsTrackingRecorder")
        return cls(self.store, self.category, self.originator_id_type)

    def process_recorder(self) -> ProcessRecorder:
        """An application recorder that moves a tracking checkpoint with its events."""
        cls: type[TidingsProcessRecorder] = TidingsProcessRecorder
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        if topic:
            cls = resolve_topic(topic)
        return cls(self.store, self.category, self.originator_id_type)

    def close(self) -> None:
        """Close the store (finishing queued appends)."""
        self.store.close()
        super().close()
