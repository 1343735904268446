"""Plain SQL reads of the ledger's tables, on SQLite or PostgreSQL, as an operator would run them."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

PROJECTION_PRIMARY_KEYS = {
    "ledger_levels": ("store_id", "sku"),
    "ledger_history": ("position", "line_no"),
    "ledger_reservations": ("store_id", "reservation_id"),
    "ledger_event_keys": ("source", "event_id"),
    "ledger_policies": ("store_id", "sku"),
    "ledger_reservation_lines": ("store_id", "reservation_id", "sku"),
}
EVENTS_TABLE = "ledger_events"


def sqlite_path(database_url: str) -> str:
    assert database_url.startswith("sqlite:///"), database_url
    return database_url.removeprefix("sqlite:///")


def query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts; `?` placeholders on SQLite, `%s` on PostgreSQL (use `ph()` to write both)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(database_url), timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql.replace("%s", "?"), params)]
        finally:
            conn.close()
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        names = [column.name for column in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def execute(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement that writes, committed (placeholders as in `query`)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(database_url), timeout=30)
        try:
            with conn:
                conn.execute(sql.replace("%s", "?"), params)
        finally:
            conn.close()
        return
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


def scalar(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = query(database_url, sql, params)
    assert len(rows) == 1, rows
    return next(iter(rows[0].values()))


def _normalised(row: dict[str, Any]) -> dict[str, Any]:
    # SQLite has no booleans: 0/1 there, False/True on PostgreSQL.
    return {k: int(v) if isinstance(v, bool) else v for k, v in row.items()}


def dump_projections(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every projection table, ordered by its primary key."""
    return {
        table: [
            _normalised(r) for r in query(database_url, f"SELECT * FROM {table} ORDER BY {', '.join(key)}")
        ]
        for table, key in PROJECTION_PRIMARY_KEYS.items()
    }


def event_count(database_url: str) -> int:
    return int(scalar(database_url, f"SELECT COUNT(*) AS n FROM {EVENTS_TABLE}"))


def history_rows(database_url: str, store: str) -> list[dict[str, Any]]:
    return [
        _normalised(r)
        for r in query(
            database_url,
            "SELECT * FROM ledger_history WHERE store_id = %s ORDER BY position, line_no",
            (store,),
        )
    ]


def level_rows(database_url: str, store: str) -> dict[str, dict[str, Any]]:
    rows = query(database_url, "SELECT * FROM ledger_levels WHERE store_id = %s", (store,))
    return {row["sku"]: row for row in rows}
