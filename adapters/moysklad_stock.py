"""MoySklad's stock webhook (`webhookstock`) makes a reconciliation report, never an apply.

md/dictionaries/_webhookstock.md: every 1 to 5 minutes in which stock changed, MoySklad posts
`{"accountId", "stockType": "stock", "reportType": "all"|"bystore", "reportUrl"}`; the reportUrl
is the short stock report (md/reports/_report_stock.md, "Краткий отчет об остатках") with
`changedSince`: one JSON array, no paging, the *current* figure (not a delta) of every assortment
whose stock changed in that interval, zero lines included; `bystore` rows carry `storeId` (a row
with `storeId` null is reserve bound to no store, and is skipped).

The rows are a partial snapshot (snapshots.py): the mapped (store, SKU) pairs they list, and no
others. A 0 among them is read again from report/stock/all first: the short report says 0 for a
product archived or deleted in its interval, whatever is still on the shelf. The report is made and
stored as `ledger reconcile --source moysklad` would store it, under the run id
`ms-stock-<digest of the reportUrl>` (a redelivery or a reprocessing finds it made and makes
nothing), and announced in the journal and the log. Applying it stays a person's decision:
`ledger reconcile --apply RUN` (MoySklad's figures lag the ledger by those minutes, so a
difference may only be an event that reached the ledger first).

The reportUrl is followed only when it is under LEDGER_MOYSKLAD_BASE_URL (the client refuses
anything else before a connection is made: adapters/http.py), so the token goes nowhere else.
"""

from __future__ import annotations

import hashlib
from typing import Any

from adapters.db import journal, transaction
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM, MoySkladClient, entity_id
from adapters.outbound import TargetUnavailable
from adapters.reconcile import Report, make_report
from adapters.reconcile_runs import RunExists, save_report
from adapters.snapshots import Snapshot
from ledger.sql import chunks

log = secret_safe_logger("adapters.moysklad_stock")

RUN_PREFIX = "ms-stock-"
REPORT_LINES_SHOWN = 10  # lines of a report quoted in its journal entry
# A short report's zero lines read again per report/stock/all request (each names its product's
# address in the URL: a few kilobytes at most).
ZEROS_PER_READ_MAX = 40


def is_stock_notification(delivery: dict[str, Any]) -> bool:
    return isinstance(delivery.get("reportUrl"), str)


def run_id_for(report_url: str) -> str:
    return RUN_PREFIX + hashlib.sha256(report_url.encode()).hexdigest()[:16]


