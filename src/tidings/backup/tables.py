"""What a backup copies: each table's columns and how values map between the dialects.

A backup file holds rows in the SQLite backend's form (blob ids, JSON text, times as
``*_ms`` integers); PostgreSQL has uuid, json/jsonb, timestamptz and booleans. Each table
is written down once here, as data: its name in each dialect and, per column, its kind,
which says how a PostgreSQL value becomes the file's and back. The statements that read
and write the rows are the ``select_<name>`` and ``insert_<name>`` queries of each
dialect's ``backup.sql`` (PostgreSQL writes with COPY into ``pg_columns``).

Left out on purpose (ADR 25): ``migrations`` (the file has its own), ``head`` (the
backup's position and time are recorded apart), ``store`` (a restore makes a new
identity), ``members`` and ``pull_handed`` (who holds a group's partitions: leases),
and the lease columns of ``partitions`` and ``eventstreams`` (cleared by the selects).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
Row = tuple[Any, ...]
Convert = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _uuid_to_file(value: UUID | None) -> bytes | None:
    return None if value is None else value.bytes


def _uuid_from_file(value: bytes | None) -> UUID | None:
    return None if value is None else UUID(bytes=value)


def _time_to_file(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MS


def _time_from_file(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MS


def _bool_to_file(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _bool_from_file(value: int | None) -> bool | None:
    return None if value is None else bool(value)


@dataclass(frozen=True)
class Kind:
    """How a column's PostgreSQL value becomes the backup file's, and back."""

    to_file: Convert
    from_file: Convert


SAME = Kind(_same, _same)  # integers, text, reals, JSON read as text
UUID_BLOB = Kind(_uuid_to_file, _uuid_from_file)
TIME_MS = Kind(_time_to_file, _time_from_file)
BOOL_INT = Kind(_bool_to_file, _bool_from_file)


@dataclass(frozen=True)
class Column:
    """A column: its name in the file (SQLite), its kind, and its PostgreSQL name."""

    name: str
    kind: Kind = SAME
    pg: str | None = None

    @property
    def pg_name(self) -> str:
        """The column's name in PostgreSQL."""
        return self.pg or self.name


@dataclass(frozen=True)
class Table:
    """A table a backup copies."""

    name: str
    """The short name: the query suffix, the key of the recorded counts, PostgreSQL's."""
    columns: tuple[Column, ...]
    rebuildable: bool = False
    """A cache of the log (snapshots, view rows): copied, but could be rebuilt."""

    @property
    def file_table(self) -> str:
        """The table's name in a SQLite file."""
        return "tidings_" + self.name

    @property
    def pg_columns(self) -> list[str]:
        """The PostgreSQL column names, in row order."""
        return [c.pg_name for c in self.columns]

    def needs_converting(self) -> bool:
        """Whether any column changes between the dialects."""
        return any(c.kind is not SAME for c in self.columns)

    def to_file(self, rows: list[Any]) -> list[Row]:
        """PostgreSQL rows (records) in the file's form."""
        if not self.needs_converting():
            return [tuple(r) for r in rows]
        kinds = [c.kind.to_file for c in self.columns]
        return [tuple(f(v) for f, v in zip(kinds, r, strict=True)) for r in rows]

    def from_file(self, rows: list[Row]) -> list[Row]:
        """File rows in PostgreSQL's form."""
        if not self.needs_converting():
            return rows
        kinds = [c.kind.from_file for c in self.columns]
        return [tuple(f(v) for f, v in zip(kinds, r, strict=True)) for r in rows]


def _cols(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n) for n in names)


