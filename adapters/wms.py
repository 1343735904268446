"""An Inflow-style WMS (seed 002): picking orders out, picking statuses in.

The WMS speaks REST with an `X-API-Key` header: `POST /api/v1/orders` creates a picking order,
`GET /api/v1/orders/{id}/status` reads its status, `PUT /api/v1/orders/{id}/cancel` cancels it,
`GET /api/v1/stock?warehouse=...` reads stock. Its state machine is fixed: NEW -> ASSIGNED ->
PICKING -> PICKED -> PACKING -> SHIPPED -> DELIVERED, plus CANCELLED and PICKING_ERROR.

Out: a reservation placed in the ledger becomes one picking order per picking zone (mapping kind
`zone`; one customer order may so become several picking orders). Each carries `external_id` =
`<store>:<reservation>:<zone>`, also sent as `Idempotency-Key`: sending it again returns the
existing order rather than creating one (seed 000: "re-sending updates the existing record rather
than creating a new one"). A reservation released or expired in the ledger cancels its open
picking orders, each once none of its lines stays reserved, those whose answer was lost too
(adapters/wms_requests.py).

In: statuses, polled or received by webhook, go through the status table (`adapter_status_map`,
system `wms`, editable without a deploy): the mapped Bitrix status is queued for the Bitrix worker
(`sale.order.update`), and the rule's action runs: `release` (PICKING_ERROR: release the picking
order's reservation lines, and raise an alert: a log line, a metric, a journal entry; the release
itself is in the ledger's history with a reference naming the picking order) or `ship` (record the
picking order's lines as shipped under the reservation).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters import wms_requests
from adapters.db import journal, now_text, to_the_back, transaction
from adapters.http import HttpClient, Response, TransportError
from adapters.limits import SlidingWindow
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.outbound import Failure, Item, TargetUnavailable, enqueue
from adapters.sink import EventSink
from adapters.wms_codes import codes_to_pick, shipped_lines
from ledger.access.scopes import ADAPTER_PRINCIPAL_PREFIX
from ledger.domain.model import Entry, EventType, Line, StockEvent
from ledger.sql import SqlTx

log = secret_safe_logger("adapters.wms")

SYSTEM = "wms"
SOURCE = "wms"
PRINCIPAL = ADAPTER_PRINCIPAL_PREFIX + SYSTEM  # who recorded a release or a shipment, in the history
PICK_KEY = "pick:"
CANCEL_KEY = "cancel:"
DEFAULT_ZONE = "default"
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


@dataclass(frozen=True, slots=True)
class WmsConfig:
    base_url: str
    api_key: str
    requests_per_s: float = 10.0
    timeout_s: float = 10.0
    stock_per_page: int = 500
    stock_pages_max: int = 2000


class WmsClient:
    def __init__(self, config: WmsConfig) -> None:
        self.config = config
        self.http = HttpClient(config.base_url, config.timeout_s, {"X-API-Key": config.api_key})
        self.window = SlidingWindow(
            max(1, int(config.requests_per_s)),
            1.0 if config.requests_per_s >= 1 else (1 / config.requests_per_s),
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        self.window.acquire()
        try:
            answer = self.http.request(method, path, **kwargs)
        except TransportError as error:
            raise TargetUnavailable(f"wms {method} {path}: {error}") from error
        if answer.status == 429 or answer.status >= 500:
            retry = answer.header("Retry-After")
            raise TargetUnavailable(
                f"wms {method} {path}: HTTP {answer.status}",
                float(retry) if retry and retry.isdigit() else None,
            )
        if answer.status in (401, 403):
            raise TargetUnavailable(f"wms {method} {path}: HTTP {answer.status} (check LEDGER_WMS_API_KEY)")
        return answer

    def status(self, wms_order_id: str) -> str | None:
        """A picking order's status; None: unknown. Any other answer without a status as a string
        (an error's body, one cut short) is the WMS unavailable, never a status to store."""
        answer = self.request("GET", f"api/v1/orders/{_segment(wms_order_id)}/status")
        if answer.status == 404:
            return None
        body = answer.json() if answer.status == 200 else None
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, str) or not status:
            raise TargetUnavailable(
                f"wms status of {wms_order_id}: HTTP {answer.status}, no status in the answer"
            )
        return status

    def stock_page(self, warehouse: str, page: int) -> dict[str, Any]:
        """One page of the stock report. `available_only=false` is sent, not left to a default:
        with `true` (seed 002's own example) a fully reserved or picked item is left out, and a
        reconciliation would not see it at all."""
        params = {
            "warehouse": warehouse,
            "available_only": "false",
            "page": str(page),
            "per_page": str(self.config.stock_per_page),
        }
        answer = self.request("GET", "api/v1/stock", params=params)
        if answer.status != 200:
            raise TargetUnavailable(f"wms stock of {warehouse}, page {page}: HTTP {answer.status}")
        body = answer.json()
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise TargetUnavailable(f"wms stock of {warehouse}, page {page}: no items list in the answer")
        return body

    def inbound(self, wms_inbound_id: str) -> dict[str, Any] | None:
        """An expected receipt (adapters/wms_inbound.py); None: unknown."""
        answer = self.request("GET", f"api/v1/inbound/{_segment(wms_inbound_id)}")
        if answer.status == 404:
            return None
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            raise TargetUnavailable(f"wms inbound {wms_inbound_id}: HTTP {answer.status}")
        return body

    def order(self, wms_order_id: str) -> dict[str, Any] | None:
        """A picking order as the WMS holds it (its lines' `used_codes` once shipped); None: unknown."""
        answer = self.request("GET", f"api/v1/orders/{_segment(wms_order_id)}")
        if answer.status == 404:
            return None
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            raise TargetUnavailable(f"wms order {wms_order_id}: HTTP {answer.status}")
        return body


