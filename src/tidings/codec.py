"""Validation and JSON encoding of events before they reach a backend. No I/O."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID, SafeUUID

import msgspec

from tidings.errors import InvalidEvent
from tidings.events import NewEvent, expected_code

if TYPE_CHECKING:  # annotations only: the registry sits above the codec
    from tidings.types import Types

MAX_NAME_LENGTH = 255
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


class PreparedEvent(NamedTuple):
    """A validated event with its data and metadata encoded as JSON text."""

    id: UUID
    type: str
    data: str
    metadata: str
    id_given: bool


class PreparedAppend(NamedTuple):
    """A validated append: the stream, the expected-version code and its events."""

    stream: str
    expected: int
    events: list[PreparedEvent]
    ids_given: bool


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()


def decode_json(text: str | bytes) -> Any:
    """Decode JSON text stored by tidings."""
    return _decoder.decode(text)


def encode_json(value: Any, what: str = "data") -> str:
    """Encode ``value`` as JSON text, refusing what JSON cannot hold exactly."""
    try:
        raw = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEvent(f"event {what} is not JSON: {exc}") from exc
    text = raw.decode()  # searching str is ~2x faster than searching bytes here
    # msgspec writes NaN and infinities as null; refuse rather than change the data.
    if "null" in text and _has_non_finite(value):
        raise InvalidEvent(f"event {what} holds NaN or infinity, which JSON cannot represent")
    # PostgreSQL's jsonb cannot hold U+0000; refuse it everywhere, before it is batched.
    if "\\u0000" in text and _has_nul(_decoder.decode(raw)):
        raise InvalidEvent(f"event {what} holds a NUL character (U+0000), which cannot be stored")
    return text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_nul(v) for v in value)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _has_non_finite(dataclasses.asdict(value))
    if isinstance(value, msgspec.Struct):
        return _has_non_finite(msgspec.to_builtins(value))
    dump = getattr(value, "model_dump", None)
    return callable(dump) and _has_non_finite(dump())


_good_names: set[str] = set()
_MAX_REMEMBERED_NAMES = 100_000


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable stream name or event type, else raise InvalidEvent."""
    if type(value) is str and value in _good_names:  # names repeat: skip known-good ones
        return value
    if not isinstance(value, str):
        raise InvalidEvent(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidEvent(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(
            f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not value.isprintable():
        raise InvalidEvent(f"{what} {value!r} holds control characters")
    if len(_good_names) < _MAX_REMEMBERED_NAMES:
        _good_names.add(value)
    return value


_getrandbits = random.getrandbits
_new = object.__new__
_set = object.__setattr__
_VERSION_7_VARIANT = 0x7 << 76 | 0x2 << 62
_RAND_B_ROOM = (1 << 61) - 1  # the low 62 random bits, less one: room to count up


def new_event_id() -> UUID:
    """A fresh UUID version 7: time-ordered, so the id index stays compact.

    Ids need uniqueness, not secrecy: the random bits come from ``random``, which
    Python seeds from the OS at start and again in a forked child.
    """
    return _uuid(id_run_start())


def id_run_start() -> int:
    """The integer of a fresh UUID version 7 that up to 2**61 more can follow by adding
    1 (RFC 9562's monotonic random method 2): an append's made ids are one such run, in
    the order of its events, for the price of one random draw."""
    ms = time.time_ns() // 1_000_000
    rand = _getrandbits(73)
    return (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | (rand >> 61) << 64  # rand_a: 12 bits
        | _VERSION_7_VARIANT
        | (rand & _RAND_B_ROOM)  # rand_b: 61 of its 62 bits, its top one left for the count
    )


def _uuid(value: int) -> UUID:
    uuid = _new(UUID)  # UUID(int=value) without re-checking what was just built
    _set(uuid, "int", value)
    _set(uuid, "is_safe", _UNKNOWN)
    return uuid


_UNKNOWN = SafeUUID.unknown


def _event_id(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidEvent(f"event id must be a UUID, not {value!r}")


def prepare_event(
    event: object, max_event_bytes: int, types: Types | None = None, made_id: int | None = None
) -> PreparedEvent:
    """Validate and encode one new event (named and versioned by ``types``, if given);
    ``made_id`` is the integer of the id to give it if it has none (else a fresh one)."""
    if not isinstance(event, NewEvent):
        raise InvalidEvent(f"expected a NewEvent, not {type(event).__name__}")
    if types is not None:
        event = types.prepare(event)
    if event.type is None or event.type == "":
        raise InvalidEvent(
            "event type is missing: give one, or data of a class registered with the store's types"
        )
    type_ = check_name(event.type, "event type")
    data = encode_json(event.data, "data")
    if event.metadata is None:
        metadata = "{}"
    elif isinstance(event.metadata, dict):
        metadata = encode_json(event.metadata, "metadata")
    else:
        raise InvalidEvent(f"event metadata must be a dict, not {type(event.metadata).__name__}")
    size = len(data) + len(metadata)
    if size > max_event_bytes:
        raise InvalidEvent(
            f"event of type {type_!r} is {size} bytes of JSON; the limit is {max_event_bytes}"
        )
    if event.id is None:
        made = _uuid(id_run_start() if made_id is None else made_id)
        return PreparedEvent(made, type_, data, metadata, False)
    return PreparedEvent(_event_id(event.id), type_, data, metadata, True)


def prepare_append(
    stream: object,
    events: Sequence[NewEvent],
    expected: object,
    max_event_bytes: int,
    types: Types | None = None,
) -> PreparedAppend:
    """Validate a whole append; raises before anything is sent to a backend."""
    name = check_name(stream, "stream name")
    code = expected_code(expected)
    # Lists and tuples skip the (slow) abstract Sequence check.
    if type(events) not in (list, tuple) and (
        isinstance(events, NewEvent) or not isinstance(events, Sequence)
    ):
        raise InvalidEvent("events must be a list of NewEvent")
    if not events:
        raise InvalidEvent(f"append to {name!r} has no events")
    first_id = id_run_start()
    prepared = [
        prepare_event(e, max_event_bytes, types, first_id + i) for i, e in enumerate(events)
    ]
    ids_given = False
    for event in prepared:
        if event.id_given:
            ids_given = True
            break
    if ids_given and len({e.id for e in prepared}) != len(prepared):
        raise InvalidEvent(f"append to {name!r} holds the same event id twice")
    return PreparedAppend(name, code, prepared, ids_given)
