"""Reconciliation: compare the ledger's on-hand levels with an external snapshot, report, optionally correct.

A snapshot is a set of (store, SKU) -> on-hand units in the ledger's base units: from a CSV file
(`store_id,sku,on_hand[,uom]`; a `uom` other than the base unit is converted by the `csv` unit
table) or from MoySklad's stock report (`stock` of each mapped product or variant, per mapped
store). Every (store, SKU) on either side is compared; the report lists those that differ:
ledger, external, difference (external - ledger), as CSV and JSON.

With `apply`, when the external side is the master, the ledger records one `stock.count` event per
store (on_hand := external) for the SKUs that differ. When the ledger is the master, nothing is
recorded in the ledger: the report is the list of corrections for the external system (for
Bitrix, a full push does it). Event ids are derived from the run id, so applying the same run
twice records nothing new.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.mappings import Mappings
from adapters.moysklad import SYSTEM as MOYSKLAD
from adapters.moysklad import MoySkladClient, entity_id
from adapters.sink import EventSink
from ledger.domain.model import EventType, Line, StockEvent
from ledger.intake.envelope import ID_PATTERN
from ledger.sql import chunks

log = logging.getLogger("adapters.reconcile")

SOURCE_PREFIX = "reconcile"
LINES_PER_EVENT_MAX = 1000
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Discrepancy:
    store_id: str
    sku: str
    ledger: int
    external: int

    @property
    def difference(self) -> int:
        return self.external - self.ledger


@dataclass(slots=True)
class Report:
    run_id: str
    source: str
    compared: int
    discrepancies: list[Discrepancy]
    applied_events: int = 0


def read_csv_snapshot(path: Path, mappings: Mappings | None = None) -> dict[tuple[str, str], int]:
    snapshot: dict[tuple[str, str], int] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for column in ("store_id", "sku", "on_hand"):
            if column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: the header must name store_id, sku, on_hand (and optionally uom)")
        for line_no, row in enumerate(reader, start=2):
            store_id, sku = (row["store_id"] or "").strip(), (row["sku"] or "").strip()
            if not ID_PATTERN.fullmatch(store_id) or not ID_PATTERN.fullmatch(sku):
                raise ValueError(f"{path}:{line_no}: store_id and sku must be ledger ids")
            try:
                qty = int((row["on_hand"] or "").strip())
            except ValueError:
                raise ValueError(f"{path}:{line_no}: on_hand must be an integer") from None
            uom = (row.get("uom") or "").strip()
            if uom and mappings is not None:
                unit = mappings.unit("csv", sku)
                if unit is None or unit[0] != uom:
                    raise ValueError(
                        f"{path}:{line_no}: unknown unit {uom!r} for {sku} (load a csv,unit mapping)"
                    )
                qty *= unit[1]
            snapshot[(store_id, sku)] = snapshot.get((store_id, sku), 0) + qty
    return snapshot


def read_moysklad_snapshot(
    client: MoySkladClient, mappings: Mappings, progress: Progress | None = None
) -> dict[tuple[str, str], int]:
    """`stock` of every mapped product/variant in every mapped store (rows of unmapped ones are skipped)."""
    snapshot: dict[tuple[str, str], int] = {}
    for store_id, ref in sorted(mappings.all(MOYSKLAD, "store").items()):
        skipped = 0
        for row in client.stock_rows(ref.external_id):
            _, assortment_uuid = entity_id(row["meta"]["href"])
            sku = mappings.local(MOYSKLAD, "sku", assortment_uuid)
            if sku is None:
                skipped += 1
                continue
            snapshot[(store_id, sku)] = mappings.to_base_units(MOYSKLAD, sku, row.get("stock") or 0)
        if skipped:
            log.info("moysklad store %s: %d report rows have no SKU mapping, skipped", store_id, skipped)
        if progress:
            progress(1)
    return snapshot


def ledger_levels(recorder: Any, stores: Iterable[str]) -> dict[tuple[str, str], int]:
    levels: dict[tuple[str, str], int] = {}
    with recorder.read_transaction() as tx:
        for store_id in sorted(set(stores)):
            for row in tx.fetchall("SELECT sku, on_hand FROM ledger_levels WHERE store_id = %s", (store_id,)):
                levels[(store_id, row["sku"])] = int(row["on_hand"])
    return levels


def compare(
    ledger: dict[tuple[str, str], int], external: dict[tuple[str, str], int], progress: Progress | None = None
) -> tuple[int, list[Discrepancy]]:
    keys = sorted(set(ledger) | set(external))
    found = []
    for index, key in enumerate(keys, start=1):
        ours, theirs = ledger.get(key, 0), external.get(key, 0)
        if ours != theirs:
            found.append(Discrepancy(key[0], key[1], ours, theirs))
        if progress and index % 1000 == 0:
            progress(1000)
    if progress:
        progress(len(keys) % 1000)
    return len(keys), found


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"reconcile-{report.source}-{report.run_id}"
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["store_id", "sku", "ledger", "external", "difference"])
        for d in report.discrepancies:
            writer.writerow([d.store_id, d.sku, d.ledger, d.external, d.difference])
    json_path.write_text(
        json.dumps(
            {
                "run_id": report.run_id,
                "source": report.source,
                "compared": report.compared,
                "discrepancy_count": len(report.discrepancies),
                "applied_events": report.applied_events,
                "discrepancies": [{**asdict(d), "difference": d.difference} for d in report.discrepancies],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return csv_path, json_path


def count_events(report: Report) -> list[StockEvent]:
    """stock.count events that set the ledger's on_hand to the external figures (external is master)."""
    per_store: dict[str, list[Line]] = {}
    for d in report.discrepancies:
        per_store.setdefault(d.store_id, []).append(Line(d.sku, max(0, d.external)))
    events = []
    now = datetime.now(UTC)
    for store_id, lines in sorted(per_store.items()):
        for number, part in enumerate(chunks(lines, LINES_PER_EVENT_MAX)):
            events.append(
                StockEvent(
                    event_id=f"reconcile:{report.run_id}:{store_id}:{number}"[:256],
                    source=f"{SOURCE_PREFIX}/{report.source}",
                    type=EventType.COUNT,
                    time=now,
                    store_id=store_id,
                    lines=tuple(part),
                    reference=f"reconciliation {report.run_id} against {report.source}"[:256],
                )
            )
    return events


def reconcile(
    recorder: Any,
    external: dict[tuple[str, str], int],
    *,
    source: str,
    run_id: str,
    stores: Iterable[str] | None = None,
    apply_master: str | None = None,
    sink: EventSink | None = None,
    progress: Progress | None = None,
) -> Report:
    """Compares (the given stores, else every store of the snapshot) and applies if asked."""
    compared_stores = set(stores) if stores is not None else {store for store, _ in external}
    ours = ledger_levels(recorder, compared_stores)
    theirs = {key: qty for key, qty in external.items() if key[0] in compared_stores}
    compared, found = compare(ours, theirs, progress)
    report = Report(run_id, source, compared, found)
    if apply_master == "external" and found:
        if sink is None:
            raise ValueError("applying needs a ledger to record the stock.count events in")
        events = count_events(report)
        for part in chunks(events, 100):
            sink.record(list(part))
        report.applied_events = len(events)
    return report
