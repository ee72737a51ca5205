"""The hub's payload: a topic event's key and value as one JSON array, decoded back exactly."""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec

from tidings.errors import InvalidHubKey, InvalidHubPayload, InvalidHubValue

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

Key = tuple[int, ...]

_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(tuple[tuple[_Int64, ...], Any])


def check_key(key: object) -> Key:
    """Return ``key`` if it is a tuple of ints in [-2**63, 2**63 - 1], else raise InvalidHubKey.

    Exactly ``int``: ``bool`` and other int subclasses are refused, since they would
    come back as plain ints.
    """
    if type(key) is not tuple:
        raise InvalidHubKey(f"a hub key must be a tuple of ints, not {type(key).__name__}")
    for part in key:
        if type(part) is not int:
            raise InvalidHubKey(
                f"a hub key holds ints only, not {type(part).__name__} ({part!r} in {key!r})"
            )
        if not INT64_MIN <= part <= INT64_MAX:
            raise InvalidHubKey(f"hub key part {part} does not fit in 64 signed bits")
    return key


def _check_value(value: object) -> None:
    """Refuse what would not come back equal and of the same type from JSON.

    Called after msgspec encoded ``value``, so it is known to be acyclic.
    """
    todo = [value]
    while todo:
        item = todo.pop()
        if item is None or type(item) is bool or type(item) is str:
            continue
        if type(item) is int:
            if not INT64_MIN <= item <= INT64_MAX:
                raise InvalidHubValue(f"hub value int {item} does not fit in 64 signed bits")
        elif type(item) is float:
            if not math.isfinite(item):
                raise InvalidHubValue(f"hub value holds {item}, which JSON cannot represent")
        elif type(item) is list:
            todo.extend(item)
        elif type(item) is dict:
            for name, member in item.items():
                if type(name) is not str:
                    raise InvalidHubValue(
                        f"hub value dict keys must be str, not {type(name).__name__} ({name!r})"
                    )
                todo.append(member)
        else:
            raise InvalidHubValue(
                "a hub value is JSON (None, bool, int, float, str, list, dict), "
                f"not {type(item).__name__}"
            )


def encode_event(key: Key, value: Any) -> bytes:
    """The one payload that carries ``key`` and ``value``: the JSON array ``[key, value]``.

    Raises ``InvalidHubKey`` or ``InvalidHubValue`` for input that would not decode
    back exactly: keys other than tuples of 64-bit signed ints; values other than
    None, bool, 64-bit ints, finite floats, str, lists and dicts with str keys.
    """
    check_key(key)
    try:
        payload = _encoder.encode((key, value))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise InvalidHubValue(f"hub value has no JSON form: {exc}") from exc
    _check_value(value)
    return payload


def decode_event(payload: bytes) -> tuple[Key, Any]:
    """The key and value ``encode_event`` put in ``payload``; ``InvalidHubPayload`` if none."""
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidHubPayload(f"not a hub payload: {exc}") from exc
