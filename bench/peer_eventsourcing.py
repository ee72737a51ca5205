"""The peer: the workloads run with the ``eventsourcing`` library (PyPI) through its public API.

The library is synchronous, so concurrent writers are threads sharing one
``Application`` (as its docs recommend). Every event carries the same payload as on
the tidings side (:func:`workloads.event_data`), JSON-encoded by the application's
transcoder. Two public write/read paths are available (``--es-api``):

``recorder`` (default, the library's fastest public path)
    Writes build ``StoredEvent`` objects (originator id, version, topic, transcoded
    state) and call ``app.recorder.insert_events`` once per append, which is what
    ``Application.save`` ends up doing, minus the aggregate and mapper layers. Reads
    page through ``app.recorder.select_notifications`` and decode each notification's
    state with the transcoder: an envelope with decoded data, like tidings'
    ``RecordedEvent``.
``application``
    The idiomatic path: an ``Aggregate`` whose command methods trigger events, saved
    with ``app.save(order)``; reads page through ``app.notification_log.select`` and map
    every notification back to a domain event with ``app.mapper.to_domain_event``, as a
    projection or a downstream process application does.

Either way the ``(originator_id, originator_version)`` primary key rejects concurrent
writes at the same version: the same optimistic-concurrency check tidings makes.

Settings (all through the library's environment variables):

* SQLite: ``SQLITE_DBNAME`` = a file. The library switches the file to WAL itself and
  leaves ``synchronous`` at SQLite's default, FULL; both are checked before timing. Its
  connection pool lets one writer at a time in, by design.
* PostgreSQL: ``POSTGRES_*`` connection settings and ``POSTGRES_POOL_SIZE`` = the number
  of writer threads (no overflow), all connections opened before timing. Inserts take
  the library's default path, which locks the table (``IN EXCLUSIVE MODE``) so that
  the notification log has no gaps for readers, as tidings' global log has none;
  ``POSTGRES_ENABLE_DB_FUNCTIONS``, which skips that lock, is left off.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from workloads import EVENT_TYPE, Measurement, Spec, event_data

READ_PAGE = 1000  # notifications per select
TOPIC = f"bench:{EVENT_TYPE}"  # topic of the recorder path's stored events


class Order(Aggregate):
    """The application path's aggregate: every event carries one line item."""

    @event("Started")
    def __init__(self, sku: str, quantity: int, unit_price: int, note: str) -> None:
        self.lines = 1

    @event(EVENT_TYPE)
    def add_line(self, sku: str, quantity: int, unit_price: int, note: str) -> None:
        self.lines += 1


class BenchApp(Application[uuid.UUID]):
    """The application under test; a larger log section lets reads page 1000 at a time."""

    log_section_size = READ_PAGE


def order_line(n: int) -> dict[str, Any]:
    """The arguments of an ``Order``'s n-th line: the first line item of ``event_data(n)``."""
    data = event_data(n)
    first = data["lines"][0]
    return {
        "sku": first["sku"],
        "quantity": first["quantity"],
        "unit_price": first["unit_price"],
        "note": data["note"],
    }


# A writer makes the appends of one stream: called with the number of events per
# append, it makes the next append of that many events.
Writer = Callable[[int], None]


def run(spec: Spec, pg: dict[str, str], runs: int) -> list[Measurement]:
    """Run ``spec`` (``runs`` timed reads of one pre-load for read_all, else one append run)."""
    if spec.backend == "postgres":
        import eventsourcing.postgres  # noqa: F401  (fail plainly if psycopg_pool is missing)

    new_writer, read_all = API[spec.es_api]
    with open_app(spec, pg) as app:
        if spec.workload == "read_all":
            preload(app, spec, new_writer)
            return [read_all(app, spec.events) for _ in range(runs)]
        return [append(app, spec, new_writer)]


def environment(spec: Spec, pg: dict[str, str]) -> dict[str, str]:
    """The library's environment variables for one measurement."""
    if spec.backend == "sqlite":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": spec.target,
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": spec.target,
        "POSTGRES_HOST": pg["host"],
        "POSTGRES_PORT": pg["port"],
        "POSTGRES_USER": pg["user"],
        "POSTGRES_PASSWORD": pg["password"],
        "POSTGRES_POOL_SIZE": str(spec.writers),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "30",
    }


@contextmanager
def open_app(spec: Spec, pg: dict[str, str]) -> Iterator[BenchApp]:
    """A ready application on the spec's fresh database: tables made, pool filled."""
    app = BenchApp(env=environment(spec, pg))
    try:
        datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
        if spec.backend == "sqlite":
            check_sqlite_durability(datastore)
        else:
            # Open every pool connection now rather than inside the timed section.
            datastore.pool.wait(timeout=60)
        yield app
    finally:
        app.close()


