"""Event ids and JSON encoding."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from tidings.codec import decode_json, encode_json, new_event_id

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
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
