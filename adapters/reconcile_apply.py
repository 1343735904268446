"""Applying a reviewed reconciliation report: exactly its lines, within named limits, once.

`ledger reconcile --apply RUN` loads the report stored under RUN and records, when the external
side is the master, one `stock.adjustment` per store (1000 lines an event) moving each line's
on-hand by the difference shown in the report. Recording the reviewed difference, not the external
figure, keeps whatever the ledger recorded since the review (a sale at the till is not undone).
Event ids come from the run id, so applying a run twice records nothing new.

It refuses, with a typed error naming why:
- a report whose changes pass a named limit (a line moving more than `line_units_max` units, or
  more than `changed_share_max` of the compared stores' SKUs changed), unless forced;
- a report over stores another report was applied to after it was made (its ledger figures do
  not include that run's corrections, so its differences could correct the same thing twice);
- a report over stores whose apply another report began and did not end (running now, or stopped
  partway): checked and marked begun in one step (adapters/reconcile_runs.py), so that of two
  applies begun at once the second is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.reconcile import Discrepancy, Report
from adapters.reconcile_runs import claim_apply, mark_applied
from adapters.sink import EventSink
from ledger.access.scopes import ADAPTER_PRINCIPAL_PREFIX
from ledger.domain.model import EventType, Line, StockEvent
from ledger.sql import chunks

SOURCE_PREFIX = "reconcile"
PRINCIPAL = ADAPTER_PRINCIPAL_PREFIX + "reconcile"  # who recorded an applied report, in the history
LINES_PER_EVENT_MAX = 1000
EVENTS_PER_SUBMIT_MAX = 100


@dataclass(frozen=True, slots=True)
class ApplyLimits:
    line_units_max: int
    changed_share_max: float
    share_min_skus: int


class ChangeAboveLimits(Exception):
    def __init__(self, run_id: str, reasons: list[str]) -> None:
        super().__init__(f"report {run_id} changes more than the limits allow: " + "; ".join(reasons))
        self.run_id = run_id
        self.reasons = reasons


class ReportSuperseded(Exception):
    def __init__(self, run_id: str, applied_runs: list[str]) -> None:
        super().__init__(
            f"report {run_id} was made before report(s) {', '.join(applied_runs)} over the same stores "
            "were applied: its figures do not include their corrections; make a new report"
        )
        self.run_id = run_id
        self.applied_runs = applied_runs


class ApplyUnfinished(Exception):
    def __init__(self, run_id: str, unfinished_runs: list[str]) -> None:
        runs = ", ".join(unfinished_runs)
        super().__init__(
            f"the apply of report(s) {runs} over the same stores began and has not ended (it runs now, "
            f"or stopped partway): wait for it, or apply {runs} again to end it, then make a new report "
            f"rather than apply {run_id}"
        )
        self.run_id = run_id
        self.unfinished_runs = unfinished_runs


def reasons_to_force(report: Report, limits: ApplyLimits) -> list[str]:
    """Why the report's changes pass the named limits (empty: they do not)."""
    reasons = []
    big = [d for d in report.discrepancies if abs(d.difference_units) > limits.line_units_max]
    if big:
        named = ", ".join(f"{d.store_id}/{d.sku} {d.difference_units:+d}" for d in big[:5])
        reasons.append(
            f"{len(big)} line(s) move more than {limits.line_units_max} units "
            f"(LEDGER_ADAPTERS_RECONCILE_LINE_UNITS_MAX): {named}" + (" ..." if len(big) > 5 else "")
        )
    if report.ledger_skus >= limits.share_min_skus:
        share = len(report.discrepancies) / report.ledger_skus
        if share > limits.changed_share_max:
            reasons.append(
                f"{len(report.discrepancies)} of the {report.ledger_skus} SKUs of the stores compared "
                f"change ({share:.0%}, more than LEDGER_ADAPTERS_RECONCILE_CHANGED_SHARE_MAX "
                f"{limits.changed_share_max:.0%})"
            )
    return reasons


def adjustment_events(report: Report) -> list[StockEvent]:
    """stock.adjustment events moving each line by its reviewed difference (external is master)."""
    per_store: dict[str, list[Discrepancy]] = {}
    for d in report.discrepancies:
        per_store.setdefault(d.store_id, []).append(d)
    events = []
    now = datetime.now(UTC)
    for store_id, lines in sorted(per_store.items()):
        for number, part in enumerate(chunks(lines, LINES_PER_EVENT_MAX)):
            events.append(
                StockEvent(
                    event_id=f"reconcile:{report.run_id}:{store_id}:{number}"[:256],
                    source=f"{SOURCE_PREFIX}/{report.source}",
                    type=EventType.ADJUSTMENT,
                    time=now,
                    store_id=store_id,
                    lines=tuple(Line(d.sku, d.difference_units) for d in part),
                    reference=f"reconciliation {report.run_id} against {report.source}"[:256],
                    reason=f"reviewed reconciliation {report.run_id}: {report.description}"[:256],
                    principal=PRINCIPAL,
                )
            )
    return events


def apply_report(
    recorder: Any, report: Report, sink: EventSink, limits: ApplyLimits, *, force: bool = False
) -> int:
    """Records the report's lines; returns how many events it submitted (0 when the ledger is master)."""
    if report.master != "external":
        return 0
    reasons = reasons_to_force(report, limits)
    if reasons and not force:
        raise ChangeAboveLimits(report.run_id, reasons)
    in_the_way = claim_apply(recorder, report)  # nothing is claimed when a run is in its way
    if in_the_way.unfinished:
        raise ApplyUnfinished(report.run_id, in_the_way.unfinished)
    if in_the_way.applied_since:
        raise ReportSuperseded(report.run_id, in_the_way.applied_since)
    events = adjustment_events(report)
    for part in chunks(events, EVENTS_PER_SUBMIT_MAX):
        sink.record(list(part))
    report.applied_at = mark_applied(recorder, report.run_id, len(events))
    report.applied_events = len(events)
    return len(events)
