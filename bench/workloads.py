"""What the benchmark measures: workloads, their sizes and goals, and the shared event payload.

Both sides of the comparison (``subject_tidings`` and ``peer_eventsourcing``) take a
:class:`Spec` and return a :class:`Measurement`, so they run exactly the same work:

``append_1``
    ``writers`` concurrent writers (asyncio tasks for tidings, threads for the
    synchronous eventsourcing library), each appending one event at a time to its own
    stream with an optimistic-concurrency check on the stream's version.
``append_100``
    The same with 100-event batches (one append / one ``save`` per batch).
``read_all``
    One reader decoding the whole global log, which was pre-loaded (untimed) with
    ``events`` events in large batches. The pre-load is done once per library and
    backend; the timed reads are then repeated on it.

Event counts are fixed per workload and backend; ``--quick`` divides them by ten. An
append run also stops at a time cap (``--max-seconds``): writers make no new append
after it, and the rate is then the events actually written over the time taken.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

BACKENDS = ("sqlite", "postgres")
LIBRARIES = ("tidings", "eventsourcing")
WORKLOADS = ("append_1", "append_100", "read_all")

ES_APIS = ("recorder", "application")  # the eventsourcing paths (see peer_eventsourcing)

QUICK_DIVISOR = 10
DEFAULT_MAX_SECONDS = 10.0

PRELOAD_BATCH = 1000  # events per append (one stream each) when pre-loading read_all


@dataclass(frozen=True)
class Shape:
    """A workload's shape on one backend: total events, concurrency, batch size, goal.

    For ``read_all``, ``batch`` is the pre-load's events per append.
    """

    events: int
    writers: int
    batch: int
    goal: float  # events/s that tidings should reach


SHAPES: dict[tuple[str, str], Shape] = {
    ("postgres", "append_1"): Shape(events=20_000, writers=64, batch=1, goal=20_000),
    ("postgres", "append_100"): Shape(events=200_000, writers=8, batch=100, goal=60_000),
    ("postgres", "read_all"): Shape(events=200_000, writers=1, batch=PRELOAD_BATCH, goal=150_000),
    ("sqlite", "append_1"): Shape(events=30_000, writers=64, batch=1, goal=30_000),
    ("sqlite", "append_100"): Shape(events=200_000, writers=8, batch=100, goal=100_000),
    ("sqlite", "read_all"): Shape(events=200_000, writers=1, batch=PRELOAD_BATCH, goal=150_000),
}


@dataclass(frozen=True)
class Spec:
    """One measurement to make: a library, a backend, a workload and its sizes.

    ``target`` is the SQLite file path or the PostgreSQL database name, created
    (fresh and empty) by the runner and removed after the measurement. ``es_api`` is
    the eventsourcing path to use, ignored by tidings.
    """

    library: str
    backend: str
    workload: str
    events: int
    writers: int
    batch: int
    target: str
    max_seconds: float = DEFAULT_MAX_SECONDS
    es_api: str = ES_APIS[0]

    def appends(self, writer: int) -> int:
        """How many appends (of ``batch`` events each) writer number ``writer`` makes."""
        base, extra = divmod(self.events // self.batch, self.writers)
        return base + (writer < extra)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_spec(
    library: str,
    backend: str,
    workload: str,
    target: str,
    *,
    quick: bool = False,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    es_api: str = ES_APIS[0],
) -> Spec:
    """The spec of a workload on a backend, its counts divided by ten when ``quick``."""
    shape = SHAPES[backend, workload]
    events = shape.events // QUICK_DIVISOR if quick else shape.events
    return Spec(
        library,
        backend,
        workload,
        events,
        shape.writers,
        shape.batch,
        target,
        max_seconds,
        es_api,
    )


@dataclass(frozen=True)
class Measurement:
    """The result of one timed run: events written or read, and the wall-clock seconds."""

    events: int
    seconds: float
    note: str = ""  # what exactly was measured, shown in the report

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def event_data(n: int) -> dict[str, Any]:
    """The payload of the ``n``-th event of a stream, the same for both libraries.

    About 210 bytes of JSON, the size used for the raw database figures.
    """
    return {
        "order_id": n,
        "customer": f"customer-{n % 100_000:06d}",
        "currency": "EUR",
        "lines": [
            {"sku": f"SKU-{(n + i) % 1000:04d}", "quantity": (n + i) % 7 + 1, "unit_price": 1999}
            for i in range(2)
        ],
        "note": "benchmark line item",
    }


EVENT_TYPE = "LineAdded"
