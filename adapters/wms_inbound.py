"""Transfers into a WMS warehouse: the incoming units announced as an expected receipt, and the
receipt recorded when the WMS reports their arrival.

A `stock.transfer` to a store mapped to a WMS warehouse records, at that store, a
`stock.transfer_incoming` entry: incoming += qty. The WMS is the place with a field for that
figure (the warehouse must expect the goods at its dock), so the push target `wms-inbound` sends
one expected receipt per transfer (`POST /api/v1/inbound`, `external_id` = store and transfer id,
with `Idempotency-Key`: a retried push creates none twice). Polling then reads each open one
(`GET /api/v1/inbound/{id}`); once `RECEIVED`, a `stock.receipt` with the transfer's id records
what was counted in at the dock (`received_qty`): on_hand += qty and incoming -= qty. Units that
did not arrive stay incoming, where the console's explain shows them by transfer. `CANCELLED`
records nothing and raises an alert: whether the goods went back or were lost is a person's call.

The endpoints are the project's own description (Inflow publishes no document: seed 002 names only
stock and picking orders); devtools/fakes/wms.py serves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.db import journal, now_text, to_the_back, transaction
from adapters.mappings import MappingError, Mappings
from adapters.masking import secret_safe_logger
from adapters.outbound import Failure, Item, TargetUnavailable
from adapters.sink import EventSink, EventsRefused
from adapters.wms import PRINCIPAL, SOURCE, SYSTEM, WmsClient
from adapters.wms_articles import ArticleCollision, article_of, colliding_articles, collision
from ledger.domain.model import Entry, EventType, Line, Outcome, StockEvent
from ledger.sql import SqlTx

log = secret_safe_logger("adapters.wms_inbound")

INBOUND_KEY = "inbound:"
FINAL_STATUSES = frozenset({"RECEIVED", "CANCELLED"})
ALERT_STATUSES = frozenset({"CANCELLED", "RECEIVED_NOTHING"})  # the units stay incoming
REFUSED_ALERTS_MAX = 1_000  # receipts the ledger refused, remembered so as to alert each once


@dataclass(frozen=True, slots=True)
class Expected:
    external_id: str
    wms_inbound_id: str
    store_id: str
    transfer_id: str
    lines: list[list[Any]]


class WmsInboundTarget:
    name = "wms-inbound"
    batch_items_max = 20

    def __init__(self, recorder: Any, mappings: Mappings, client: WmsClient) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self._created: list[Expected] = []

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        event = entry.event
        if (
            event.type is not EventType.TRANSFER_INCOMING
            or entry.outcome is not Outcome.ACCEPTED
            or not event.transfer_id
            or self.mappings.external(SYSTEM, "store", event.store_id) is None
        ):
            return ()
        return [f"{INBOUND_KEY}{event.store_id}|{event.transfer_id}"]

    def all_keys(self) -> Iterable[str]:
        return ()

    def load(self, keys: Sequence[str]) -> list[Item]:
        items = []
        with self.recorder.read_transaction() as tx:
            for key in keys:
                if not key.startswith(INBOUND_KEY):
                    continue
                store_id, transfer_id = key[len(INBOUND_KEY) :].split("|", 1)
                rows = tx.fetchall(
                    "SELECT sku, incoming_delta, reference FROM ledger_history WHERE store_id = %s "
                    "AND transfer_id = %s AND type = 'stock.transfer_incoming' AND outcome = 'accepted' "
                    "ORDER BY position, line_no",
                    (store_id, transfer_id),
                )
                lines = [
                    [row["sku"], int(row["incoming_delta"])] for row in rows if row["incoming_delta"] > 0
                ]
                from_store = rows[0]["reference"] if rows else None
                payload = {"store_id": store_id, "transfer_id": transfer_id, "from_store": from_store}
                items.append(Item(key, {**payload, "lines": lines}))
        return items

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        failures: dict[str, Failure] = {}
        done: set[str] = set()
        for item in items:
            try:
                failure = self._expect(item.payload)
            except TargetUnavailable as error:
                raise TargetUnavailable(str(error), error.retry_after_s, frozenset(done)) from error
            if failure is not None:
                failures[item.key] = failure
            else:
                done.add(item.key)
        return failures

    def _expect(self, payload: dict[str, Any]) -> Failure | None:
        if not payload["lines"]:
            return None
        warehouse = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if warehouse is None:
            return Failure(f"no wms warehouse mapped to {payload['store_id']}", permanent=True)
        external_id = f"{payload['store_id']}:{payload['transfer_id']}"[:256]
        body = {
            "external_id": external_id,
            "warehouse": warehouse.external_id,
            "transfer_id": payload["transfer_id"],
            "from": payload["from_store"],
            "lines": [],
        }
        try:
            body["lines"] = [self._wire_line(sku, qty) for sku, qty in payload["lines"]]
        except ArticleCollision as error:  # parked after the retries, naming it (adapters/wms_articles.py)
            return Failure(str(error))
        answer = self.client.request(
            "POST", "api/v1/inbound", json_body=body, headers={"Idempotency-Key": external_id}
        )
        if answer.status not in (200, 201):
            return Failure(f"expected receipt {external_id}: HTTP {answer.status}: {answer.body[:200]!r}")
        created = answer.json() or {}
        self._created.append(
            Expected(
                external_id,
                str(created["id"]),
                payload["store_id"],
                payload["transfer_id"],
                payload["lines"],
            )
        )
        return None

    def _wire_line(self, sku: str, qty: int) -> dict[str, Any]:
        return {"sku": article_of(self.mappings, sku), "qty": qty, "uom": "unit"}

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        stamp = now_text()
        for expected in self._created:
            tx.execute(
                "INSERT INTO adapter_wms_inbound (external_id, wms_inbound_id, store_id, transfer_id, "
                "lines, status, final, updated_at) VALUES (%s, %s, %s, %s, %s, 'EXPECTED', 0, %s) "
                "ON CONFLICT (external_id) DO NOTHING",
                (
                    expected.external_id,
                    expected.wms_inbound_id,
                    expected.store_id,
                    expected.transfer_id,
                    orjson.dumps(expected.lines).decode(),
                    stamp,
                ),
            )
        self._created.clear()


class WmsArrivals:
    """Reads the open expected receipts; records the receipt of those the WMS has received."""

    def __init__(
        self, recorder: Any, mappings: Mappings, sink: EventSink, client: WmsClient, poll_max: int = 200
    ) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.sink = sink
        self.client = client
        self.poll_max = poll_max
        self._alerted: set[str] = set()  # refused receipts alerted in this process

    def poll(self) -> int:
        """Returns how many expected receipts reached a final status."""
        with transaction(self.recorder) as tx:
            rows = tx.fetchall(
                "SELECT * FROM adapter_wms_inbound WHERE final = 0 ORDER BY updated_at LIMIT %s",
                (self.poll_max,),
            )
        finished = 0
        still_open: list[str] = []
        shared = self.mappings.shared(SYSTEM, "sku")  # loaded by an older release: refused since
        # An article that may be either of two SKUs: one mapped to it, the other named so.
        colliding = colliding_articles(self.mappings, self.recorder) if rows else {}
        for row in rows:
            body = self.client.inbound(row["wms_inbound_id"])
            status = str((body or {}).get("status"))
            if body is None or status not in FINAL_STATUSES:
                still_open.append(row["external_id"])
                continue
            try:
                receipts = self._receipts(row, body, shared, colliding) if status == "RECEIVED" else []
            except MappingError as error:  # kept open: the next poll, once the mapping is put right
                self._refused(row, str(error), "not recorded")
                still_open.append(row["external_id"])
                continue
            if receipts:
                # Recorded first: if the ledger is unreachable, the next poll tries again.
                try:
                    self.sink.record(receipts)
                except EventsRefused as error:  # the next poll, after the others: it holds none back
                    self._refused(row, str(error))
                    still_open.append(row["external_id"])
                    continue
            self._finish(row, status if receipts or status == "CANCELLED" else "RECEIVED_NOTHING")
            finished += 1
        to_the_back(self.recorder, "adapter_wms_inbound", "external_id", still_open)
        return finished

    def _refused(self, row: Any, reason: str, what: str = "refused by the ledger") -> None:
        """An ALERT the first time in this process; the receipt is tried again at each poll (a
        mapping put right meanwhile makes other events of it)."""
        log.error("wms inbound %s: receipt %s: %s", row["wms_inbound_id"], what, reason)
        if row["external_id"] in self._alerted:
            return
        if len(self._alerted) >= REFUSED_ALERTS_MAX:
            self._alerted.clear()  # alerted again, at worst
        self._alerted.add(row["external_id"])
        with transaction(self.recorder) as tx:
            journal(tx, SYSTEM, "alert", row["wms_inbound_id"], f"receipt {what}: {reason}")

    def _receipts(
        self, row: Any, body: dict[str, Any], shared: dict[str, list[str]], colliding: dict[str, str]
    ) -> list[StockEvent]:
        """What was counted in. Up to what the transfer sent, a receipt of the transfer (it moves
        those units from incoming to on hand); beyond it (more than was sent, or a SKU it did not
        send), a plain receipt: every counted unit is on hand, and incoming never goes below zero.
        An article mapped from two SKUs (`shared`), or mapped from one and also another's own name
        (`colliding`, adapters/wms_articles.py), is MappingError: it would go to one of them."""
        counted: dict[str, int] = {}
        for line in body.get("lines") or []:
            article, qty = str(line.get("sku")), line.get("received_qty")
            if isinstance(qty, int) and qty > 0:
                if article in shared:
                    raise self.mappings.shared_error(SYSTEM, "sku", article, shared[article])
                if article in colliding:
                    raise ArticleCollision(collision(article, colliding[article]))
                sku = self.mappings.local(SYSTEM, "sku", article) or article
                counted[sku] = counted.get(sku, 0) + qty
        sent: dict[str, int] = {}
        for sku, qty in orjson.loads(row["lines"]):
            sent[sku] = sent.get(sku, 0) + int(qty)
        of_transfer = {sku: min(qty, sent.get(sku, 0)) for sku, qty in counted.items()}
        surplus = {sku: qty - of_transfer[sku] for sku, qty in counted.items()}
        receipts = []
        if any(of_transfer.values()):
            receipts.append(self._receipt(row, "RECEIVED", of_transfer, row["transfer_id"]))
        if any(surplus.values()):
            receipts.append(self._receipt(row, "SURPLUS", surplus, None))
        return receipts

    def _receipt(self, row: Any, part: str, lines: dict[str, int], transfer_id: str | None) -> StockEvent:
        return StockEvent(
            event_id=f"wms-inbound:{row['wms_inbound_id']}:{part}"[:256],
            source=SOURCE,
            type=EventType.RECEIPT,
            time=datetime.now(UTC),
            store_id=row["store_id"],
            lines=tuple(Line(sku, qty) for sku, qty in lines.items() if qty > 0),
            transfer_id=transfer_id,
            reference=(
                f"WMS received {row['wms_inbound_id']}"
                + ("" if transfer_id else f", beyond transfer {row['transfer_id']}")
            )[:256],
            principal=PRINCIPAL,
        )

    def _finish(self, row: Any, status: str) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_wms_inbound SET status = %s, final = 1, updated_at = %s "
                "WHERE external_id = %s",
                (status, now_text(), row["external_id"]),
            )
            journal(tx, SYSTEM, "inbound", row["wms_inbound_id"], f"transfer {row['transfer_id']}: {status}")
            if status in ALERT_STATUSES:
                what = "was cancelled" if status == "CANCELLED" else "was received with nothing counted"
                detail = (
                    f"expected receipt {row['wms_inbound_id']} of transfer {row['transfer_id']} to "
                    f"{row['store_id']} {what} in the WMS: its units stay incoming in the ledger"
                )
                journal(tx, SYSTEM, "alert", row["wms_inbound_id"], detail)
                log.error("ALERT wms %s", detail)
