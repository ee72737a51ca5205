"""The HTTP wire format of pull consumers (``/subscriptions``). No I/O.

Kept beside ``wire`` (bodies of the store's own endpoints) as msgspec Structs: the
server decodes and encodes with them and the OpenAPI document is built from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tidings.events import RecordedEvent

# No "/", no space or control character; spelled out rather than with \s, which means
# more to Python's re (the server) than to JSON Schema's dialect (the OpenAPI document).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^/\x00-\x20\x7f]+$")]
"""A subscription name on the wire: 1 to 200 characters, no slash or white space."""
Member = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


Names = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
"""Categories or types: at least one, none empty."""
Pattern = Annotated[str, msgspec.Meta(extra_json_schema={"format": "regex"})]
"""A regular expression (one that does not compile is 400 ``invalid_filter``)."""


class FilterBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which events a subscription gets: every criterion given must match."""

    categories: Names | None = None
    types: Names | None = None
    stream_prefix: str | None = None
    stream_pattern: Pattern | None = None
    """A regular expression the whole stream name must match."""


class SubscriptionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /subscriptions``: a pull consumer's definition. ``start`` applies when it is
    created; ``partitions`` and ``lease_ttl`` (seconds) once members share it."""

    name: Name
    filter: FilterBody | None = None
    start: Literal["beginning", "end"] | Position = "beginning"
    partitions: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    lease_ttl: Annotated[float, msgspec.Meta(ge=0.2, le=3600)] = 30.0


class SubscriptionDefinition(msgspec.Struct):
    """A stored definition, as posted (filter names sorted)."""

    filter: FilterBody
    start: str | int
    partitions: int
    lease_ttl: float


class SubscriptionOut(msgspec.Struct):
    """A pull consumer: its definition and how it fares. ``handed_out`` is the highest
    position handed out (an ack may not pass it); ``grouped``: members share it."""

    name: str
    definition: SubscriptionDefinition
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


class SubscriptionsPage(msgspec.Struct):
    """``GET /subscriptions``: the pull consumers the caller may subscribe to."""

    subscriptions: list[SubscriptionOut]


class PullPage(msgspec.Struct):
    """``GET /subscriptions/{name}/next``: events handed out, the position to ack
    (``last_position``, null when there are none) and where the batch starts."""

    events: list[RecordedEvent]
    last_position: int | None
    checkpoint: int


class AckBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /subscriptions/{name}/ack``: move the checkpoint to ``position``."""

    position: Position
    member: Member | None = None


class AckResult(msgspec.Struct):
    """The checkpoint after an ack (a member's lowest, in a group)."""

    checkpoint: int


class ResetBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /subscriptions/{name}/reset``: where the checkpoint goes (default 0)."""

    position: Position = 0