class StockWebhook:
    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client

    def handle(self, delivery: dict[str, Any]) -> Report | None:
        """Reads the report the notification points to and stores a reconciliation report of it;
        None if that notification made one before, or nothing mapped changed."""
        report_url = delivery["reportUrl"]
        run_id = run_id_for(report_url)
        # The documented reportUrl carries `changedSince=YYYY-MM-DD HH:MM:SS` with a raw space, which
        # no HTTP request line may hold; encoded, it is the same URL.
        answer = self.client.request(
            "GET", report_url.replace(" ", "%20")
        )  # ForeignUrl unless under the base
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad short stock report: HTTP {answer.status}")
        snapshot = self.snapshot(answer.json() or [], report_url)
        if not snapshot.on_hand:
            log.info("stock notification %s: no mapped store/SKU changed", run_id)
            return None
        report = make_report(self.recorder, snapshot, run_id=run_id, stores=sorted(snapshot.stores))
        try:
            save_report(self.recorder, report)
        except RunExists:
            log.info("stock notification %s: its report was made before", run_id)
            return None
        summary = (
            f"{len(report.discrepancies)} of {report.compared} changed store/SKU pair(s) differ"
            + "".join(
                f"; {d.store_id}/{d.sku} ledger {d.ledger_units} moysklad {d.external_units}"
                for d in report.discrepancies[:REPORT_LINES_SHOWN]
            )
            + (f"; review, then: ledger reconcile --apply {run_id}" if report.discrepancies else "")
        )
        with transaction(self.recorder) as tx:
            journal(tx, SYSTEM, "reconcile", f"stock notification, run {run_id}", summary)
        log.info("stock notification: report %s: %s", run_id, summary)
        return report

    def snapshot(self, rows: list[dict[str, Any]], report_url: str) -> Snapshot:
        mappings = self.mappings.frozen()
        # Rows are read back by store and product: one shared by two ledger ids (loaded by an older
        # release) would give one of them the stock of both. MappingError names it; no report.
        mappings.stores_one_to_one(SYSTEM)
        mappings.one_to_one(SYSTEM, "sku")
        on_hand: dict[tuple[str, str], int] = {}
        zeros: dict[str, dict[str, tuple[str, str]]] = {}  # store uuid -> assortment uuid -> pair
        for row in rows:
            store_uuid, assortment_uuid = row.get("storeId"), row.get("assortmentId")
            store_id = mappings.local(SYSTEM, "store", store_uuid) if store_uuid else None
            sku = mappings.local(SYSTEM, "sku", assortment_uuid) if assortment_uuid else None
            if store_id is None or sku is None or row.get("stock") is None:
                continue  # unmapped, reserve bound to no store, or still being recomputed (null)
            if store_uuid and assortment_uuid and row["stock"] == 0:
                zeros.setdefault(store_uuid, {})[assortment_uuid] = (store_id, sku)
                continue
            on_hand[(store_id, sku)] = mappings.to_base_units(SYSTEM, sku, row["stock"])
        for store_uuid, pairs in sorted(zeros.items()):
            figures = self._zeros_read_again(mappings, store_uuid, pairs)
            if not figures:
                self._check_store(store_uuid, sorted({store_id for store_id, _sku in pairs.values()}))
            on_hand.update(figures)
        return Snapshot("moysklad", f"moysklad stock notification ({report_url})", on_hand)

    def _check_store(self, store_uuid: str, store_ids: list[str]) -> None:
        """The short report lists every row of a store deleted in its interval at 0, and the full
        report none of them: its pairs are left out, and nothing else would say that a mapped
        store is gone (its figures would never be compared again). So when none of a store's zeros
        is found in the full report, the store itself is read (`GET entity/store/{id}`): a 404
        raises an ALERT naming it and the ledger store mapped to it, once (md/_errors.md 1021)."""
        answer = self.client.request("GET", f"entity/store/{store_uuid}")
        if answer.status != 404:
            return  # it exists (its products sold out, or not recomputed): the pairs are left out as ever
        subject = f"moysklad store {store_uuid}"
        detail = (
            f"deleted in MoySklad but still mapped from {', '.join(store_ids)}: its stock is not "
            "compared (the short report lists it at 0, which is not taken); map the ledger store to "
            "another MoySklad store, or take the row out (mappings load)"
        )
        with transaction(self.recorder) as tx:
            said = tx.fetchone(
                "SELECT 1 AS said FROM adapter_journal WHERE adapter = %s AND kind = 'alert' "
                "AND subject = %s AND detail = %s LIMIT 1",
                (SYSTEM, subject, detail),
            )
            if said is None:
                journal(tx, SYSTEM, "alert", subject, detail)
        log.error("ALERT %s %s", subject, detail)

    def _zeros_read_again(
        self, mappings: Mappings, store_uuid: str, pairs: dict[str, tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The short report lists at 0 a product or variant archived or deleted in its interval,
        whatever stock it still has (md/reports/_report_stock.md: "если за запрашиваемый интервал
        был удален или архивирован товар или склад, то будет выведен остаток равный 0"): applied,
        that 0 wrote the shelf's units off. So each 0 is read again from report/stock/all (archived
        ones too, as a reconciliation reads them): its figure there, or, absent there (deleted, or
        not recomputed), unknown and left out."""
        figures: dict[tuple[str, str], int] = {}
        for part in chunks(sorted(pairs), ZEROS_PER_READ_MAX):
            kinds = []
            for assortment_uuid in part:
                ref = mappings.external(SYSTEM, "sku", pairs[assortment_uuid][1])
                kinds.append(((ref.external_type if ref else None) or "product", assortment_uuid))
            for row in self.client.stock_rows(store_uuid, kinds):
                _, assortment_uuid = entity_id(str((row.get("meta") or {}).get("href") or ""))
                if assortment_uuid in pairs and row.get("stock") is not None:
                    store_id, sku = pairs[assortment_uuid]
                    figures[(store_id, sku)] = mappings.to_base_units(SYSTEM, sku, row["stock"])
        return figures
