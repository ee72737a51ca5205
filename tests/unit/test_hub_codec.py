"""The hub's payload: a key and a JSON value in one message, decoded back exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.errors import (
    InvalidChannel,
    InvalidHubKey,
    InvalidHubPayload,
    InvalidHubValue,
    InvalidInput,
)
from tidings.hub import Hub, HubEvent
from tidings.hub_codec import INT64_MAX, INT64_MIN, decode_event, encode_event
from tidings.notify.memory import MemoryNotifier

int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
keys = st.lists(int64, max_size=8).map(tuple)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | int64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (so 1 is not 1.0 nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@given(keys, json_values)
def test_every_key_and_json_value_round_trips_exactly(key: tuple[int, ...], value: Any) -> None:
    payload = encode_event(key, value)
    assert isinstance(payload, bytes)
    got_key, got_value = decode_event(payload)
    assert type(got_key) is tuple and got_key == key
    assert all(type(part) is int for part in got_key)
    assert same(got_value, value)


def test_the_extremes_round_trip() -> None:
    key = (INT64_MIN, INT64_MAX, 0, -1)
    value = {"": [INT64_MIN, INT64_MAX, -0.0, 5e-324, 1.7976931348623157e308, "\u0000é😀"]}
    got_key, got_value = decode_event(encode_event(key, value))
    assert got_key == key and same(got_value, value)
    assert decode_event(encode_event((), None)) == ((), None)


@pytest.mark.parametrize(
    "key",
    [
        [1, 2],
        1,
        None,
        (True,),
        (1, False),
        (1.0,),
        ("1",),
        (INT64_MAX + 1,),
        (INT64_MIN - 1,),
        (2**100,),
    ],
)
def test_keys_that_are_not_tuples_of_64_bit_ints_are_refused(key: Any) -> None:
    with pytest.raises(InvalidHubKey):
        encode_event(key, None)


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        [-math.inf],
        {"a": {"b": math.nan}},
        {1: "int key"},
        {None: 1},
        (1, 2),
        b"bytes",
        {1, 2},
        object(),
        HubEvent("t"),
        INT64_MAX + 1,
        [INT64_MIN - 1],
        {"big": 2**64},
        "\ud800",
        _cycle(),
    ],
    ids=repr,
)
def test_values_without_an_exact_json_form_are_refused(value: Any) -> None:
    with pytest.raises(InvalidHubValue):
        encode_event((), value)


def test_refusals_are_invalid_input() -> None:
    for error in (InvalidHubKey, InvalidHubValue, InvalidHubPayload):
        assert issubclass(error, InvalidInput)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"[]",
        b"[[1]]",
        b'{"key": []}',
        b"[[1.5], 1]",
        b'[["1"], 1]',
        b"[[true], 1]",
        b"[[9223372036854775808], 1]",
        b"[[], 1e400]",
        b"[[], 1, 2]",
    ],
)
def test_foreign_payloads_fail_to_decode_with_a_typed_error(payload: bytes) -> None:
    with pytest.raises(InvalidHubPayload):
        decode_event(payload)


async def test_hub_topics_must_be_channel_names_and_fit_after_the_hub_name() -> None:
    notifier = MemoryNotifier("memory://codec-topics")
    hub = Hub(notifier, name="billing")
    for topic in ["", "a b", "a..b", ".a", "x" * 56, "é"]:
        with pytest.raises(InvalidChannel):
            await hub.notify(topic, (), None)
    with pytest.raises(InvalidChannel):
        await hub.notify(1, (), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidChannel):
        Hub(notifier, name="bad name")
    with pytest.raises(InvalidChannel):
        hub.consumer(print, "ok", "not ok")
    assert hub.stats().consumers == 0
    await hub.notify("x" * 55, (), None)  # "billing." + 55 = 63 characters: the limit
    await notifier.close()
