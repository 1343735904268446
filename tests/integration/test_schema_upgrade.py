"""A database made by an earlier version is brought up to date on start, with nothing lost.

Earlier versions kept a table of per-SKU totals and an index on a level's position, and on
PostgreSQL their batch function took one argument more. Starting the ledger drops all three
(the totals are now a view over the levels) and keeps every recorded row. Their history had no
`principal` column: starting adds it (null for the rows recorded before), and the tokens table.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from support import db
from support import events as ev

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent

OLD_DDL = (
    """CREATE TABLE ledger_sku_totals (sku TEXT NOT NULL PRIMARY KEY, on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL, incoming BIGINT NOT NULL, position BIGINT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX ledger_levels_by_position ON ledger_levels (position)",
    "ALTER TABLE ledger_history DROP COLUMN principal",
    "DROP TABLE ledger_tokens",
)
OLD_PG_FUNCTION = """CREATE FUNCTION ledger_write_batch(bigint, bigint, jsonb, jsonb, jsonb, jsonb,
    jsonb, jsonb, jsonb, jsonb) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'"""


def _execute(database_url: str, statements: tuple[str, ...]) -> None:
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(db.sqlite_path(database_url))
        try:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def _objects(database_url: str) -> set[tuple[str, str]]:
    if database_url.startswith("sqlite"):
        rows = db.query(database_url, "SELECT type AS kind, name FROM sqlite_master")
    else:
        rows = db.query(
            database_url,
            "SELECT CASE relkind WHEN 'r' THEN 'table' WHEN 'i' THEN 'index' WHEN 'v' THEN 'view' END "
            "AS kind, relname::text AS name FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace",
        )
        rows += db.query(
            database_url,
            "SELECT 'function' AS kind, oid::regprocedure::text AS name FROM pg_proc "
            "WHERE proname = 'ledger_write_batch'",
        )
    return {(row["kind"], row["name"]) for row in rows}


def _receipt(event_id: str, sku: str, qty: int, principal: str | None = None) -> StockEvent:
    event = ev.stock_event(event_id, "stock.receipt", "store-1", [(sku, qty)], source="tests/upgrade")
    return dataclasses.replace(event, principal=principal)


def _record_on_start(database_url: str, event: StockEvent) -> Outcome:
    """Starts a ledger (which creates or upgrades the schema), records one event, stops."""
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    try:
        [result] = ledger.submit_and_wait([event])
        return result.outcome
    finally:
        ledger.stop()


def test_an_old_schema_is_brought_up_to_date_and_keeps_its_rows(database_url: str) -> None:
    assert _record_on_start(database_url, _receipt("e1", "SKU-1", 5)) is Outcome.ACCEPTED
    old = OLD_DDL if database_url.startswith("sqlite") else (*OLD_DDL, OLD_PG_FUNCTION)
    _execute(database_url, old)
    before = _objects(database_url)
    assert ("table", "ledger_sku_totals") in before
    assert ("index", "ledger_levels_by_position") in before

    assert _record_on_start(database_url, _receipt("e2", "SKU-1", 2, "upgrader")) is Outcome.ACCEPTED

    after = _objects(database_url)
    assert ("table", "ledger_sku_totals") not in after
    assert ("index", "ledger_levels_by_position") not in after
    assert ("view", "ledger_totals") in after
    assert ("table", "ledger_tokens") in after
    principals = db.query(database_url, "SELECT event_id, principal FROM ledger_history ORDER BY position")
    assert [(row["event_id"], row["principal"]) for row in principals] == [("e1", None), ("e2", "upgrader")]
    if not database_url.startswith("sqlite"):
        functions = [name for kind, name in after if kind == "function"]
        assert len(functions) == 1, functions  # the old overload is gone, the current one is there
    assert db.scalar(database_url, "SELECT COUNT(*) FROM ledger_events") == 2
    totals = db.query(database_url, "SELECT on_hand, reserved FROM ledger_totals WHERE sku = 'SKU-1'")
    assert [(row["on_hand"], row["reserved"]) for row in totals] == [(7, 0)]
    assert all(type(row["on_hand"]) is int for row in totals)  # a bigint, not PostgreSQL's numeric sum