def check_sqlite_durability(datastore: Any) -> None:
    """Fail unless the library's SQLite connections use WAL and synchronous=FULL."""
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    if journal_mode.lower() != "wal" or synchronous != 2:
        raise RuntimeError(
            f"eventsourcing SQLite: journal_mode={journal_mode}, synchronous={synchronous}; "
            "want wal and 2 (FULL)"
        )


# --- writing --------------------------------------------------------------------------------


def recorder_writer(app: BenchApp) -> Writer:
    """Appends to a new stream with ``app.recorder.insert_events``."""
    originator_id = uuid.uuid4()
    encode = app.mapper.transcoder.encode
    version = 0

    def write(batch: int) -> None:
        nonlocal version
        stored = [
            StoredEvent(originator_id, version + i, TOPIC, encode(event_data(version + i - 1)))
            for i in range(1, batch + 1)
        ]
        app.recorder.insert_events(stored)
        version += batch

    return write


def application_writer(app: BenchApp) -> Writer:
    """Appends to a new ``Order`` aggregate with ``app.save``."""
    order: Order | None = None
    n = 0

    def write(batch: int) -> None:
        nonlocal order, n
        for _ in range(batch):
            if order is None:
                order = Order(**order_line(n))
            else:
                order.add_line(**order_line(n))
            n += 1
        app.save(order)

    return write


def append(app: BenchApp, spec: Spec, new_writer: Callable[[BenchApp], Writer]) -> Measurement:
    """``spec.writers`` threads, each appending ``spec.batch`` events at a time to its stream."""
    start = threading.Barrier(spec.writers + 1)
    written = [0] * spec.writers
    errors: list[BaseException] = []

    def thread_main(w: int) -> None:
        try:
            write = new_writer(app)
            start.wait()
            for _ in range(spec.appends(w)):
                if time.perf_counter() > deadline:
                    break
                write(spec.batch)
                written[w] += spec.batch
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            start.abort()

    threads = [
        threading.Thread(target=thread_main, args=(w,), daemon=True) for w in range(spec.writers)
    ]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + spec.max_seconds  # read by the writers once the barrier lets them go
    with suppress(threading.BrokenBarrierError):  # a writer failed: raised after the join
        start.wait()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]

    events = sum(written)
    in_log = app.recorder.max_notification_id() or 0
    if in_log != events:
        raise RuntimeError(f"wrote {events} events but the log holds {in_log}")
    how = "recorder.insert_events" if spec.es_api == "recorder" else "Application.save"
    return Measurement(events, seconds, f"{how}, {spec.batch} event(s) per call, threads")


def preload(app: BenchApp, spec: Spec, new_writer: Callable[[BenchApp], Writer]) -> None:
    """Fill the log (untimed): streams of ``spec.batch`` events, one append each."""
    for _ in range(spec.events // spec.batch):
        new_writer(app)(spec.batch)


# --- reading --------------------------------------------------------------------------------


def read_all_recorder(app: BenchApp, expected: int) -> Measurement:
    """Page through ``recorder.select_notifications``, decoding each notification's state."""
    select = app.recorder.select_notifications
    decode = app.mapper.transcoder.decode
    return _read_all(
        lambda start: select(start=start, limit=READ_PAGE),
        lambda notification: decode(notification.state),
        expected,
        f"recorder.select_notifications pages of {READ_PAGE} + transcoder.decode(state)",
    )


def read_all_application(app: BenchApp, expected: int) -> Measurement:
    """Page through the notification log, mapping each notification to a domain event."""
    select = app.notification_log.select
    return _read_all(
        lambda start: select(start=start, limit=READ_PAGE),
        app.mapper.to_domain_event,
        expected,
        f"notification_log.select pages of {READ_PAGE} + mapper.to_domain_event",
    )


def _read_all(
    select: Callable[[int], Any], decode: Callable[[Any], Any], expected: int, what: str
) -> Measurement:
    count = 0
    last_id = 0
    began = time.perf_counter()
    while page := select(last_id + 1):
        for notification in page:
            decode(notification)
        count += len(page)
        last_id = page[-1].id
    seconds = time.perf_counter() - began

    if count != expected:
        raise RuntimeError(f"expected to read {expected} events, read {count}")
    return Measurement(count, seconds, what)


# The writer factory and the reader of each ``--es-api``.
API: dict[str, tuple[Callable[[BenchApp], Writer], Callable[[BenchApp, int], Measurement]]] = {
    "recorder": (recorder_writer, read_all_recorder),
    "application": (application_writer, read_all_application),
}
