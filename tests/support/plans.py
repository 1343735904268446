"""The query plans of a read, for the tests that check a read follows an index on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from ledger.service import Ledger
from ledger.sql import Deferred, Row, SqlTx


class RecordingTx(SqlTx):
    """Runs every statement as asked, and keeps it to be EXPLAINed (those deferred too)."""

    def __init__(self, tx: SqlTx) -> None:
        super().__init__(tx.cursor, qmark=tx.qmark, connection=tx.connection)
        self.statements: list[tuple[str, list[Any]]] = []

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.statements.append((sql, list(params)))
        return super().fetchall(sql, params)

    def defer(self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> Deferred:
        self.statements.append((sql, list(params)))
        return Deferred(rows=super().fetchall(sql, params, prepare=prepare))


def answer_and_plans(ledger: Ledger, read: Any) -> tuple[Any, list[str]]:
    """What `read(tx)` answers, and each statement it sent as its plan in text: SQLite's EXPLAIN
    QUERY PLAN details, or PostgreSQL's plan nodes (type, index, conditions) one per line."""
    with ledger.recorder.read_transaction() as tx:
        recording = RecordingTx(tx)
        answer = read(recording)
        plans = [plan_of(tx, sql, params) for sql, params in recording.statements]
    return answer, plans


def plan_of(tx: SqlTx, sql: str, params: Sequence[Any]) -> str:
    if tx.qmark:
        rows = tx.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(row["detail"] for row in rows)
    [row] = tx.fetchall(f"EXPLAIN (FORMAT JSON) {sql}", params)
    plan = row["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return "\n".join(_pg_nodes(plan[0]["Plan"]))


def _pg_nodes(node: dict[str, Any]) -> Iterator[str]:
    keys = ("Node Type", "Relation Name", "Index Name", "Index Cond", "Filter", "Sort Key")
    yield " | ".join(f"{key}: {node[key]}" for key in keys if key in node)
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child)


def statistics_as_in_production(ledger: Ledger) -> None:
    """Gives the tables the statistics production would: PostgreSQL's autovacuum analyzes a table
    soon after it has grown, while SQLite has no such thing and the ledger never analyzes it, so
    there every plan is made without statistics, as it is here."""
    if ledger.recorder.qmark:
        return
    with ledger.recorder.plain_transaction() as tx:
        tx.execute("ANALYZE")
