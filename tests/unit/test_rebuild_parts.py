"""How `ledger rebuild` deals the stores out to its fill's processes (ledger/rebuild/parts.py)."""

from __future__ import annotations

from ledger.rebuild.parts import split


def test_the_stores_are_dealt_out_by_entries_the_largest_first():
    entries = {"a": 100, "b": 60, "c": 50, "d": 10}
    assert split(entries, 2) == [frozenset({"a", "d"}), frozenset({"b", "c"})]
    assert split(entries, 3) == [frozenset({"a"}), frozenset({"b"}), frozenset({"c", "d"})]


def test_no_part_is_empty_and_every_store_is_in_one():
    assert split({"a": 5}, 4) == [frozenset({"a"})]
    assert split({}, 2) == []
    entries = {f"s{n}": n % 7 + 1 for n in range(50)}
    parts = split(entries, 3)
    assert len(parts) == 3 and all(parts)
    assert sorted(store for part in parts for store in part) == sorted(entries)
    totals = sorted(sum(entries[store] for store in part) for part in parts)
    assert totals[-1] - totals[0] <= max(entries.values())  # as even as whole stores allow
