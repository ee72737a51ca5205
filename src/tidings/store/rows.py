"""Turning stored rows into RecordedEvents quickly: the hot path of every read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, SafeUUID

from msgspec import Raw

from tidings.codec import decode_json
from tidings.events import RecordedEvent

_new = object.__new__
_set = object.__setattr__
_from_bytes = int.from_bytes
_unknown = SafeUUID.unknown


def uuid_from_bytes(raw: bytes) -> UUID:
    """``UUID(bytes=raw)`` without its argument checks (the bytes come from our own column)."""
    value = _new(UUID)
    _set(value, "int", _from_bytes(raw, "big"))
    _set(value, "is_safe", _unknown)
    return value


def time_from_ms(ms: int) -> datetime:
    """An exact UTC datetime from milliseconds since the epoch."""
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def decode_metadata(text: str) -> dict[str, Any]:
    """Metadata JSON to a dict; the common empty object skips the decoder."""
    if text == "{}":
        return {}
    value: dict[str, Any] = decode_json(text)
    return value


class TimeCache:
    """Reuses one datetime for consecutive rows of the same millisecond (a commit batch
    shares one time), sparing a datetime per row."""

    __slots__ = ("_dt", "_ms")

    def __init__(self) -> None:
        self._ms = -1
        self._dt = time_from_ms(0)

    def __call__(self, ms: int) -> datetime:
        """The datetime of ``ms``."""
        if ms != self._ms:
            self._ms = ms
            self._dt = time_from_ms(ms)
        return self._dt


def sqlite_events(rows: list[tuple[Any, ...]], raw: bool = False) -> list[RecordedEvent]:
    """RecordedEvents from SQLite rows: position, id, stream, version, type, data, metadata, ms
    (with ``raw``, data and metadata as ``msgspec.Raw``)."""
    at = TimeCache()
    decode: Any = Raw if raw else decode_json
    decode_meta: Any = Raw if raw else decode_metadata
    return [
        RecordedEvent(
            uuid_from_bytes(id_),
            stream,
            type_,
            decode(data),
            decode_meta(meta),
            version,
            position,
            at(ms),
        )
        for position, id_, stream, version, type_, data, meta, ms in rows
    ]


def postgres_events(rows: list[Any], raw: bool = False) -> list[RecordedEvent]:
    """RecordedEvents from asyncpg records (ids and times are already decoded by the driver;
    with ``raw``, data and metadata as ``msgspec.Raw``)."""
    decode: Any = Raw if raw else decode_json
    decode_meta: Any = Raw if raw else decode_metadata
    return [
        RecordedEvent(id_, stream, type_, decode(data), decode_meta(meta), version, position, time)
        for position, id_, stream, version, type_, data, meta, time in rows
    ]
