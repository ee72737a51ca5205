"""Event-stream rows as the room returns them, and what the API shows of them. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from tidings.delivery.definitions import Definition

COLUMNS = [
    "id", "name", "type", "status", "definition", "signing", "generation", "checkpoint",
    "batch_number", "inflight_last", "reason", "owner", "lease_until_ms", "dispatch",
    "failing_since_ms", "last_error", "started_ms", "last_dispatch_ms", "delivered",
    "batches", "attempts", "failures", "created_ms", "updated_ms", "inflight_number",
]  # fmt: skip
"""The columns of the ``by_name``, ``by_id`` and ``list`` queries, in order."""


class Row(msgspec.Struct, frozen=True):
    """One stored event stream, every column."""

    id: str
    name: str
    type: str
    status: str
    definition: str
    signing: str | None
    generation: int
    checkpoint: int
    batch_number: int
    inflight_last: int | None
    reason: str | None
    owner: str | None
    lease_until_ms: int
    dispatch: str
    failing_since_ms: int | None
    last_error: str | None
    started_ms: int | None
    last_dispatch_ms: int | None
    delivered: int
    batches: int
    attempts: int
    failures: int
    created_ms: int
    updated_ms: int
    inflight_number: int | None

    @classmethod
    def of(cls, values: tuple[Any, ...]) -> Row:
        """A row from the query's tuple (``COLUMNS`` order)."""
        return cls(*values)


def when(ms: int | None) -> datetime | None:
    """A stored ms time as an aware UTC datetime."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class Stats(msgspec.Struct):
    """How a stream fares (FireFly's statistics, plus lag and counts). ``status`` is the
    dispatcher's: ``idle``, ``dispatching``, ``retrying``, ``blocked``, ``complete``
    (caught up), ``skipped`` (the last batch was parked)."""

    status: str
    start_time: datetime | None
    last_dispatch: datetime | None
    highest_detected: int
    highest_dispatched: int
    checkpoint: int
    lag: int
    delivered: int
    batches: int
    attempts: int
    failures: int
    failing_since: datetime | None
    last_error: str | None
    parked: int
    node: str | None


class StreamInfo(msgspec.Struct):
    """An event stream: its definition as set (without the secret), its status and its
    statistics. ``reason`` says why the runtime stopped it, when it did."""

    id: str
    name: str
    type: str
    status: str
    reason: str | None
    definition: Definition
    created: datetime
    updated: datetime
    stats: Stats


class Created(msgspec.Struct):
    """A stream just created: its info and, once only, the secret that signs its
    webhook deliveries (None for websocket streams)."""

    stream: StreamInfo
    secret: str | None
    created: bool


class Attempt(msgspec.Struct):
    """One delivery attempt of a batch (to a webhook or a consumer)."""

    id: int
    time: datetime
    batch_id: str
    batch_number: int
    first_position: int
    last_position: int
    events: int
    outcome: str
    status_code: int | None
    duration_ms: float
    error: str | None
    response: str | None
    consumer: str | None
    redelivery: bool


def attempt_of(values: tuple[Any, ...]) -> Attempt:
    """An attempt from the ``attempts`` query's tuple."""
    (id_, at, batch_id, number, first, last, events, outcome, code, ms, error, body, who, again) = (
        values
    )
    return Attempt(
        int(id_), when(at) or datetime.now(UTC), batch_id, int(number), int(first), int(last),
        int(events), outcome, code, float(ms), error, body, who, bool(again),
    )  # fmt: skip


class Parked(msgspec.Struct):
    """An event ``skip`` set aside after its batch failed for ``retry_timeout``."""

    position: int
    batch_id: str
    reason: str
    parked: datetime
