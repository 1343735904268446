"""`ledger verify`'s comparison, on any table: it takes the columns and the key from the replayed
table, so a projection added later is compared without a change to it."""

from __future__ import annotations

import sqlite3

from ledger.verify import Report, _compare, _Snapshot, _SQLiteSide

REPLAYED = """
CREATE TABLE keyed (
    store TEXT NOT NULL, n INTEGER NOT NULL, qty BIGINT, flag BOOLEAN, PRIMARY KEY (store, n));
CREATE TABLE unkeyed (note TEXT, qty BIGINT);
"""


def _sides(stored_ddl: str = REPLAYED) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    replayed, stored = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    replayed.executescript(REPLAYED)
    stored.executescript(stored_ddl)
    return replayed, stored


def _differences(
    replayed: sqlite3.Connection, stored: sqlite3.Connection, table: str
) -> tuple[list[str], Report]:
    report = Report(shown_max=100)
    _compare(
        table, _SQLiteSide(replayed), _Snapshot(_SQLiteSide(stored), "SELECT 0"), report, lambda *_: None
    )
    return [str(difference) for difference in report.shown], report


def test_rows_missing_made_up_and_changed_are_each_told_with_their_key() -> None:
    replayed, stored = _sides()
    rows = [("b", 1, 5, True), ("b", 2, 7, False), ("a", 1, None, False), ("é", 1, 1, True)]
    replayed.executemany("INSERT INTO keyed VALUES (?, ?, ?, ?)", rows)
    stored.executemany(
        "INSERT INTO keyed VALUES (?, ?, ?, ?)",
        [("b", 1, 5, 1), ("b", 2, 8, 1), ("a", 0, 3, 0), ("é", 1, 1, True), ("z", 9, 9, 0)],
    )
    shown, report = _differences(replayed, stored, "keyed")
    assert shown == [
        "keyed (store='a', n=0): stored, but not in the replay",
        "keyed (store='a', n=1): missing (the replay has it)",
        "keyed (store='b', n=2): qty: stored 8, replayed 7; flag: stored 1, replayed 0",
        "keyed (store='z', n=9): stored, but not in the replay",
    ]
    assert report.total == 4 and report.rows == {"keyed": 5}


def test_a_table_without_a_key_is_compared_as_a_multiset_of_rows() -> None:
    replayed, stored = _sides()
    replayed.executemany("INSERT INTO unkeyed VALUES (?, ?)", [("x", 1), ("x", 1), (None, 2)])
    stored.executemany("INSERT INTO unkeyed VALUES (?, ?)", [("x", 1), (None, 2), (None, 3)])
    shown, report = _differences(replayed, stored, "unkeyed")
    assert report.rows == {"unkeyed": 3}
    assert shown == [
        "unkeyed (note=None, qty=3): stored, but not in the replay",
        "unkeyed (note='x', qty=1): missing (the replay has it)",
    ]


def test_missing_tables_and_columns_are_differences_and_the_rest_is_still_compared() -> None:
    replayed, stored = _sides(
        "CREATE TABLE keyed (store TEXT, n INTEGER, qty BIGINT, old TEXT, PRIMARY KEY (store, n));"
    )
    replayed.execute("INSERT INTO keyed VALUES ('a', 1, 2, 0)")
    stored.execute("INSERT INTO keyed VALUES ('a', 1, 3, 'x')")
    shown, _ = _differences(replayed, stored, "keyed")
    assert shown == [
        "keyed: column flag is missing",
        "keyed: column old is stored but not projected by this version",
        "keyed (store='a', n=1): qty: stored 3, replayed 2",
    ]
    assert _differences(replayed, stored, "unkeyed")[0] == ["unkeyed: the table is missing"]


def test_the_number_shown_is_bounded_and_every_difference_counted() -> None:
    replayed, stored = _sides()
    replayed.executemany("INSERT INTO keyed VALUES ('s', ?, 1, 0)", [(n,) for n in range(50)])
    report = Report(shown_max=3)
    _compare(
        "keyed", _SQLiteSide(replayed), _Snapshot(_SQLiteSide(stored), "SELECT 0"), report, lambda *_: None
    )
    assert len(report.shown) == 3 and report.total == 50
