"""The HTTP wire format, shared by the server and the remote store. No I/O.

Request and response bodies are msgspec Structs: the server decodes and encodes with
them, the remote store does the same on its side, and the OpenAPI document is built
from them, so the three never disagree. ``ERRORS`` is the one table that maps each
tidings error to its HTTP status and code, read both ways.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from tidings.errors import (
    AccessDenied,
    AlreadyExists,
    CheckpointConflict,
    ConfigurationError,
    DuplicateEventId,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidInput,
    NotFound,
    StoreChanged,
    StoreClosed,
    StoreUnavailable,
    TidingsError,
    WrongExpectedVersion,
)
from tidings.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    AuditRecord,
    Expected,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamInfo,
)

WireExpected = int | str | None
"""An expected version on the wire: an int >= 0, ``"any"``, ``"no_stream"``,
``"stream_exists"``, or absent (any)."""

_MARKERS = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}

MAX_POSITION = 2**63 - 1
"""The largest position or version any backend can hold (a signed 64-bit integer)."""


class EventIn(NewEvent, frozen=True, forbid_unknown_fields=True):
    """An event to append, as a request body carries it: a ``NewEvent`` whose unknown
    fields are refused (a misspelt ``dta`` would otherwise store an event without data)."""

    type: str  # required over HTTP: the server has no type registry to name events by


class AppendBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /streams/{stream}/events``: events to append and the expected version."""

    events: list[EventIn]
    expected_version: WireExpected = None


class StreamAppend(msgspec.Struct, forbid_unknown_fields=True):
    """One stream's part of a transaction."""

    stream: str
    events: list[EventIn]
    expected_version: WireExpected = None


class AuditBody(msgspec.Struct, forbid_unknown_fields=True):
    """Who makes a transaction, with free-form extra fields."""

    user: str
    extra: dict[str, Any] = {}


class CheckpointMove(msgspec.Struct, forbid_unknown_fields=True):
    """A named checkpoint a transaction moves up to ``position`` (compare-and-set)."""

    name: str
    position: int


class TransactionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /transactions``: appends to several streams, all or nothing, with an audit
    and the named checkpoint they move (then ``appends`` may be empty)."""

    appends: list[StreamAppend]
    audit: AuditBody | None = None
    checkpoint: CheckpointMove | None = None


class CheckpointInfo(msgspec.Struct):
    """``GET /checkpoints/{name}``: where a named checkpoint stands (null: never moved)."""

    name: str
    position: int | None


class TransactionResult(msgspec.Struct):
    """Where each append of a transaction landed, in the order given."""

    results: list[AppendResult]


class StreamPage(msgspec.Struct):
    """A page of one stream; ``next`` is the ``from_version`` of the next page, or null."""

    stream: str
    events: list[RecordedEvent]
    next: int | None


class LogPage(msgspec.Struct):
    """A page of the global log; ``next`` is the ``from_position`` of the next page, or
    null at the end. ``head`` is the last committed position when the page was read."""

    events: list[RecordedEvent]
    next: int | None
    head: int


class StreamsPage(msgspec.Struct):
    """A page of the stream listing; ``next`` is the ``after`` of the next page, or null."""

    streams: list[StreamInfo]
    next: str | None


class Head(msgspec.Struct, omit_defaults=True):
    """The last committed position (0 when the store is empty), and the store's identity."""

    head: int
    identity: str | None = None


class StreamVersion(msgspec.Struct):
    """A stream's last version (null when the stream does not exist)."""

    stream: str
    version: int | None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error response: a code, a message, and details that depend on the code."""

    error: str
    message: str
    stream: str | None = None
    expected: int | str | None = None
    actual: int | None = None
    event_id: UUID | None = None
    reason: str | None = None
    field: str | None = None
    limit: int | None = None
    name: str | None = None
    position: int | None = None
    current: int | str | None = None
    identity: str | None = None


class VersionConflictBody(msgspec.Struct):
    """The 409 ``wrong_expected_version`` body: ``actual`` is null when the stream does not
    exist (always present, unlike the optional details of other errors)."""

    error: str
    message: str
    stream: str
    expected: int | str
    actual: int | None


AuditOut = AuditRecord
"""``GET /events/{position}/audit``: the audit record of the event's transaction."""


def expected_from_wire(value: WireExpected) -> Expected:
    """The expected version a wire value stands for; ``InvalidExpectedVersion`` if none."""
    if value is None:
        return ANY
    if isinstance(value, bool):
        raise InvalidExpectedVersion(f"expected_version must not be a boolean, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidExpectedVersion(
                f"expected_version must be an int >= 0 or any, no_stream, stream_exists, "
                f"not {value}"
            )
        return value
    marker = _MARKERS.get(value.lower())
    if marker is None:
        raise InvalidExpectedVersion(
            f"expected_version must be an int >= 0 or any, no_stream, stream_exists, not {value!r}"
        )
    return marker


