"""Multi-row statements come in a few sizes, whatever the number of rows."""

from __future__ import annotations

from tidings.sql import padded, row_counts


def test_row_counts_cover_every_row_in_few_distinct_sizes() -> None:
    sizes: set[int] = set()
    for rows in range(0, 1_001):
        counts = row_counts(rows, 100)
        assert sum(counts) == rows
        assert counts == sorted(counts, reverse=True)
        sizes.update(counts)
    assert sizes == {100, 64, 32, 16, 8, 4, 2, 1}


def test_padded_repeats_the_last_value_up_to_a_power_of_two() -> None:
    assert padded([]) == []
    assert padded(["a"]) == ["a"]
    assert padded(["a", "b", "c"]) == ["a", "b", "c", "c"]
    assert {len(padded(list(range(n)))) for n in range(1, 257)} == {1 << b for b in range(9)}
