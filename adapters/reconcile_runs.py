"""Reconciliation reports kept by run id, so that `--apply RUN` records what was reviewed, not a new read."""

from __future__ import annotations

import json
from typing import Any

from adapters.db import now_text, transaction
from adapters.reconcile import Discrepancy, Report, Untouched
from ledger.sql import chunks

ROWS_PER_STATEMENT = 1000


class UnknownRun(LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no reconciliation report has run id {run_id!r}")
        self.run_id = run_id


class RunExists(ValueError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"a reconciliation report with run id {run_id!r} exists already")
        self.run_id = run_id


def save_report(recorder: Any, report: Report) -> None:
    with transaction(recorder) as tx:
        if tx.fetchone("SELECT 1 AS found FROM adapter_reconcile_runs WHERE run_id = %s", (report.run_id,)):
            raise RunExists(report.run_id)
        tx.execute(
            "INSERT INTO adapter_reconcile_runs (run_id, source, description, master, stores, "
            "absent_as_zero, compared, ledger_skus, untouched, created_at, applied_events) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
            (
                report.run_id,
                report.source,
                report.description,
                report.master,
                json.dumps(report.stores),
                int(report.absent_as_zero),
                report.compared,
                report.ledger_skus,
                json.dumps([[u.store_id, u.sku, u.ledger_units] for u in report.untouched]),
                report.created_at,
            ),
        )
        for part in chunks(report.discrepancies, ROWS_PER_STATEMENT):
            tx.executemany(
                "INSERT INTO adapter_reconcile_lines (run_id, store_id, sku, ledger_units, external_units) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(report.run_id, d.store_id, d.sku, d.ledger_units, d.external_units) for d in part],
            )


def load_report(recorder: Any, run_id: str) -> Report:
    with transaction(recorder) as tx:
        run = tx.fetchone("SELECT * FROM adapter_reconcile_runs WHERE run_id = %s", (run_id,))
        if run is None:
            raise UnknownRun(run_id)
        lines = tx.fetchall(
            "SELECT store_id, sku, ledger_units, external_units FROM adapter_reconcile_lines "
            "WHERE run_id = %s ORDER BY store_id, sku",
            (run_id,),
        )
    return Report(
        run_id=run["run_id"],
        source=run["source"],
        description=run["description"],
        master=run["master"],
        stores=list(json.loads(run["stores"])),
        absent_as_zero=bool(run["absent_as_zero"]),
        compared=int(run["compared"]),
        ledger_skus=int(run["ledger_skus"]),
        discrepancies=[
            Discrepancy(r["store_id"], r["sku"], int(r["ledger_units"]), int(r["external_units"]))
            for r in lines
        ],
        untouched=[Untouched(store, sku, int(units)) for store, sku, units in json.loads(run["untouched"])],
        created_at=run["created_at"],
        applied_at=run["applied_at"],
        applied_events=int(run["applied_events"]),
    )


def applied_since(recorder: Any, report: Report) -> list[str]:
    """Runs over any of the report's stores applied after it was made: their corrections are not
    in its ledger figures, so applying its differences now could correct the same thing twice."""
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT run_id, stores FROM adapter_reconcile_runs WHERE applied_at > %s AND run_id <> %s "
            "ORDER BY applied_at",
            (report.created_at, report.run_id),
        )
    return [row["run_id"] for row in rows if set(json.loads(row["stores"])) & set(report.stores)]


def mark_applied(recorder: Any, run_id: str, events: int) -> str:
    applied_at = now_text()
    with transaction(recorder) as tx:
        tx.execute(
            "UPDATE adapter_reconcile_runs SET applied_at = %s, applied_events = %s WHERE run_id = %s",
            (applied_at, events, run_id),
        )
    return applied_at
