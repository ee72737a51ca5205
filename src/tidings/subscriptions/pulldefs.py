"""What a pull consumer is and what it answers: its definition, batches, info, errors.

The definition is stored as JSON (``encode_definition``) beside the checkpoint; posting
the same definition again finds it, another one under the same name is a conflict.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from tidings.errors import InvalidInput, TidingsError
from tidings.events import Filter, RecordedEvent

MAX_WAIT = 30.0
"""The longest a poll waits for an event, in seconds."""


class PullRow(NamedTuple):
    """A stored pull consumer: its definition (JSON), the highest position handed out,
    and whether members share it as a consumer group."""

    definition: str
    handed: int
    grouped: bool


class PullConflict(TidingsError):
    """A pull consumer request that contradicts what is stored (HTTP 409, ``code``)."""

    code = "conflict"
    limit: int | None = None


class AckBeyondHandedOut(PullConflict):
    """An ack past the highest position handed out (``limit``): nothing moves."""

    code = "ack_beyond_handed_out"

    def __init__(self, name: str, position: int, limit: int) -> None:
        super().__init__(
            f"cannot ack {position} on {name!r}: only events up to {limit} were handed out"
        )
        self.limit = limit


class LeaseLost(PullConflict):
    """A member acked while it holds no partition (its leases ran out, others took them)."""

    code = "lease_lost"


class PullDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a pull consumer reads (a filter), where it starts, and its consumer group's
    shape (used once members join): ``partitions`` and ``lease_ttl`` seconds."""

    categories: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    stream_prefix: str | None = None
    stream_pattern: str | None = None
    start: str | int = "beginning"
    partitions: int = 16
    lease_ttl: float = 30.0

    @classmethod
    def of(
        cls,
        filter: Filter | None = None,
        start: str | int = "beginning",
        partitions: int = 16,
        lease_ttl: float = 30.0,
    ) -> PullDefinition:
        """A checked definition (``InvalidInput`` otherwise), its names sorted."""
        if filter is not None and not isinstance(filter, Filter):
            raise InvalidInput(f"filter must be a tidings.Filter, not {type(filter).__name__}")
        if isinstance(start, bool) or not (
            (isinstance(start, int) and start >= 0) or start in ("beginning", "end")
        ):
            raise InvalidInput(f'start must be "beginning", "end" or a position, not {start!r}')
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise InvalidInput(f"partitions must be an int, not {partitions!r}")
        if not 1 <= partitions <= 4096:
            raise InvalidInput(f"partitions must be between 1 and 4096, not {partitions}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float):
            raise InvalidInput(f"lease_ttl must be a number of seconds, not {lease_ttl!r}")
        if not 0.2 <= lease_ttl <= 3600:
            raise InvalidInput(f"lease_ttl must be between 0.2 and 3600 seconds, not {lease_ttl}")
        f = filter or Filter()
        if f.categories == () or f.types == ():
            raise InvalidInput("a filter's categories and types must not be empty lists")
        return cls(
            None if f.categories is None else tuple(sorted(set(f.categories))),
            None if f.types is None else tuple(sorted(set(f.types))),
            f.stream_prefix,
            f.stream_pattern,
            start,
            partitions,
            float(lease_ttl),
        )

    @property
    def filter(self) -> Filter | None:
        """The log filter (None: every event)."""
        return _filter_of(self)


@functools.lru_cache(maxsize=256)
def _filter_of(d: PullDefinition) -> Filter | None:
    found = Filter(d.categories, d.stream_prefix, d.types, d.stream_pattern)
    return None if found.is_empty else found


class PullBatch(msgspec.Struct):
    """Events handed out by one poll: ``last_position`` (null when there are none) is
    what to ack; ``checkpoint`` is where the batch starts (the lowest of a member's)."""

    events: list[RecordedEvent]
    last_position: int | None
    checkpoint: int


class PullInfo(msgspec.Struct):
    """A pull consumer: its definition and how it fares (as ``SubscriptionInfo``), with
    the highest position handed out and, for a group, its live members."""

    name: str
    definition: PullDefinition
    checkpoint: int
    head: int
    lag: int
    state: str
    last_error: str | None
    updated: datetime
    parked: int
    handed_out: int
    grouped: bool
    members: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PullDefinition)


def encode_definition(definition: PullDefinition) -> str:
    """The stored (JSON) form of a definition."""
    return _encoder.encode(definition).decode()


def decode_definition(text: str) -> PullDefinition:
    """A definition from its stored form."""
    return _decoder.decode(text)


def grouped(name: str) -> PullConflict:
    """The conflict of a member-less poll or ack on a consumer group."""
    return PullConflict(f"subscription {name!r} is a consumer group: poll and ack with a member")


def check_name(name: Any) -> None:
    """``InvalidInput`` unless ``name`` is a str of 1 to 200 characters."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidInput(f"a subscription name is a str of 1 to 200 characters: {name!r}")


def check_member(member: Any) -> None:
    """``InvalidInput`` unless ``member`` is None or a str of 1 to 200 characters."""
    if member is not None and (not isinstance(member, str) or not member or len(member) > 200):
        raise InvalidInput(f"a group member id is a str of 1 to 200 characters: {member!r}")


def check_position(position: Any) -> None:
    """``InvalidInput`` unless ``position`` is an int >= 0."""
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise InvalidInput(f"position must be an int >= 0, not {position!r}")


def check_poll(limit: Any, wait: Any) -> None:
    """``InvalidInput`` unless ``limit`` >= 1 and 0 <= ``wait`` <= ``MAX_WAIT``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be an int >= 1, not {limit!r}")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait must be between 0 and {MAX_WAIT} seconds, not {wait!r}")
