"""The ``eventsourcing`` library's model in tidings' terms, in one place. No I/O.

- an originator id is a stream, ``<category>-<id>`` (the category names the
  application, or its snapshots);
- an originator version is kept in the event's metadata (``originator_version``), and
  the stream's own version is its place: the library's numbering may start at 0 or 1
  and may skip (snapshots), tidings' is 0, 1, 2, ... The versions of one originator
  must be recorded in increasing order;
- a stored event's topic is the event type; its state (bytes) is the event's data: the
  JSON it holds when that JSON reads back byte for byte, else a base64 string (the
  metadata says ``"state": "base64"``), so bytes are kept exact either way;
- a notification id is the event's global position.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal
from uuid import UUID

import msgspec

VERSION_KEY = "originator_version"
STATE_KEY = "state"
BASE64 = "base64"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

IdType = Literal["uuid", "text"]


def stream_of(category: str, originator_id: UUID | str) -> str:
    """The stream that holds an originator's events."""
    return f"{category}-{originator_id}"


def originator_of(stream: str, category: str, id_type: IdType) -> UUID | str:
    """The originator id a stream of ``category`` stands for."""
    text = stream[len(category) + 1 :]
    return UUID(text) if id_type == "uuid" else text


def to_data(state: bytes) -> tuple[Any, dict[str, Any]]:
    """An event's data and the metadata that marks how it holds ``state``. JSON that
    reads back byte for byte goes as it is (a ``msgspec.Raw``: not encoded again)."""
    try:
        data = _decode(state)
    except (msgspec.DecodeError, UnicodeDecodeError):
        data = None
    else:
        if _encode(data) == state:
            return msgspec.Raw(state), {}
    return base64.b64encode(state).decode("ascii"), {STATE_KEY: BASE64}


def state_of(data: bytes | Any, metadata: dict[str, Any]) -> bytes:
    """The state bytes an event holds: ``data`` as the stored JSON text (raw reads) or
    as its decoded value."""
    if metadata.get(STATE_KEY) == BASE64:
        text = _decode(data) if isinstance(data, bytes) else data
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"an event's state is not the base64 it is marked as: {exc}") from exc
    return data if isinstance(data, bytes) else _encode(data)


def version_of(metadata: dict[str, Any]) -> int:
    """The originator version an event's metadata holds."""
    return int(metadata[VERSION_KEY])
