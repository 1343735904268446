"""An Inflow-style WMS's picking statuses, in (seed 002): polled, or received by webhook.

Each goes through the status table (`adapter_status_map`, system `wms`, editable without a deploy):
the Bitrix status of the whole order (all its picking orders together) is queued for the Bitrix
worker (`sale.order.update`), and the rule's action runs: `release` (PICKING_ERROR: release the
picking order's reservation lines, and raise an alert: a log line, a metric, a journal entry; the
release itself is in the ledger's history with a reference naming the picking order) or `ship`
(record the picking order's lines as shipped under the reservation). A status the order is past
already (a late delivery) is left out. The picking orders themselves are made in adapters/wms.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.db import journal, now_text, to_the_back, transaction
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.outbound import enqueue
from adapters.sink import EventSink
from adapters.wms import PRINCIPAL, SOURCE, SYSTEM, WmsClient
from adapters.wms_codes import shipped_lines
from ledger.domain.model import EventType, Line, StockEvent

log = secret_safe_logger("adapters.wms")

FINAL_STATUSES = frozenset({"DELIVERED", "CANCELLED", "PICKING_ERROR"})
# Inflow's status machine is fixed (seed 002): NEW -> ASSIGNED -> PICKING -> PICKED -> PACKING ->
# SHIPPED -> DELIVERED; CANCELLED and PICKING_ERROR leave it before shipping.
PROGRESS = ("NEW", "ASSIGNED", "PICKING", "PICKED", "PACKING", "SHIPPED", "DELIVERED")
SHIPPED_OR_AFTER = frozenset({"SHIPPED", "DELIVERED"})
# How many times one status is decided again over what other adapters instances set meanwhile.
DECIDED_AGAIN_MAX = 3
# Orders in a row whose status could not be read or applied before a poll stops: one order that
# fails alone goes to the back and the others are polled; this many in a row is the WMS (or the
# ledger) down, and asking every other order would only wait out their timeouts.
POLL_FAILURES_IN_A_ROW_MAX = 3


class WmsStatusProcessor:
    """Applies a picking order's new status: status table, Bitrix status, release or shipment, alert."""

    def __init__(
        self,
        recorder: Any,
        mappings: Mappings,
        sink: EventSink,
        client: WmsClient | None = None,
        poll_orders_max: int = 200,
    ) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.sink = sink
        self.client = client
        self.poll_orders_max = poll_orders_max
        self._applying = threading.Lock()  # the poller and the inbox's deliveries, one at a time

    def handle_delivery(self, payload: Any) -> None:
        """A status webhook body: {"id": <wms order id>, "status": "PICKING"}."""
        if not isinstance(payload, dict) or not payload.get("id") or not payload.get("status"):
            raise ValueError("a WMS status delivery needs id and status")
        self.apply(str(payload["id"]), str(payload["status"]))

    def poll(self) -> int:
        """Reads the status of every open picking order; returns how many changed."""
        assert self.client is not None
        with transaction(self.recorder) as tx:
            rows = tx.fetchall(
                "SELECT wms_order_id, status FROM adapter_wms_orders WHERE final = 0 ORDER BY "
                "updated_at LIMIT %s",
                (self.poll_orders_max,),
            )
        changed = 0
        to_the_back_ids: list[str] = []
        failed: Exception | None = None
        failed_in_a_row = 0
        for row in rows:
            if failed_in_a_row >= POLL_FAILURES_IN_A_ROW_MAX:
                break  # the WMS (or the ledger) is down, not one order: the rest waits for the retry
            try:
                status = self.client.status(row["wms_order_id"])
                if status and status != row["status"]:
                    self.apply(row["wms_order_id"], status, polled_over=row["status"])
                    changed += 1
                    failed_in_a_row = 0
                    continue
                failed_in_a_row = 0
            except Exception as error:  # noqa: BLE001 - raised after the others were polled
                # One order that keeps failing (its status answered 5xx, its shipment refused) must
                # not keep the orders behind it from being polled: it goes to the back, and the poll
                # is failed (so retried with backoff) once the rest is done.
                log.warning("wms status of %s could not be applied: %s", row["wms_order_id"], error)
                failed = failed or error
                failed_in_a_row += 1
            to_the_back_ids.append(row["wms_order_id"])
        to_the_back(self.recorder, "adapter_wms_orders", "wms_order_id", to_the_back_ids)
        if failed is not None:
            raise failed
        return changed

    def apply(self, wms_order_id: str, status: str, polled_over: str | None = None) -> None:
        """Applies a status, one at a time in this process. A delivery's status that the order is
        past already (`_behind`) is left out, with a journal line; so is a poll's (`polled_over`:
        the status stored when the WMS was asked) once the order moved on meanwhile. A delivery
        can come late (the sender's retry after our 503, a slow queue), and a poll's answer can
        be overtaken by a delivery; applied as they came, a PICKING_ERROR after SHIPPED marked a
        shipped order final, released its lines again and sent Bitrix the older status, and
        polling, which skips final orders, never put it right. A poll over an unchanged order
        applies what the WMS says now. The status is set only over the one it was decided from:
        after another process's apply in between (a second adapters instance), it is decided again
        over what that one set, by the late-status rule (what was recorded meanwhile has
        deterministic ids: recorded again, it is a duplicate)."""
        with self._applying:
            for _ in range(DECIDED_AGAIN_MAX):
                if self._apply_once(wms_order_id, status, polled_over):
                    return
                polled_over = None  # the order moved on: the late-status rule holds
        log.warning(
            "wms status %s of %s: changed by another instance %d times; left",
            status,
            wms_order_id,
            DECIDED_AGAIN_MAX,
        )

    def _apply_once(self, wms_order_id: str, status: str, polled_over: str | None) -> bool:
        """Applies the status, or leaves it out; False when another instance changed the order's
        status after it was read here (nothing of this one was set: decide again)."""
        with transaction(self.recorder) as tx:
            row = tx.fetchone("SELECT * FROM adapter_wms_orders WHERE wms_order_id = %s", (wms_order_id,))
            if row is None:
                raise ValueError(f"picking order {wms_order_id} is not one the ledger created")
            if row["status"] != polled_over and _behind(status, row["status"]):
                journal(
                    tx, SYSTEM, "stale_status", wms_order_id, f"{status} came after {row['status']}: left out"
                )
                log.warning(
                    "wms status %s of %s came after %s: left out", status, wms_order_id, row["status"]
                )
                return True
        if row["status"] == status:
            return True
        rule = self.mappings.status(SYSTEM, status)
        action = None if rule is None else rule.action
        # The goods left at a status this order went past unseen (SHIPPED and DELIVERED between two
        # polls, SHIPPED's delivery lost): recorded now, under that status's own event id.
        skipped = None if action == "ship" else self._ship_status_skipped(row["status"], status)
        lines = [Line(sku, int(qty)) for sku, qty in orjson.loads(row["lines"])]
        code_notes: list[str] = []
        if (action == "ship" or skipped is not None) and self.client is not None:
            # The codes the picker used (seed 002); an unreachable WMS fails the delivery, which
            # is tried again, so a shipment is never recorded without the codes it could have had.
            used = self.client.order(wms_order_id)
            lines, code_notes = shipped_lines(self.mappings, [(ln.sku, ln.qty_units) for ln in lines], used)
        events = [] if skipped is None else [self._event(row, skipped, "ship", lines)]
        if action in ("release", "ship"):
            events.append(self._event(row, status, action, lines))
        if events:
            # Recorded first: if the ledger is unreachable, the delivery (or the next poll) tries again.
            self.sink.record(events)
        table = self.mappings.frozen()  # read now: a read inside the transaction would wait for it
        with transaction(self.recorder) as tx:
            updated = tx.fetchone(
                "UPDATE adapter_wms_orders SET status = %s, final = %s, updated_at = %s WHERE "
                "wms_order_id = %s AND status = %s RETURNING wms_order_id",
                (status, 1 if status in FINAL_STATUSES else 0, now_text(), wms_order_id, row["status"]),
            )
            if updated is None:
                detail = (
                    f"{status} decided from {row['status']}, which another instance changed meanwhile: "
                    "decided again"
                )
                journal(tx, SYSTEM, "stale_status", wms_order_id, detail)
                log.warning("wms status of %s: %s", wms_order_id, detail)
                return False
            journal(tx, SYSTEM, "status", wms_order_id, f"{row['status']} -> {status}")
            if skipped is not None:
                detail = f"{skipped} was not seen before {status}: its shipment recorded now"
                journal(tx, SYSTEM, "skipped_status", wms_order_id, detail)
                log.warning("wms picking order %s: %s", wms_order_id, detail)
            if rule is None:
                journal(tx, SYSTEM, "unmapped_status", wms_order_id, f"no status map row for {status}")
                log.warning("wms status %s of %s has no row in the status table", status, wms_order_id)
            elif row["order_id"]:
                self._queue_order_status(tx, row, table)
            if code_notes:
                detail = f"picking order {wms_order_id}: codes left off its shipment: " + "; ".join(
                    code_notes
                )
                journal(tx, SYSTEM, "alert", wms_order_id, detail[:2000])
                log.error("ALERT wms %s", detail[:2000])
            if rule is not None and rule.action == "release":
                detail = (
                    f"picking order {wms_order_id} ({row['external_id']}) of order {row['order_id']}: "
                    f"{status}; reservation {row['reservation_id']} lines released, Bitrix status "
                    f"{rule.target_status}"
                )
                journal(tx, SYSTEM, "alert", wms_order_id, detail)
                log.error("ALERT wms %s", detail)
        return True

    def _queue_order_status(self, tx: Any, row: Any, table: Mappings) -> None:
        """Queues the Bitrix order's status from every picking order of its reservation (one per
        zone), as this transaction leaves them: each one's own status, queued under the order's one
        key, made a routine status of one zone replace another's picking error, and one zone's
        shipment mark the whole order shipped."""
        statuses = [
            str(found["status"])
            for found in tx.fetchall(  # by adapter_wms_orders_by_reservation
                "SELECT status FROM adapter_wms_orders WHERE store_id = %s AND reservation_id = %s",
                (row["store_id"], row["reservation_id"]),
            )
        ]
        together = order_status(statuses)
        rule = table.status(SYSTEM, together)
        if rule is None:
            return  # a status with no row in the table sets none in Bitrix
        enqueue(
            tx,
            "bitrix",
            f"status:{row['order_id']}",
            {"order_id": row["order_id"], "status_id": rule.target_status, "wms_status": together},
        )

    def _ship_status_skipped(self, stored: str, status: str) -> str | None:
        """The status mapped to `ship` that an order moving from `stored` to `status` went past
        without it being seen, or None. An order out of the machine before shipping (a picking
        error) that shows up past the ship status has shipped all the same."""
        if status not in PROGRESS:
            return None
        since = PROGRESS.index(stored) if stored in PROGRESS else -1
        for passed in PROGRESS[since + 1 : PROGRESS.index(status)]:
            rule = self.mappings.status(SYSTEM, passed)
            if rule is not None and rule.action == "ship":
                return passed
        return None

    def _event(self, row: Any, status: str, action: str, lines: list[Line]) -> StockEvent:
        return StockEvent(
            event_id=f"wms:{row['wms_order_id']}:{status}"[:256],
            source=SOURCE,
            type=EventType.RESERVATION_RELEASE if action == "release" else EventType.SHIPMENT,
            time=datetime.now(UTC),
            store_id=row["store_id"],
            lines=tuple(lines),
            order_id=row["order_id"],
            reservation_id=row["reservation_id"],
            reference=f"WMS {status} picking order {row['wms_order_id']}"[:256],
            principal=PRINCIPAL,
        )


def order_status(statuses: list[str]) -> str:
    """The status an order's picking orders give it together: a picking error while any has one (a
    person must act on it), else the least advanced of those under way (one zone picking while
    another is NEW is not an order being picked), else (all cancelled, or none known) the first."""
    if "PICKING_ERROR" in statuses:
        return "PICKING_ERROR"
    under_way = [status for status in statuses if status in PROGRESS]
    if under_way:
        return min(under_way, key=PROGRESS.index)
    return statuses[0]


def _behind(status: str, stored: str) -> bool:
    """Whether an order at `stored` is past `status` already: an earlier step of the machine; a
    way out of it before shipping (PICKING_ERROR, CANCELLED) for an order that has shipped; or a
    step before shipping for an order that left the machine (a shipment after a picking error
    still counts)."""
    if stored in SHIPPED_OR_AFTER and status not in PROGRESS:
        return True
    if stored not in PROGRESS and status in PROGRESS and status not in SHIPPED_OR_AFTER:
        return True
    if status in PROGRESS and stored in PROGRESS:
        return PROGRESS.index(status) < PROGRESS.index(stored)
    return False