TABLES: tuple[Table, ...] = (
    Table("streams", _cols("name", "version")),
    Table(
        "audit",
        (
            *_cols("id", "user", "extra"),
            Column("created_ms", TIME_MS, "created"),
            Column("arrived_ms", TIME_MS, "arrived"),
        ),
    ),
    Table(
        "events",
        (
            Column("position"),
            Column("id", UUID_BLOB),
            *_cols("stream", "version", "type", "data", "metadata"),
            Column("time_ms", TIME_MS, "time"),
            *_cols("category", "audit_id"),
        ),
    ),
    Table(
        "subscriptions",
        (
            *_cols("name", "position", "state", "last_error"),
            Column("updated_ms", TIME_MS, "updated"),
        ),
    ),
    Table(
        "parked",
        (
            *_cols("subscription", "position"),
            Column("event_id", UUID_BLOB),
            *_cols("stream", "error", "attempts"),
            Column("parked_at_ms", TIME_MS, "parked_at"),
        ),
    ),
    Table(
        "partitions",
        (
            *_cols("subscription", "partition", "position", "owner"),
            Column("lease_until_ms", TIME_MS, "lease_until"),
        ),
    ),
    Table("checkpoints", _cols("name", "position", "updated_ms")),
    Table(
        "snapshots",
        (
            *_cols("stream", "name", "projection_version", "version", "state"),
            Column("created_ms", TIME_MS, "created"),
        ),
        rebuildable=True,
    ),
    Table("views", _cols("view", "key", "value", "position"), rebuildable=True),
    Table(
        "pull",
        (
            *_cols("name", "definition", "handed"),
            Column("grouped", BOOL_INT),
            Column("created_ms", TIME_MS, "created"),
        ),
    ),
    Table(
        "eventstreams",
        _cols(
            "id",
            "name",
            "type",
            "status",
            "definition",
            "signing",
            "generation",
            "checkpoint",
            "batch_number",
            "inflight_last",
            "reason",
            "owner",
            "lease_until_ms",
            "dispatch",
            "failing_since_ms",
            "last_error",
            "started_ms",
            "last_dispatch_ms",
            "delivered",
            "batches",
            "attempts",
            "failures",
            "created_ms",
            "updated_ms",
            "inflight_number",
        ),
    ),
    Table(
        "eventstream_attempts",
        (
            *_cols(
                "id",
                "stream_id",
                "at_ms",
                "batch_id",
                "batch_number",
                "first_position",
                "last_position",
                "events",
                "outcome",
                "status_code",
                "duration_ms",
                "error",
                "response",
                "consumer",
            ),
            Column("redelivery", BOOL_INT),
        ),
    ),
    Table("eventstream_parked", _cols("stream_id", "position", "batch_id", "reason", "parked_ms")),
    Table(
        "eventstream_redeliveries",
        (
            *_cols("id", "stream_id", "from_position", "to_position"),
            Column("parked", BOOL_INT),
            Column("created_ms"),
        ),
    ),
)

_encode = msgspec.msgpack.Encoder().encode
_MASK = (1 << 128) - 1


class Digest:
    """A table's rows, bytes and checksum: the sum of a hash of each row in the file's
    form (its MessagePack encoding, whose length counts as its bytes).

    A sum, so that it does not depend on the order the rows are read in (PostgreSQL and
    SQLite order text differently); any changed byte of a row changes it.
    """

    __slots__ = ("bytes", "rows", "sum")

    def __init__(self, rows: int = 0, bytes: int = 0, sum: int = 0) -> None:
        self.rows = rows
        self.bytes = bytes
        self.sum = sum

    def add(self, rows: list[Row]) -> int:
        """Count and hash ``rows``; their bytes."""
        total, size = self.sum, 0
        blake2b = hashlib.blake2b
        for row in rows:
            encoded = _encode(row)
            size += len(encoded)
            total += int.from_bytes(blake2b(encoded, digest_size=16).digest(), "big")
        self.sum = total & _MASK
        self.rows += len(rows)
        self.bytes += size
        return size

    def as_json(self) -> list[Any]:
        """``[rows, bytes, checksum]`` as recorded in ``tidings_backup.tables``."""
        return [self.rows, self.bytes, f"{self.sum:032x}"]

    @classmethod
    def from_json(cls, value: Any) -> Digest:
        """The digest ``as_json`` recorded (``ValueError`` for anything else)."""
        rows, size, checksum = value
        if not (isinstance(rows, int) and isinstance(size, int) and isinstance(checksum, str)):
            raise ValueError(f"not a table digest: {value!r}")
        return cls(rows, size, int(checksum, 16))

    def same(self, other: Digest) -> bool:
        """Whether both digests count the same rows."""
        return (self.rows, self.bytes, self.sum) == (other.rows, other.bytes, other.sum)
