"""The console's own reads (ledger/api/console/queries.py) are index ranges on both databases,
bounded by their limit, however many levels, closed reservations and entries there are.

Rows are written straight into the projection tables (the plans depend on their number and
spread, not on the rules that made them); every statement a read sends is EXPLAINed. The same
reads' answers are checked over HTTP in tests/e2e/test_console_pages.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from support.plans import answer_and_plans, statistics_as_in_production

from ledger.api.console import queries
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.service import Ledger

STORES = 20
SKUS = 600  # 12,000 levels
RESERVATIONS = 3000  # per store 150, one in ten still open


def _levels() -> Iterator[tuple[Any, ...]]:
    for store in range(STORES):
        for sku in range(SKUS):
            yield (f"store-{store:02d}", f"SKU-{sku:04d}", sku, 0, 0, 1, "2026-01-01T00:00:00.000000Z")


def _reservations() -> Iterator[tuple[Any, ...]]:
    for n in range(RESERVATIONS):
        remaining = 1 if n % 10 == 0 else 0
        lines = orjson.dumps([["SKU-0001", 1, 1 - remaining, 0]]).decode()
        expires = f"2026-02-{1 + n % 28:02d}T00:00:00.000000Z" if n % 3 else None
        yield (f"store-{n % STORES:02d}", f"R-{n:05d}", None, expires, lines, None, "active", remaining, n, n)


def _history() -> Iterator[tuple[Any, ...]]:
    for position in range(1, 6001):
        store, sku = f"store-{position % STORES:02d}", f"SKU-{position % SKUS:04d}"
        moment = "2026-01-01T00:00:00.000000Z"
        yield (
            position,
            0,
            store,
            sku,
            f"e{position}",
            "tests/plans",
            "stock.receipt",
            moment,
            moment,
            moment,
        )


@pytest.fixture(scope="module")
def ledger(module_database_url: str) -> Iterator[Ledger]:
    ledger = build_ledger(Settings(database_url=module_database_url))
    with ledger.recorder.plain_transaction() as tx:
        tx.executemany(
            "INSERT INTO ledger_levels (store_id, sku, on_hand, reserved, incoming, position, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            list(_levels()),
        )
        tx.executemany(
            "INSERT INTO ledger_reservations (store_id, reservation_id, order_id, expires_at, lines, "
            "closed_as, status, remaining, placed_at_position, position) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            list(_reservations()),
        )
        tx.executemany(
            "INSERT INTO ledger_history (position, line_no, store_id, sku, event_id, source, type, time, "
            "occurred_at, recorded_at, outcome, on_hand_delta, reserved_delta, incoming_delta, on_hand, "
            "reserved, incoming, oversold, unknown_reservation) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'accepted', 1, 0, 0, 1, 0, 0, FALSE, FALSE)",
            list(_history()),
        )
    statistics_as_in_production(ledger)
    try:
        yield ledger
    finally:
        ledger.recorder.close()


def _assert_range(plan: str, sqlite: bool, table: str, *indexes: str) -> None:
    """A range of one of these indexes, never the whole table."""
    if sqlite:
        assert any(
            f"SEARCH {table} USING INDEX {index} " in plan
            or f"SEARCH {table} USING COVERING INDEX {index} " in plan
            for index in indexes
        ), plan
        assert f"SCAN {table}" not in plan, plan
    else:
        assert "Seq Scan" not in plan, plan
        assert any(f"Index Name: {index} " in plan for index in indexes), plan


def _by_sku(sqlite: bool) -> str:
    return "ledger_levels_by_sku" if sqlite else "ledger_levels_by_sku_bytes"


def test_the_search_by_prefix_is_a_range_of_the_levels_by_sku(ledger: Ledger) -> None:
    sqlite = bool(ledger.recorder.qmark)
    found, [plan] = answer_and_plans(ledger, lambda tx: queries.skus_by_prefix(tx, "SKU-01", None, 5))
    assert found == ["SKU-0100", "SKU-0101", "SKU-0102", "SKU-0103", "SKU-0104"]
    _assert_range(plan, sqlite, "ledger_levels", _by_sku(sqlite))
    one_store = frozenset({"store-03"})
    scoped, [plan] = answer_and_plans(ledger, lambda tx: queries.skus_by_prefix(tx, "SKU-059", one_store, 50))
    assert scoped == [f"SKU-059{n}" for n in range(10)]
    # A scoped token's stores: that range, or the primary key's (store, SKU) range at each store.
    primary_key = "sqlite_autoindex_ledger_levels_1" if sqlite else "ledger_levels_pkey"
    _assert_range(plan, sqlite, "ledger_levels", _by_sku(sqlite), primary_key)


def test_the_stores_are_one_probe_each_never_the_whole_table(ledger: Ledger) -> None:
    stores, [plan] = answer_and_plans(ledger, lambda tx: queries.store_ids(tx, 7))
    assert stores == [f"store-{n:02d}" for n in range(7)]
    if ledger.recorder.qmark:
        assert "SCAN ledger_levels" not in plan.replace("SCAN ledger_levels USING COVERING INDEX", ""), plan
    else:
        assert "Seq Scan" not in plan, plan


def test_a_stores_open_reservations_are_a_range_of_the_open_ones(ledger: Ledger) -> None:
    sqlite = bool(ledger.recorder.qmark)
    rows, plans = answer_and_plans(ledger, lambda tx: queries.open_reservations(tx, "store-00", 1000))
    expected = sorted(
        (r for r in _reservations() if r[0] == "store-00" and r[7] > 0),
        key=lambda r: (r[3] is None, r[3] or "", r[1]),
    )
    assert [row["reservation_id"] for row in rows] == [r[1] for r in expected]
    assert len(plans) == 2
    for plan in plans:
        # Only the store's open ones are read (the partial index); PostgreSQL may sort those few
        # rather than walk the index in order, never the closed ones, which grow with the log.
        _assert_range(plan, sqlite, "ledger_reservations", "ledger_reservations_open")
        assert "TEMP B-TREE" not in plan, plan
        assert "Filter" not in plan and "store_id = " in plan.replace("store_id=?", "store_id = "), plan
