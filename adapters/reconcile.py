"""Reconciliation: compare the ledger's on-hand levels with an external snapshot and report the differences.

A report never changes the ledger. It lists, for the stores compared, every (store, SKU) the
snapshot covers whose figure differs from the ledger's: ledger, external, difference (external -
ledger, a negative external figure counted as 0). What the snapshot does not cover is not
compared: the pairs the ledger holds stock of are listed as left untouched (snapshots.py says
what a snapshot covers). The report is written as CSV and JSON for review and stored in the
database under its run id (reconcile_runs.py); `ledger reconcile --apply RUN` then records exactly
its lines (reconcile_apply.py), never a new read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.db import now_text
from adapters.snapshots import Snapshot

MASTERS = ("external", "ledger")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    store_id: str
    sku: str
    ledger_units: int
    external_units: int

    @property
    def difference_units(self) -> int:
        """What applying the line moves the ledger's on-hand by (to the external figure, at least 0)."""
        return max(0, self.external_units) - self.ledger_units


@dataclass(frozen=True, slots=True)
class Untouched:
    """A pair the ledger holds stock of that the snapshot does not cover."""

    store_id: str
    sku: str
    ledger_units: int


@dataclass(slots=True)
class Report:
    run_id: str
    source: str
    description: str
    master: str
    stores: list[str]
    absent_as_zero: bool
    compared: int  # pairs compared (covered by the snapshot)
    ledger_skus: int  # pairs the ledger holds in the stores compared, for the share limit
    discrepancies: list[Discrepancy]
    untouched: list[Untouched]
    created_at: str = field(default_factory=now_text)
    applied_at: str | None = None
    applied_events: int = 0


def ledger_levels(recorder: Any, stores: Iterable[str]) -> dict[tuple[str, str], int]:
    levels: dict[tuple[str, str], int] = {}
    with recorder.read_transaction() as tx:
        for store_id in sorted(set(stores)):
            for row in tx.fetchall("SELECT sku, on_hand FROM ledger_levels WHERE store_id = %s", (store_id,)):
                levels[(store_id, row["sku"])] = int(row["on_hand"])
    return levels


def make_report(
    recorder: Any,
    snapshot: Snapshot,
    *,
    run_id: str,
    stores: Iterable[str] | None = None,
    master: str = "external",
) -> Report:
    """Compares the given stores (else every store of the snapshot); changes nothing."""
    if master not in MASTERS:
        raise ValueError(f"the master is one of {MASTERS}, not {master!r}")
    compared_stores = sorted(set(stores) if stores is not None else snapshot.stores)
    ours = ledger_levels(recorder, compared_stores)
    theirs = [key for key in snapshot.on_hand if key[0] in compared_stores]
    discrepancies, untouched, compared = [], [], 0
    for store_id, sku in sorted(set(ours) | set(theirs)):
        ledger_units = ours.get((store_id, sku), 0)
        if not snapshot.covers(store_id, sku):
            if ledger_units:
                untouched.append(Untouched(store_id, sku, ledger_units))
            continue
        compared += 1
        line = Discrepancy(store_id, sku, ledger_units, snapshot.units(store_id, sku))
        if line.difference_units:
            discrepancies.append(line)
    return Report(
        run_id=run_id,
        source=snapshot.source,
        description=snapshot.description,
        master=master,
        stores=compared_stores,
        absent_as_zero=bool(snapshot.complete_stores),
        compared=compared,
        # The SKUs the compared stores hold, on either side: a store's old SKUs at 0 on both sides
        # would water down the share of them a report changes, and with it the need for --force.
        ledger_skus=sum(
            1
            for store_id, sku in set(ours) | set(theirs)
            if ours.get((store_id, sku)) or snapshot.units(store_id, sku)
        ),
        discrepancies=discrepancies,
        untouched=untouched,
    )


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """`reconcile-<source>-<run>.csv` (the lines) and `.json` (everything), for review."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Named by appending, not Path.with_suffix: a run id may hold dots (`count.1`), and with_suffix
    # took its last one for a suffix, so that runs `count.1` and `count.2` wrote the same files.
    stem = f"reconcile-{report.source}-{report.run_id}"
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["store_id", "sku", "ledger", "external", "difference"])
        for d in report.discrepancies:
            writer.writerow([d.store_id, d.sku, d.ledger_units, d.external_units, d.difference_units])
    body = {
        "run_id": report.run_id,
        "source": report.source,
        "description": report.description,
        "master": report.master,
        "stores": report.stores,
        "absent_as_zero": report.absent_as_zero,
        "created_at": report.created_at,
        "compared": report.compared,
        "discrepancy_count": len(report.discrepancies),
        "discrepancies": [
            {**asdict(d), "difference_units": d.difference_units} for d in report.discrepancies
        ],
        "untouched_count": len(report.untouched),
        "untouched": [asdict(u) for u in report.untouched],
    }
    json_path.write_text(json.dumps(body, indent=2), encoding="utf-8")
    return csv_path, json_path