def _segment(wms_order_id: str) -> str:
    """An id the WMS gave, as one path segment: it cannot reach another path (`../..`)."""
    return urllib.parse.quote(wms_order_id, safe="")


@dataclass(frozen=True, slots=True)
class Created:
    external_id: str
    wms_order_id: str
    store_id: str
    reservation_id: str
    order_id: str | None
    zone: str
    lines: list[list[Any]]


def _created(request: wms_requests.Request, answer: Response) -> Created:
    made = answer.json() or {}
    return Created(
        request.external_id,
        str(made["id"]),
        request.store_id,
        request.reservation_id,
        request.order_id,
        request.zone,
        request.lines,
    )


class WmsPickingTarget:
    name = "wms"
    batch_items_max = 20

    def __init__(self, recorder: Any, mappings: Mappings, client: WmsClient) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self._cancelled: list[str] = []

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        event = entry.event
        if not event.reservation_id or self.mappings.external(SYSTEM, "store", event.store_id) is None:
            return ()
        suffix = f"{event.store_id}|{event.reservation_id}"
        if event.type is EventType.RESERVATION:
            return [PICK_KEY + suffix]
        if (
            event.type in (EventType.RESERVATION_RELEASE, EventType.RESERVATION_EXPIRED)
            and event.source != SOURCE
        ):
            return [CANCEL_KEY + suffix]
        return ()

    def all_keys(self) -> Iterable[str]:
        return ()

    def load(self, keys: Sequence[str]) -> list[Item]:
        items = []
        with self.recorder.read_transaction() as tx:
            for key in keys:
                kind = (
                    PICK_KEY
                    if key.startswith(PICK_KEY)
                    else CANCEL_KEY
                    if key.startswith(CANCEL_KEY)
                    else None
                )
                if kind is None:
                    continue
                store_id, reservation_id = key[len(kind) :].split("|", 1)
                row = tx.fetchone(
                    "SELECT * FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s",
                    (store_id, reservation_id),
                )
                if row is None:
                    continue
                lines = [
                    [sku, int(qty) - int(shipped) - int(released)]
                    for sku, qty, shipped, released in orjson.loads(row["lines"])
                ]
                lines = [ln for ln in lines if ln[1] > 0]
                payload = {
                    "store_id": store_id,
                    "reservation_id": reservation_id,
                    "order_id": row["order_id"],
                    "lines": lines,
                }
                if kind == PICK_KEY:
                    payload["codes"] = codes_to_pick(tx, store_id, reservation_id, dict(lines))
                items.append(Item(key, payload))
        return items

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        failures: dict[str, Failure] = {}
        done: set[str] = set()
        for item in items:
            try:
                failure = self._pick(item) if item.key.startswith(PICK_KEY) else self._cancel(item)
            except TargetUnavailable as error:
                raise TargetUnavailable(str(error), error.retry_after_s, frozenset(done)) from error
            if failure is not None:
                failures[item.key] = failure
            else:
                done.add(item.key)
        return failures

    def _pick(self, item: Item) -> Failure | None:
        payload = item.payload
        if not payload["lines"]:
            return None  # nothing left to pick (released or shipped before we got to it)
        warehouse = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if warehouse is None:
            return Failure(f"no wms warehouse mapped to {payload['store_id']}", permanent=True)
        zones: dict[str, list[list[Any]]] = defaultdict(list)
        for sku, qty in payload["lines"]:
            zone_ref = self.mappings.external(SYSTEM, "zone", sku)
            zones[zone_ref.external_id if zone_ref else DEFAULT_ZONE].append([sku, qty])
        for zone, lines in sorted(zones.items()):
            external_id = f"{payload['store_id']}:{payload['reservation_id']}:{zone}"
            codes = payload.get("codes") or {}
            body: dict[str, Any] = {
                "external_id": external_id,
                "customer_order_id": payload["order_id"] or payload["reservation_id"],
                "warehouse": warehouse.external_id,
                "zone": zone,
                "lines": [self._wire_line(sku, qty, codes.get(sku)) for sku, qty in lines],
            }
            request = wms_requests.Request(
                external_id,
                payload["store_id"],
                payload["reservation_id"],
                payload["order_id"],
                zone,
                lines,
                body,
            )
            wms_requests.note(self.recorder, request)
            answer = self._send(request)
            if answer.status not in (200, 201):
                return Failure(f"picking order {external_id}: HTTP {answer.status}: {answer.body[:200]!r}")
            self._remember(_created(request, answer))
        return None

    def _send(self, request: wms_requests.Request) -> Response:
        return self.client.request(
            "POST",
            "api/v1/orders",
            json_body=request.body,
            headers={"Idempotency-Key": request.external_id},
        )

    def _remember(self, created: Created) -> None:
        """The picking order the WMS has made, kept at once, not with the cycle's save: a process
        that died before the save left an order the WMS would pick and ship with no row here, so
        that a release found nothing to cancel, and its shipment nothing to be recorded against.
        Fenced by nothing: it is a fact of the WMS's (made under the idempotency key, kept once)."""
        with transaction(self.recorder) as tx:
            tx.execute(
                "INSERT INTO adapter_wms_orders (external_id, wms_order_id, store_id, "
                "reservation_id, order_id, "
                "zone, lines, status, final, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'NEW', 0, %s) "
                "ON CONFLICT (external_id) DO NOTHING",
                (
                    created.external_id,
                    created.wms_order_id,
                    created.store_id,
                    created.reservation_id,
                    created.order_id,
                    created.zone,
                    orjson.dumps(created.lines).decode(),
                    now_text(),
                ),
            )
            wms_requests.forget(tx, created.external_id)

    def _wire_line(self, sku: str, qty: int, codes: list[str] | None = None) -> dict[str, Any]:
        article = self.mappings.external(SYSTEM, "sku", sku)
        unit = self.mappings.unit(SYSTEM, sku)
        line: dict[str, Any] = {"sku": article.external_id if article else sku, "qty": qty, "uom": "unit"}
        if codes:  # the codes of units to pick: the line stays in units, so that codes <= qty holds
            line["codes"] = codes
        elif unit and qty % unit[1] == 0:  # whole boxes go as boxes; anything else in base units
            line.update(qty=qty // unit[1], uom=unit[0])
        return line

    def _cancel(self, item: Item) -> Failure | None:
        """Cancels the reservation's open picking orders none of whose lines stays reserved. A
        partial release keeps the order of a zone that still has a line reserved: the WMS takes no
        change to an order, so it picks the order's quantity as sent, and its shipment is recorded
        as picked (what is no longer reserved comes out of what is available)."""
        reserved = {sku for sku, _qty in item.payload["lines"]}
        failure = self._settle_unanswered(item, reserved)
        with transaction(self.recorder) as tx:
            rows = tx.fetchall(
                "SELECT wms_order_id, lines FROM adapter_wms_orders WHERE store_id = %s AND "
                "reservation_id = %s AND final = 0",
                (item.payload["store_id"], item.payload["reservation_id"]),
            )
        rows = [row for row in rows if not reserved & {sku for sku, _qty in orjson.loads(row["lines"])}]
        for row in rows:
            answer = self.client.request("PUT", f"api/v1/orders/{_segment(row['wms_order_id'])}/cancel")
            if answer.status not in (200, 204, 404, 409):  # 409: already shipped or cancelled
                return Failure(f"cancel {row['wms_order_id']}: HTTP {answer.status}")
            if answer.status in (200, 204):  # a 409's real status comes with the next poll
                self._cancelled.append(row["wms_order_id"])
        return failure

    def _settle_unanswered(self, item: Item, reserved: set[str]) -> Failure | None:
        """Keeps the picking orders the WMS may have made from a request whose answer was lost
        (adapters/wms_requests.py), for those of them with nothing left reserved, so that they are
        cancelled with the others: the request is sent again as it was, and the WMS answers the
        order it has under that external id. An order made by this re-send (the first request
        never reached the WMS) is cancelled all the same."""
        failure = None
        for request in wms_requests.unanswered(
            self.recorder, item.payload["store_id"], item.payload["reservation_id"]
        ):
            if reserved & {sku for sku, _qty in request.lines}:
                continue  # the order stays: its pick (retried) keeps it
            answer = self._send(request)
            if answer.status in (200, 201):
                self._remember(_created(request, answer))
            elif answer.status == 422:
                # The WMS answers an external id it knows before it looks at the body: refusing the
                # body it was sent, it made no order of it.
                with transaction(self.recorder) as tx:
                    wms_requests.forget(tx, request.external_id)
            else:
                failure = Failure(f"picking order {request.external_id} sent again: HTTP {answer.status}")
        return failure

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        stamp = now_text()
        for wms_order_id in self._cancelled:
            tx.execute(
                "UPDATE adapter_wms_orders SET status = 'CANCELLED', final = 1, updated_at = %s "
                "WHERE wms_order_id = %s",
                (stamp, wms_order_id),
            )
        self._cancelled.clear()


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
