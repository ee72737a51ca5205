"""Event ids and JSON encoding."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import ANY, InvalidEvent, NewEvent
from tidings.codec import decode_json, encode_json, new_event_id, prepare_append

texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_values_survive_a_round_trip(value: object) -> None:
    assert decode_json(encode_json(value)) == value


def test_generated_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 1000
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_the_ids_made_for_one_append_are_uuid7_distinct_and_in_event_order() -> None:
    events = [NewEvent("Noted", {"n": n}) for n in range(5_000)]
    ids = [e.id for e in prepare_append("notes-1", events, ANY, 1 << 20).events]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids, key=lambda i: i.int) and len(set(ids)) == len(ids)
    other = prepare_append("notes-1", events[:1], ANY, 1 << 20).events[0].id
    assert other not in ids  # the next append draws a fresh run


@given(json_values, st.sampled_from(["value", "key"]))
def test_json_with_a_nul_character_anywhere_is_refused(value: object, where: str) -> None:
    nested = {"a": [value, "x\x00y"]} if where == "value" else {"a": value, "k\x00": 1}
    with pytest.raises(InvalidEvent):
        encode_json(nested)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidEvent):
        encode_json({"text": "\ud800"})
