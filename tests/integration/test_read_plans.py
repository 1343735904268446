"""The reads that must not grow with the log are index ranges, on both databases (issue #13).

Each read runs once through its query function on a history of some thousands of rows; every
statement it sent is then EXPLAINed. A plan that walks the whole table, the primary key, or sorts
the rows it found, where an index range gives them in order, fails here before it is slow in
production. The rows are written straight into the history (what the plans depend on is their
number and spread, not the rules that made them), and the tables are given the statistics that
production has (support/plans.py: PostgreSQL's are analyzed, SQLite's never are).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.plans import answer_and_plans, statistics_as_in_production

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Level
from ledger.projections import queries
from ledger.projections.explain import indexed_holds
from ledger.projections.queries import HistoryFilter
from ledger.projections.timeline import TimelineWindow, timeline_points
from ledger.service import Ledger
from ledger.sql import SqlTx

STORES = 4
SKUS = 50
EVENTS = 6000  # two lines each: 12,000 history rows
INSERT = """INSERT INTO ledger_history (position, line_no, store_id, sku, event_id, source, type, time,
    occurred_at, recorded_at, outcome, reason, on_hand_delta, reserved_delta, incoming_delta, on_hand,
    reserved, incoming, oversold, unknown_reservation) VALUES
    (%s, %s, %s, %s, %s, 'tests/plans', 'stock.receipt', %s, %s, %s, 'accepted', NULL, 1, 0, 0, %s, 0, 0,
    FALSE, FALSE)"""


def _moment(second: int) -> str:
    day, hour, minute = 1 + second // 86400, second // 3600 % 24, second // 60 % 60
    return f"2026-01-{day:02d}T{hour:02d}:{minute:02d}:{second % 60:02d}.000000Z"


def _rows() -> Iterator[tuple[Any, ...]]:
    for position in range(1, EVENTS + 1):
        store = f"store-{position % STORES}"
        for line_no in range(2):
            sku = "SKU-HOT" if line_no == 0 else f"SKU-{position * 7 % SKUS}"
            # Business time runs backwards over the log (old history imported), recorded time forwards.
            occurred = _moment(2 * (EVENTS - position))
            recorded = _moment(position * 5)
            yield (position, line_no, store, sku, f"e{position}", occurred, occurred, recorded, position)


POLICY_CHANGES = 40  # after the movements: a policy of SKU-3 or the default (`*`) at store-1, in turn
INSERT_POLICY_CHANGE = """INSERT INTO ledger_history (position, line_no, store_id, sku, event_id, source,
    type, time, occurred_at, recorded_at, outcome, reason, on_hand_delta, reserved_delta, incoming_delta,
    oversold, unknown_reservation, policy)
    VALUES (%s, 0, 'store-1', %s, %s, 'tests/plans', 'stock.policy_changed', %s, %s, %s, 'accepted',
    NULL, 0, 0, 0, FALSE, FALSE, '{"safety_stock": 1, "channels": {}}')"""


RESERVATIONS = 2000  # store-1's, half of them online
INSERT_RESERVATION = """INSERT INTO ledger_reservations (store_id, reservation_id, order_id, expires_at,
    lines, closed_as, status, remaining, placed_at_position, position, channel)
    VALUES ('store-1', %s, NULL, NULL, '[]', NULL, 'active', 1, 1, 1, %s)"""


def _policy_changes() -> Iterator[tuple[Any, ...]]:
    for n in range(POLICY_CHANGES):
        position = EVENTS + 1 + n
        moment = _moment(position * 5)
        yield (position, "SKU-3" if n % 2 else "*", f"p{position}", moment, moment, moment)


@pytest.fixture(scope="module")
def ledger(module_database_url: str) -> Iterator[Ledger]:
    ledger = build_ledger(Settings(database_url=module_database_url))
    with ledger.recorder.plain_transaction() as tx:
        tx.executemany(INSERT, list(_rows()))
        tx.executemany(INSERT_POLICY_CHANGE, list(_policy_changes()))
        # A few oversells among the movements, as a till selling past stock leaves them.
        tx.execute("UPDATE ledger_history SET oversold = TRUE WHERE position = (position / 97) * 97")
        tx.executemany(
            INSERT_RESERVATION, [(f"r{n}", "online" if n % 2 else None) for n in range(RESERVATIONS)]
        )
    statistics_as_in_production(ledger)
    try:
        yield ledger
    finally:
        ledger.recorder.close()


def _plans(ledger: Ledger, read: Any) -> list[str]:
    return answer_and_plans(ledger, read)[1]


def _assert_index_range(plan: str, index: str, kind: str, bound: str) -> None:
    """The plan reads ledger_history as a range of an index that starts at its `bound` column's
    value: `index` on SQLite; on PostgreSQL `index`, or (a page of a store, whose rows PostgreSQL
    may find cheaper to pick from the log's order) the primary key from the cursor. Never the
    whole table, never an index with the bound left to a filter."""
    if kind == "sqlite":
        assert f"SEARCH ledger_history USING INDEX {index} (" in plan or (
            f"SEARCH ledger_history USING COVERING INDEX {index} (" in plan
        ), plan
        searched = plan.split(f"INDEX {index} (")[1].split(")", maxsplit=1)[0]
        assert bound in searched, plan
        assert "SCAN ledger_history" not in plan, plan
        assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        return
    assert "Seq Scan" not in plan, plan
    assert "Node Type: Sort" not in plan, plan  # every row after the cursor, to keep a page of them
    used = [line for line in plan.splitlines() if "Index Name" in line]
    assert used, plan
    for line in used:
        assert index in line or ("ledger_history_pkey" in line and bound == "position"), plan
        assert "Index Cond" in line and bound in line.split("Index Cond:")[1].split("| Filter")[0], plan


def _kind(ledger: Ledger) -> str:
    return "sqlite" if ledger.recorder.qmark else "postgres"


def test_as_of_finds_its_position_in_one_step_and_each_level_in_another(ledger: Ledger) -> None:
    def read(tx: SqlTx) -> None:
        position = queries.position_at(tx, _moment(EVENTS * 5 // 10))
        queries.levels_at(tx, "store-1", ["SKU-3", "SKU-4"], position)

    by_time, *by_sku = _plans(ledger, read)
    _assert_index_range(by_time, "ledger_history_events_by_time", _kind(ledger), "recorded_at")
    assert len(by_sku) == 2
    for plan in by_sku:
        _assert_index_range(plan, "ledger_history_by_sku_position", _kind(ledger), "position")


def test_levels_at_an_event_time_are_a_range_of_the_skus_business_time_index(ledger: Ledger) -> None:
    [plan] = _plans(ledger, lambda tx: queries.levels_occurred_at(tx, "store-1", ["SKU-3"], _moment(EVENTS)))
    _assert_index_range(plan, "ledger_history_by_sku_occurred", _kind(ledger), "occurred_at")


def test_the_policy_in_force_at_a_position_or_an_event_time_is_one_step_of_its_index(ledger: Ledger) -> None:
    """Not a walk back over every movement of the SKU since its last policy change."""
    at_position = _plans(ledger, lambda tx: queries.policies_at(tx, "store-1", ["SKU-3"], EVENTS + 10))
    at_time = _plans(
        ledger, lambda tx: queries.policies_occurred_at(tx, "store-1", ["SKU-3"], _moment((EVENTS + 10) * 5))
    )
    assert len(at_position) == len(at_time) == 2  # the SKU's, then the default's
    for plan in at_position:
        _assert_index_range(plan, "ledger_history_policy_changes", _kind(ledger), "position")
    for plan in at_time:
        _assert_index_range(plan, "ledger_history_policy_changes_occurred", _kind(ledger), "occurred_at")


def test_channels_at_an_event_time_are_the_skus_range_then_each_reservation_by_its_key(
    ledger: Ledger,
) -> None:
    [plan] = _plans(
        ledger, lambda tx: queries.channels_occurred_at(tx, "store-1", ["SKU-3"], _moment(EVENTS))
    )
    if _kind(ledger) == "sqlite":
        assert (
            "USING INDEX ledger_history_by_sku_occurred (store_id=? AND sku=? AND occurred_at<?)" in plan
        ), plan
        reservations = [line for line in plan.splitlines() if line.startswith("SEARCH r ")]
        assert reservations and all("reservation_id=?" in line for line in reservations), plan
        assert "SCAN" not in plan, plan
        return
    assert "Seq Scan" not in plan and "Hash" not in plan, plan
    used = [line for line in plan.splitlines() if "Index Name" in line]
    assert any("ledger_history_by_sku_occurred" in line and "occurred_at <=" in line for line in used), plan
    reservations = [line for line in used if "Relation Name: ledger_reservations" in line]
    assert reservations and all("reservation_id = h.reservation_id" in line for line in reservations), plan


@pytest.mark.parametrize("sku", [None, "SKU-HOT"])
def test_a_deep_history_page_starts_in_the_index_at_its_cursor(ledger: Ledger, sku: str | None) -> None:
    where = HistoryFilter("store-1", sku=sku, after_position=EVENTS // 2, after_line_no=0)
    [plan] = _plans(ledger, lambda tx: queries.history_page(tx, where, 20))
    index = "ledger_history_by_store_position" if sku is None else "ledger_history_by_sku_position"
    _assert_index_range(plan, index, _kind(ledger), "position")


def test_the_oversold_entries_of_a_store_are_a_range_of_their_partial_index(ledger: Ledger) -> None:
    """`?oversold=true` walked the store's whole history for the few it holds."""
    where = HistoryFilter("store-1", oversold=True, after_position=EVENTS // 2, after_line_no=0)
    [plan] = _plans(ledger, lambda tx: queries.history_page(tx, where, 20))
    # Few rows: PostgreSQL may gather them by a bitmap of the index and sort them; never the
    # store's other entries, nor the whole table.
    assert (
        "ledger_history_oversold" in plan and "Seq Scan" not in plan and "SCAN ledger_history" not in plan
    ), plan
    used = [line for line in plan.splitlines() if "ledger_history_oversold" in line]
    assert all("position" in line for line in used), plan  # the cursor is a bound of the range
    with ledger.recorder.plain_transaction() as tx:
        rows = queries.history_page(tx, where, 20)
    assert rows and all(row["oversold"] and row["position"] % 97 == 0 for row in rows)


@pytest.mark.parametrize("axis", ["recorded", "occurred"])
def test_a_timeline_reads_one_skus_range_of_the_history(ledger: Ledger, axis: str) -> None:
    window = TimelineWindow("store-1", "SKU-3", axis, _moment(EVENTS), _moment(EVENTS * 4))  # type: ignore[arg-type]
    plans = _plans(ledger, lambda tx: timeline_points(tx, window, 10))
    index = "ledger_history_by_sku_position" if axis == "recorded" else "ledger_history_by_sku_occurred"
    *bounds, points = plans
    assert len(bounds) == (2 if axis == "recorded" else 0)
    for plan in bounds:
        _assert_index_range(plan, "ledger_history_events_by_time", _kind(ledger), "recorded_at")
    bound = "position" if axis == "recorded" else "occurred_at"
    if _kind(ledger) == "sqlite":  # the window functions rank in a b-tree of their own
        assert f"SEARCH ledger_history USING INDEX {index} (" in points, points
        assert bound in points.split(f"INDEX {index} (")[1].split(")", maxsplit=1)[0], points
        assert "SCAN ledger_history" not in points, points
    else:  # ranking sorts the window's rows: the SKU's rows in the window (recorded), or up to `to`
        assert "Seq Scan" not in points, points
        used = [line for line in points.splitlines() if "Index Name" in line]
        if axis == "recorded":
            assert all(bound in line.split("Index Cond:")[1] for line in used), points
        assert used and all("ledger_history_by_sku_" in line and "sku = " in line for line in used), points


def test_the_entries_of_a_marking_code_are_a_range_of_the_codes_index_then_primary_key_lookups(
    ledger: Ledger,
) -> None:
    """CONTRACT §10's `?code=`: one range of ledger_history_codes (store, code, position), then
    each entry by the history's primary key; never the store's history filtered by its codes."""
    codes = [
        (f"store-{position % STORES}", f"CODE-{position % 300}", position, 0)
        for position in range(1, EVENTS + 1)
    ]
    with ledger.recorder.plain_transaction() as tx:
        tx.executemany(
            "INSERT INTO ledger_history_codes (store_id, code, position, line_no) VALUES (%s, %s, %s, %s)",
            codes,
        )
    statistics_as_in_production(ledger)
    where = HistoryFilter("store-1", code="CODE-1", after_position=EVENTS // 2, after_line_no=0)
    [plan] = _plans(ledger, lambda tx: queries.history_page(tx, where, 20))
    if _kind(ledger) == "sqlite":
        assert "SEARCH c USING" in plan and "(store_id=? AND code=? AND position>?)" in plan, plan
        assert "SEARCH h USING INDEX sqlite_autoindex_ledger_history_1 (position=? AND line_no=?)" in plan, (
            plan
        )
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
        return
    # PostgreSQL may sort what the range found (a bitmap scan of a code's few rows): those rows
    # only, bounded by the code, never the store's history.
    assert "Seq Scan" not in plan, plan
    used = [line for line in plan.splitlines() if "Index Name" in line]
    [codes_range] = [line for line in used if "ledger_history_codes_pkey" in line]
    assert all(
        f"{column} = " in codes_range or f'"{column}" >= ' in codes_range
        for column in ("store_id", "code", "position")
    ), plan
    assert any("ledger_history_pkey" in line and "c.line_no" in line for line in used), plan


RESERVATIONS = 3000  # open, at one store, one line each
RESERVED_SKUS = 600  # so that 5 hold each


def test_explains_reservations_are_a_range_of_the_open_lines_of_the_store_and_sku(ledger: Ledger) -> None:
    """Explain's `reserved_by`: a range of the partial index of open reservation lines by (store,
    SKU), then each reservation by its key; never the store's open reservations filtered by SKU,
    which grow with what the store holds open of every other SKU."""
    reservations, lines = [], []
    for n in range(RESERVATIONS):
        reservation_id, sku = f"R{n:05d}", f"SKU-{n % RESERVED_SKUS}"
        reservations.append(("store-plan", reservation_id, f'[["{sku}",2,0,0]]', n + 1))
        lines.append(("store-plan", reservation_id, sku, 2, n + 1, n + 1))
    with ledger.recorder.plain_transaction() as tx:
        tx.executemany(
            "INSERT INTO ledger_reservations (store_id, reservation_id, lines, status, remaining, "
            "placed_at_position, position) VALUES (%s, %s, %s, 'active', 2, %s, %s)",
            [(*row, row[-1]) for row in reservations],
        )
        tx.executemany(
            "INSERT INTO ledger_reservation_lines (store_id, reservation_id, sku, remaining, "
            "placed_at_position, position) VALUES (%s, %s, %s, %s, %s, %s)",
            lines,
        )
    statistics_as_in_production(ledger)
    holding = RESERVATIONS // RESERVED_SKUS
    level = Level(0, 2 * holding, 0)
    holds, [plan] = answer_and_plans(
        ledger, lambda tx: indexed_holds(tx, "store-plan", "SKU-7", level, RESERVATIONS)
    )
    assert holds is not None and len(holds) == holding
    if _kind(ledger) == "sqlite":
        assert "USING INDEX ledger_reservation_lines_open (store_id=? AND sku=?)" in plan, plan
        # Each reservation by its key, or by the index by id (reservation, store): one row either way.
        assert "SEARCH r USING INDEX" in plan and "reservation_id=?" in plan, plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
        return
    assert "Seq Scan" not in plan, plan
    used = [line for line in plan.splitlines() if "Index Name" in line]
    [open_lines] = [line for line in used if "ledger_reservation_lines_open" in line]
    assert "store_id = " in open_lines and "sku = " in open_lines, plan
    [by_key] = [line for line in used if "Relation Name: ledger_reservations" in line]
    assert "reservation_id = l.reservation_id" in by_key, plan
