"""An Inflow-style WMS (seed 002): its client, and the picking orders made in it.

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

In: the picking orders' statuses, polled or received by webhook: adapters/wms_statuses.py.
"""

from __future__ import annotations

import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters import wms_requests
from adapters.db import now_text, transaction
from adapters.http import HttpClient, Response, TransportError
from adapters.limits import SlidingWindow
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.outbound import Failure, Item, TargetUnavailable
from adapters.wms_articles import ArticleCollision, article_of
from adapters.wms_codes import codes_to_pick
from ledger.access.scopes import ADAPTER_PRINCIPAL_PREFIX
from ledger.domain.model import Entry, EventType
from ledger.sql import SqlTx

log = secret_safe_logger("adapters.wms")

SYSTEM = "wms"
SOURCE = "wms"
PRINCIPAL = ADAPTER_PRINCIPAL_PREFIX + SYSTEM  # who recorded a release or a shipment, in the history
PICK_KEY = "pick:"
CANCEL_KEY = "cancel:"
DEFAULT_ZONE = "default"


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
        try:  # every line's article before any order goes: one refused line sends none of the zones
            articles = {sku: article_of(self.mappings, sku) for sku, _qty in payload["lines"]}
        except ArticleCollision as error:  # parked after the retries, naming it (adapters/wms_articles.py)
            return Failure(str(error))
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
                "lines": [self._wire_line(articles[sku], sku, qty, codes.get(sku)) for sku, qty in lines],
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

    def _wire_line(self, article: str, sku: str, qty: int, codes: list[str] | None = None) -> dict[str, Any]:
        unit = self.mappings.unit(SYSTEM, sku)
        line: dict[str, Any] = {"sku": article, "qty": qty, "uom": "unit"}
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
