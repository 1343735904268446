"""The writer's reads by key look each key up in its table's index, on a table never analyzed.

Before deciding a batch the writer reads the event keys it has not seen, and the levels and
reservations memory lacks. A ledger's tables are new in its first minutes, and PostgreSQL has no
statistics of them until autovacuum's first ANALYZE: asked for a few keys among some thousands of
rows then, it chose to hash the keys and scan the whole table, on every batch (and a prepared
statement's generic plan, made while the table was small, kept doing so until the next ANALYZE).
Sourcing's check of an order's id at its 20 candidate stores halved its rate that way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from support.plans import RecordingTx, plan_of
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.service import Ledger
from ledger.sql import SqlTx
from ledger.state_cache import StateCache
from ledger.writer.deciding import _finish_event_keys, _read_event_keys

ROWS = 5000
KEYS = 20  # half of them in the table

INSERTS = {
    "ledger_event_keys": (
        "INSERT INTO ledger_event_keys (source, event_id, position, outcome, reason)"
        " VALUES (%s, %s, 1, 'accepted', NULL)"
    ),
    "ledger_levels": (
        "INSERT INTO ledger_levels (store_id, sku, on_hand, reserved, incoming, position, updated_at)"
        " VALUES (%s, %s, 1, 0, 0, 1, '2026-01-01T00:00:00.000000Z')"
    ),
    "ledger_reservations": (
        "INSERT INTO ledger_reservations (store_id, reservation_id, order_id, expires_at, lines, closed_as,"
        " status, remaining, placed_at_position, position, channel)"
        " VALUES (%s, %s, NULL, NULL, '[]', NULL, 'active', 1, 1, 1, NULL)"
    ),
}


def _stored(n: int) -> tuple[str, str]:
    return (f"store-{n % 20}", f"k{n}")


# One second value asked for at ten stores (sourcing's order id at its candidates), held at one of
# them and at a store not asked for.
SHARED = "order-1"
SHARED_HELD = [("store-3", SHARED), ("store-15", SHARED)]


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = build_ledger(Settings(database_url=database_url))
    with ledger.recorder.plain_transaction() as tx:
        for insert in INSERTS.values():
            tx.executemany(insert, [_stored(n) for n in range(ROWS)] + SHARED_HELD)
    try:
        yield ledger
    finally:
        ledger.recorder.close()


def _wanted() -> list[tuple[str, str]]:
    return [_stored(n * 97) for n in range(KEYS // 2)] + [(f"store-{n}", SHARED) for n in range(KEYS // 2)]


def _assert_lookups(plan: str, table: str, kind: str) -> None:
    if kind == "sqlite":
        assert "SEARCH found USING INDEX" in plan or "SEARCH found USING COVERING INDEX" in plan, plan
        lines = plan.splitlines()
        scans = [line for line in lines if line.startswith("SCAN ") and not line.startswith("SCAN CONSTANT")]
        scans = [line for line in scans if "CONSTANT ROWS" not in line]
        assert scans == ["SCAN wanted"], plan  # the keys asked for, walked once: never the table
        return
    assert "Seq Scan" not in plan, plan
    assert "Hash" not in plan, plan
    lines = plan.splitlines()
    scans = [line for line in lines if f"Relation Name: {table}" in line]
    assert scans and all("Index Scan" in line or "Bitmap Heap Scan" in line for line in scans), plan
    assert any("Index Cond" in line for line in lines), plan


@pytest.mark.parametrize("table", list(INSERTS))
def test_a_read_by_key_is_a_lookup_in_the_index_of_a_table_never_analyzed(ledger: Ledger, table: str) -> None:
    cache = StateCache(levels_max=1000, reservations_max=1000, catch_up_events_max=1000)
    wanted = _wanted()
    with ledger.recorder.read_transaction() as tx:
        recording = RecordingTx(tx)
        found: set[Any]
        if table == "ledger_event_keys":
            found = set(_finish_event_keys(_read_event_keys(recording, wanted)))
        elif table == "ledger_levels":
            levels = cache.read_levels(recording, set(wanted)).finish()
            found = {key for key, cached in levels.items() if cached.level.on_hand_units}
        else:
            found = set(cache.read_reservations(recording, set(wanted)).found_keys())
        plans = [plan_of(tx, sql, params) for sql, params in recording.statements]
    assert found == set(wanted[: KEYS // 2]) | {("store-3", SHARED)}
    assert plans
    for plan in plans:
        _assert_lookups(plan, table, "sqlite" if tx.qmark else "postgres")


def _read(table: str, tx: SqlTx, wanted: list[tuple[str, str]]) -> None:
    cache = StateCache(levels_max=1000, reservations_max=1000, catch_up_events_max=1000)
    if table == "ledger_event_keys":
        _finish_event_keys(_read_event_keys(tx, wanted))
    elif table == "ledger_levels":
        cache.read_levels(tx, set(wanted)).finish()
    else:
        cache.read_reservations(tx, set(wanted)).found_keys()


@pytest.mark.parametrize("table", list(INSERTS))
def test_a_read_by_key_stays_a_lookup_after_its_table_grew_past_its_statistics(
    postgres: EmbeddedPostgres, table: str
) -> None:
    """A connection that has read by key many times while its table was small (and analyzed
    then, as autovacuum does soon after a ledger starts) reads the same way once the table has
    grown: never a scan of it. A prepared statement's generic plan, made from the small table's
    statistics, scanned it once per key until the next ANALYZE."""
    postgres_url = postgres.create_database()
    ledger = build_ledger(Settings(database_url=postgres_url))
    insert = INSERTS[table]
    try:
        with ledger.recorder.plain_transaction() as tx:
            tx.executemany(insert, [_stored(n) for n in range(60)])
            tx.execute(f"ANALYZE {table}")
        with psycopg.connect(postgres_url, row_factory=dict_row) as connection:
            tx = SqlTx(connection.cursor(), qmark=False)
            for n in range(12):  # past psycopg's preparing (5) and the server's custom plans (5)
                _read(table, tx, [(f"store-{k}", f"new-{n}-{k}") for k in range(KEYS)])
                connection.commit()
            with ledger.recorder.plain_transaction() as other:
                other.executemany(insert, [_stored(n) for n in range(60, 20_060)])
            counts = "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = %s"
            [before] = tx.fetchall(counts, [table])  # the backend's counts not yet reported
            _read(table, tx, [(f"store-{k}", f"late-{k}") for k in range(KEYS)] + SHARED_HELD)
            [after] = tx.fetchall(counts, [table])
            assert after["seq_tup_read"] == before["seq_tup_read"], (before, after)
    finally:
        ledger.recorder.close()
