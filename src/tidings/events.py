"""The event model: new and recorded events, expected versions, filters, audit. No I/O."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

import msgspec

from tidings.errors import InvalidExpectedVersion, InvalidInput


class ExpectedVersion(enum.Enum):
    """What a writer expects of a stream besides an exact version."""

    ANY = -1
    """Append whatever the stream's version."""
    NO_STREAM = -2
    """The stream must not exist yet."""
    STREAM_EXISTS = -3
    """The stream must already hold at least one event."""

    def __str__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected: TypeAlias = ExpectedVersion | int
"""An expected version: one of the three markers or the exact last version (0-based)."""


def expected_code(expected: object) -> int:
    """Return the wire code of an expected version (exact versions are >= 0, markers < 0)."""
    if isinstance(expected, ExpectedVersion):
        return expected.value
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return expected
    raise InvalidExpectedVersion(
        f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int >= 0, not {expected!r}"
    )


def expected_from_code(code: int) -> Expected:
    """Turn a wire code back into the expected version it stands for."""
    return ExpectedVersion(code) if code < 0 else code


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: a type, its data, optional metadata and an optional id.

    ``data`` may be any JSON value, a dataclass, a msgspec Struct or a pydantic model;
    it is stored as its JSON encoding (msgspec's rules: tuples and sets become arrays,
    datetimes, UUIDs and enums strings). What has no JSON form, NaN and infinities
    included, is refused with ``InvalidEvent``.
    Giving ``id`` makes the append idempotent: appending the same ids with the same
    content again returns the first result and writes nothing.
    ``type`` may be left empty (or None) when ``data`` is an instance of a class
    registered with the store's ``tidings.Types``: the registered name is used.
    """

    type: str | None = None
    data: Any = None
    metadata: dict[str, Any] | None = None
    id: UUID | None = None


# dict=True: an instance may carry, outside its fields, what a store's type registry
# attaches to build ``payload`` (see tidings.types); fields alone make its encoding,
# equality and hash, and an event read without a registry gets no dict unless its
# payload is asked for.
class RecordedEvent(msgspec.Struct, frozen=True, dict=True):
    """An event as stored: its place in its stream (version) and in the log (position)."""

    id: UUID
    stream: str
    type: str
    data: Any
    metadata: dict[str, Any]
    version: int
    position: int
    time: datetime

    @property
    def category(self) -> str:
        """The part of the stream name before the first ``-`` (``order`` of ``order-42``)."""
        return category_of(self.stream)

    @property
    def payload(self) -> Any:
        """``data`` as an instance of the class registered for ``type`` with the store's
        ``tidings.Types``, built on first access and kept; ``data`` itself (the JSON)
        when the store has no registry or the type has no class."""
        extra = self.__dict__
        try:
            return extra[_PAYLOAD]
        except KeyError:
            pass
        decode = extra.get(_DECODE)
        if decode is None:
            return self.data
        value = extra[_PAYLOAD] = decode(self)
        return value


_PAYLOAD = "_tidings_payload"
_DECODE = "_tidings_decode"  # set by tidings.types on events of a registered class


def category_of(stream: str) -> str:
    """The category of a stream name: everything before the first ``-``."""
    return stream.partition("-")[0]


class AppendResult(msgspec.Struct, frozen=True):
    """Where an append landed: its stream, first and last version, and last position."""

    stream: str
    first_version: int
    last_version: int
    position: int


class StreamInfo(msgspec.Struct, frozen=True):
    """A stream's name and last version."""

    name: str
    version: int


@dataclass(frozen=True)
class Audit:
    """Who made a transaction, with free-form extra fields (an IP, a request id...)."""

    user: str
    extra: dict[str, Any] = field(default_factory=dict)


class AuditRecord(msgspec.Struct, frozen=True):
    """A transaction's stored audit record: user, extra, created and arrival time."""

    id: int
    user: str
    extra: dict[str, Any]
    created: datetime
    arrived: datetime


@dataclass(frozen=True, init=False)
class Filter:
    """Which events of the global log to read: by category, stream prefix, type, and a
    regular expression the whole stream name must match (``stream_pattern``).

    Each given criterion must match; an empty filter matches everything. Categories,
    prefix and types are applied by the database; the pattern in Python.
    """

    categories: tuple[str, ...] | None
    stream_prefix: str | None
    types: tuple[str, ...] | None
    stream_pattern: str | None

    def __init__(
        self,
        categories: Iterable[str] | None = None,
        stream_prefix: str | None = None,
        types: Iterable[str] | None = None,
        stream_pattern: str | None = None,
    ) -> None:
        object.__setattr__(self, "categories", _names(categories, "categories"))
        object.__setattr__(self, "stream_prefix", stream_prefix or None)
        object.__setattr__(self, "types", _names(types, "types"))
        object.__setattr__(self, "stream_pattern", stream_pattern or None)
        object.__setattr__(self, "_regex", _compile(stream_pattern))

    @property
    def is_empty(self) -> bool:
        """True when the filter matches every event."""
        return (
            self.categories is None
            and self.stream_prefix is None
            and self.types is None
            and self.stream_pattern is None
        )

    @property
    def database_part(self) -> Filter | None:
        """The part a database applies (None when it is empty)."""
        if self.categories is None and self.stream_prefix is None and self.types is None:
            return None
        if self.stream_pattern is None:
            return self
        return Filter(self.categories, self.stream_prefix, self.types)

    def matches_stream(self, stream: str) -> bool:
        """Whether ``stream`` matches the pattern (True without one)."""
        regex: re.Pattern[str] | None = self._regex  # type: ignore[attr-defined]
        return regex is None or regex.fullmatch(stream) is not None

    def matches(self, event: RecordedEvent) -> bool:
        """Whether ``event`` passes the filter."""
        if self.categories is not None and category_of(event.stream) not in self.categories:
            return False
        if self.stream_prefix is not None and not event.stream.startswith(self.stream_prefix):
            return False
        if not self.matches_stream(event.stream):
            return False
        return self.types is None or event.type in self.types


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"Filter stream_pattern must be a str, not {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(
            f"Filter stream_pattern {pattern!r} is not a regular expression: {exc}"
        ) from exc


def _names(values: Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    names = tuple(values)
    if not all(isinstance(v, str) and v for v in names):
        raise TypeError(f"Filter {what} must be non-empty strings, not {names!r}")
    return names
