"""Reconciliation reports kept by run id, so that `--apply RUN` records what was reviewed, not a new read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapters.db import now_text, transaction
from adapters.reconcile import Discrepancy, Report, Untouched
from ledger.sql import SqlTx, chunks

ROWS_PER_STATEMENT = 1000
APPLY_CLAIM_WAIT_S = 30.0  # how long beginning an apply waits for another one's check and mark
APPLY_CLAIM_LOCK_KEY = 0x1ED6E9  # a PostgreSQL advisory lock key of this service's own, after the ledger's


class UnknownRun(LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no reconciliation report has run id {run_id!r}")
        self.run_id = run_id


class ApplyClaimTimeout(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(
            f"another reconciliation report's apply was beginning for over {wait_s:g} s: nothing recorded; "
            "apply this one again"
        )


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


@dataclass(frozen=True, slots=True)
class InTheWay:
    """Runs over any of a report's stores that stop it being applied now (both empty: none do)."""

    applied_since: list[str]  # applied after it was made: their corrections are not in its figures
    unfinished: list[str]  # begun and not marked applied: running now, or stopped partway


def in_the_way(recorder: Any, report: Report) -> InTheWay:
    with transaction(recorder) as tx:
        return _in_the_way(tx, report)


def claim_apply(recorder: Any, report: Report, wait_s: float = APPLY_CLAIM_WAIT_S) -> InTheWay:
    """Marks the report's apply begun, unless a run is in its way (then nothing is marked).

    The check and the mark are one short transaction, one at a time per database, so of two applies
    over one store begun at once the second sees the first's mark. No lock is held while the apply
    records: an apply that stops partway (a crash, a refusal) stays marked begun, and reports over
    its stores are refused until it is applied again, since its partial corrections may or may not
    be in their figures."""
    try:
        with transaction(recorder) as tx:
            if tx.qmark:  # a write first takes SQLite's write lock, waited for up to its busy timeout
                tx.execute(_TOUCH, (report.run_id,))
            else:
                tx.execute(f"SET LOCAL lock_timeout = '{max(1, round(wait_s * 1000))}ms'")
                tx.execute("SELECT pg_advisory_xact_lock(%s)", (APPLY_CLAIM_LOCK_KEY,))
            found = _in_the_way(tx, report)
            if not found.applied_since and not found.unfinished:
                tx.execute(
                    "UPDATE adapter_reconcile_runs SET apply_started_at = %s WHERE run_id = %s",
                    (now_text(), report.run_id),
                )
    except Exception as error:
        if _lock_not_available(error):
            raise ApplyClaimTimeout(wait_s) from None
        raise
    return found


_TOUCH = "UPDATE adapter_reconcile_runs SET apply_started_at = apply_started_at WHERE run_id = %s"


def _lock_not_available(error: BaseException) -> bool:
    """PostgreSQL's lock_timeout (SQLSTATE 55P03), whether or not the datastore wrapped it."""
    return any(getattr(e, "sqlstate", None) == "55P03" for e in (error, error.__cause__, error.__context__))


def _in_the_way(tx: SqlTx, report: Report) -> InTheWay:
    rows = tx.fetchall(
        "SELECT run_id, stores, applied_at FROM adapter_reconcile_runs WHERE run_id <> %s "
        "AND (applied_at > %s OR (applied_at IS NULL AND apply_started_at IS NOT NULL)) "
        "ORDER BY applied_at, run_id",
        (report.run_id, report.created_at),
    )
    overlapping = [row for row in rows if set(json.loads(row["stores"])) & set(report.stores)]
    return InTheWay(
        applied_since=[row["run_id"] for row in overlapping if row["applied_at"] is not None],
        unfinished=[row["run_id"] for row in overlapping if row["applied_at"] is None],
    )


def mark_applied(recorder: Any, run_id: str, events: int) -> str:
    applied_at = now_text()
    with transaction(recorder) as tx:
        tx.execute(
            "UPDATE adapter_reconcile_runs SET applied_at = %s, applied_events = %s WHERE run_id = %s",
            (applied_at, events, run_id),
        )
    return applied_at
