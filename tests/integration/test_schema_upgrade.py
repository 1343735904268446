"""A database made by an earlier version is brought up to date on start, with nothing lost.

These databases predate the table of schema versions (ledger/storage/migrations.py): every
migration runs on them once, and makes only what they lack.

Earlier versions kept a table of per-SKU totals and an index on a level's position, and on
PostgreSQL their batch function took one argument more. Starting the ledger drops all three
(the totals are now a view over the levels) and keeps every recorded row. Their history had no
`principal` column: starting adds it (null for the rows recorded before), and the tokens table.
Before business time (CONTRACT §7) the history had no `occurred_at` and other indexes: starting
adds the column, filled from each row's `time` as the writer would have written it, and the
indexes of today, and drops the old ones.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime, timedelta, timezone

from support import db
from support import events as ev

from ledger.bootstrap import build_ledger
from ledger.clock import utc_text
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent

OLD_DDL = (
    "DROP TABLE ledger_schema_versions",
    """CREATE TABLE ledger_sku_totals (sku TEXT NOT NULL PRIMARY KEY, on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL, incoming BIGINT NOT NULL, position BIGINT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX ledger_levels_by_position ON ledger_levels (position)",
    "ALTER TABLE ledger_history DROP COLUMN principal",
    "DROP TABLE ledger_tokens",
    "DROP INDEX ledger_history_policy_changes",
    "DROP INDEX ledger_history_policy_changes_occurred",
    "DROP INDEX ledger_history_by_sku_occurred",
    "ALTER TABLE ledger_history DROP COLUMN occurred_at",
    "DROP INDEX ledger_history_by_store_position",
    "DROP INDEX ledger_history_by_sku_position",
    "CREATE INDEX ledger_history_by_store ON ledger_history (store_id, position)",
    "CREATE INDEX ledger_history_by_sku ON ledger_history (store_id, sku, position)",
)
# Event times that the fill must turn into the writer's UTC text: an offset, microseconds, none.
OLD_TIMES = (
    datetime(2025, 12, 31, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=3))),
    datetime(2025, 6, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
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
            "WHERE proname LIKE 'ledger\\_write\\_batch%%'",
        )
    return {(row["kind"], row["name"]) for row in rows}


def _receipt(
    event_id: str, sku: str, qty: int, principal: str | None = None, time: datetime | None = None
) -> StockEvent:
    event = ev.stock_event(event_id, "stock.receipt", "store-1", [(sku, qty)], source="tests/upgrade")
    return dataclasses.replace(event, principal=principal, time=time or event.time)


def _record_on_start(database_url: str, *events: StockEvent) -> Outcome:
    """Starts a ledger (which creates or upgrades the schema), records the events, stops."""
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    try:
        results = ledger.submit_and_wait(list(events))
        assert len({result.outcome for result in results}) == 1, results
        return results[0].outcome
    finally:
        ledger.stop()


def test_an_old_schema_is_brought_up_to_date_and_keeps_its_rows(database_url: str) -> None:
    old_events = [_receipt(f"e1.{i}", "SKU-1", 1, time=time) for i, time in enumerate(OLD_TIMES)]
    assert _record_on_start(database_url, _receipt("e1", "SKU-1", 3), *old_events) is Outcome.ACCEPTED
    old = OLD_DDL if database_url.startswith("sqlite") else (*OLD_DDL, OLD_PG_FUNCTION)
    _execute(database_url, old)
    before = _objects(database_url)
    assert ("table", "ledger_sku_totals") in before
    assert ("index", "ledger_levels_by_position") in before
    assert ("index", "ledger_history_by_store") in before

    assert _record_on_start(database_url, _receipt("e2", "SKU-1", 2, "upgrader")) is Outcome.ACCEPTED

    after = _objects(database_url)
    assert ("table", "ledger_sku_totals") not in after
    assert ("index", "ledger_levels_by_position") not in after
    assert ("view", "ledger_totals") in after
    assert ("table", "ledger_tokens") in after
    for index in ("by_store_position", "by_sku_position", "by_sku_occurred"):
        assert ("index", f"ledger_history_{index}") in after
    assert ("index", "ledger_history_by_store") not in after
    assert ("index", "ledger_history_by_sku") not in after
    principals = db.query(database_url, "SELECT event_id, principal FROM ledger_history ORDER BY position")
    assert [(row["event_id"], row["principal"]) for row in principals] == [
        ("e1", None),
        ("e1.0", None),
        ("e1.1", None),
        ("e2", "upgrader"),
    ]
    times = db.query(database_url, "SELECT time, occurred_at FROM ledger_history ORDER BY position")
    for row in times:  # filled on start for the old rows, written by the writer for the new one
        assert row["occurred_at"] == utc_text(datetime.fromisoformat(row["time"])), row
    if not database_url.startswith("sqlite"):
        functions = [name for kind, name in after if kind == "function"]
        # The old overload is gone; this release's function is named by its shape.
        assert len(functions) == 1, functions
        assert functions[0].startswith("ledger_write_batch_"), functions
    assert db.scalar(database_url, "SELECT COUNT(*) FROM ledger_events") == 4
    totals = db.query(database_url, "SELECT on_hand, reserved FROM ledger_totals WHERE sku = 'SKU-1'")
    assert [(row["on_hand"], row["reserved"]) for row in totals] == [(7, 0)]
    assert all(type(row["on_hand"]) is int for row in totals)  # a bigint, not PostgreSQL's numeric sum