def expected_to_wire(expected: Expected) -> int | str:
    """The wire form of an expected version."""
    if isinstance(expected, ExpectedVersion):
        return expected.name.lower()
    return expected


class ErrorKind(msgspec.Struct, frozen=True):
    """How one tidings error travels: its HTTP status and its code."""

    status: int
    code: str


# Most specific first: the first class an error is an instance of decides.
ERRORS: list[tuple[type[BaseException], ErrorKind]] = [
    (WrongExpectedVersion, ErrorKind(409, "wrong_expected_version")),
    (DuplicateEventId, ErrorKind(409, "duplicate_event_id")),
    (CheckpointConflict, ErrorKind(409, "checkpoint_conflict")),
    (StoreChanged, ErrorKind(409, "store_changed")),
    (AlreadyExists, ErrorKind(409, "already_exists")),
    (NotFound, ErrorKind(404, "not_found")),
    (InvalidExpectedVersion, ErrorKind(400, "invalid_expected_version")),
    (InvalidEvent, ErrorKind(400, "invalid_event")),
    (InvalidInput, ErrorKind(400, "invalid_input")),
    (ConfigurationError, ErrorKind(400, "invalid_input")),
    (StoreUnavailable, ErrorKind(503, "store_unavailable")),
    (StoreClosed, ErrorKind(503, "store_unavailable")),
]


def error_kind(exc: BaseException) -> ErrorKind | None:
    """The status and code of a tidings error (None for anything else)."""
    for cls, kind in ERRORS:
        if isinstance(exc, cls):
            return kind
    return None


def error_body(exc: TidingsError, code: str) -> ErrorBody | VersionConflictBody:
    """The response body for a tidings error, with the details its code carries."""
    if isinstance(exc, WrongExpectedVersion):
        return VersionConflictBody(
            code, str(exc), exc.stream, expected_to_wire(exc.expected), exc.actual
        )
    if isinstance(exc, DuplicateEventId):
        return ErrorBody(
            code, str(exc), stream=exc.stream, event_id=exc.event_id, reason=exc.reason
        )
    if isinstance(exc, CheckpointConflict):
        return ErrorBody(code, str(exc), name=exc.name, position=exc.position, current=exc.current)
    if isinstance(exc, StoreChanged):
        return ErrorBody(code, str(exc), identity=exc.expected, current=exc.current)
    if isinstance(exc, StoreUnavailable | StoreClosed):
        return ErrorBody(code, "the event store is unavailable; retry later")
    return ErrorBody(code, str(exc))


def error_from_body(status: int, body: ErrorBody, url: str) -> TidingsError:
    """The tidings error a response body stands for, as the local backends raise it."""
    code = body.error
    if code == "wrong_expected_version" and body.stream is not None:
        expected: Any = body.expected
        if isinstance(expected, str):
            expected = _MARKERS.get(expected, expected)
        return WrongExpectedVersion(body.stream, expected, body.actual)
    if code == "duplicate_event_id" and body.event_id is not None and body.stream is not None:
        return DuplicateEventId(body.event_id, body.stream, body.reason or "different content")
    if code == "checkpoint_conflict" and body.name is not None and body.position is not None:
        current = body.current if isinstance(body.current, int) else None
        return CheckpointConflict(body.name, body.position, current)
    if code == "store_changed" and body.identity is not None and isinstance(body.current, str):
        return StoreChanged(body.identity, body.current)
    if code == "already_exists":
        return AlreadyExists(body.message.removesuffix(" exists already"))
    if code == "invalid_expected_version":
        return InvalidExpectedVersion(body.message)
    if code in ("invalid_event", "payload_too_large"):
        return InvalidEvent(body.message)
    if code == "store_unavailable" or status >= 500:
        return StoreUnavailable(url, body.message)
    if status == 404:
        return NotFound(body.message)
    if status in (401, 403):
        return AccessDenied(status, code, body.message)
    return InvalidInput(body.message)


class PublishBody(msgspec.Struct, forbid_unknown_fields=True):
    """A channel notification: pghub's key (ints) and value (any JSON)."""

    key: list[int] = msgspec.field(default_factory=list)
    value: Any = None


class Published(msgspec.Struct):
    """The notification was handed to the notifier (delivery is at most once)."""

    channel: str


encoder = msgspec.json.Encoder()
"""The one JSON encoder of the wire (events, pages, errors)."""
