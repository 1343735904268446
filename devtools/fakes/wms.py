"""A fake Inflow-style WMS (seed 002): picking orders, their fixed status machine, and stock.

Inflow publishes no API document ("access to the API documentation for the specific Inflow WMS
version ... required", seed 002): its endpoints, `X-API-Key`, the status machine and
available = on_hand - reserved - in_picking come from seed 002; what the seed leaves open is the
project's own description, written here and in adapters/README.md, and the fake keeps to it as
strictly as the MoySklad fake keeps to MoySklad's pages:

- `POST /api/v1/orders` (an `external_id` seen before returns the existing order, 200, before the
  body is checked: idempotent, and the one way to find an order by its `external_id`).
  A line is `{sku, qty, uom, codes?}`: `codes`, the marking codes (Честный знак) or SSCCs to pick,
  at most `qty` distinct strings of 1 to 200 printable ASCII characters, on a line in `unit`s;
  anything else is refused with 422.
- `GET /api/v1/orders/{id}/status`, `PUT /api/v1/orders/{id}/cancel` (409 once shipped).
- `GET /api/v1/orders/{id}`: the order; once SHIPPED each line has `used_codes`, the codes the
  picker actually scanned (seed 002: "on shipment, the list of used codes must be retrieved").
- `GET /api/v1/stock?warehouse=W` (required; an unknown one is 404), one row per SKU and zone:
  `{sku, warehouse, zone, qty_on_hand, qty_reserved, qty_in_picking, available}`. Paged:
  `page` (from 1) and `per_page` (default 100, at most 500; more is 422); the answer says
  `page`, `per_page` and `total` (rows in all pages). `available_only` is `true` unless sent:
  no document gives its default and the seed's own example sends `true`, so the fake takes the
  default that hides the most. `true` leaves out every row whose available is 0 or less, a fully
  reserved or picked item among them, exactly the trap MoySklad's `nonEmpty` default is.

- `POST /api/v1/inbound` (an expected receipt, ASN: `{external_id, warehouse, transfer_id, lines:
  [{sku, qty, uom}]}`; an `external_id` seen before returns the existing one) and
  `GET /api/v1/inbound/{id}`: `EXPECTED`, then `RECEIVED` with each line's `received_qty` (what
  was counted in at the dock), or `CANCELLED`.

Every call needs the `X-API-Key` header.

`send_status` posts a picking status the way the WMS's status webhook does, `{"id", "status"}`,
signed with an HMAC of the body when given a scheme (adapters/signatures.py).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from adapters.httpserver import Reply, Request
from adapters.signatures import SignatureScheme

STATUS_WEBHOOK_TIMEOUT_S = 5.0
STOCK_PER_PAGE_DEFAULT = 100
STOCK_PER_PAGE_MAX = 500
CODE_CHARS_MAX = 200

STATUSES = (
    "NEW",
    "ASSIGNED",
    "PICKING",
    "PICKED",
    "PACKING",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
    "PICKING_ERROR",
)


def send_status(url: str, order_id: str, status: str, signature: SignatureScheme | None = None) -> int:
    """One status webhook; returns the HTTP status of the answer."""
    body = json.dumps({"id": order_id, "status": status}).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[signature.header] = signature.sign(body)
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=STATUS_WEBHOOK_TIMEOUT_S) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@dataclass
class FakeWms:
    api_key: str = "fake-wms-key"
    warehouses: set[str] = field(default_factory=lambda: {"main"})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (warehouse, sku, zone) -> {"qty_on_hand", "qty_reserved", "qty_in_picking"}
    stock: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    # What the picker scans on shipment, by order id and article; unset: the codes the order sent.
    scanned_codes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    inbound: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    stock_requests: int = 0
    creates: int = 0
    inbound_posts: int = 0  # POST /api/v1/inbound, repeats included
    next_replies: list[Reply] = field(default_factory=list)
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_status(self, order_id: str, status: str) -> None:
        assert status in STATUSES, status
        with self._lock:
            order = self.orders[order_id]
            order["status"] = status
            if status == "SHIPPED":
                scanned = self.scanned_codes.get(order_id, {})
                for line in order["lines"]:
                    line["used_codes"] = list(scanned.get(line["sku"], line.get("codes") or []))

    def receive(self, inbound_id: str, counted: dict[str, int] | None = None) -> None:
        """The goods arrived: each line's received_qty is what was counted (default: as expected)."""
        with self._lock:
            expected = self.inbound[inbound_id]
            expected["status"] = "RECEIVED"
            for line in expected["lines"]:
                line["received_qty"] = (counted or {}).get(line["sku"], line["qty"])

    def inbound_by_external(self, external_id: str) -> dict[str, Any] | None:
        return next((i for i in self.inbound.values() if i["external_id"] == external_id), None)

    def put_stock(
        self, warehouse: str, sku: str, on_hand: int, reserved: int = 0, in_picking: int = 0, zone: str = "A"
    ) -> None:
        with self._lock:
            self.stock[(warehouse, sku, zone)] = {
                "qty_on_hand": on_hand,
                "qty_reserved": reserved,
                "qty_in_picking": in_picking,
            }

    def by_external(self, external_id: str) -> dict[str, Any] | None:
        return next((o for o in self.orders.values() if o["external_id"] == external_id), None)

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests += 1
            if request.header("X-API-Key") != self.api_key:
                return Reply(401, {"error": "invalid API key"})
            if self.next_replies:
                return self.next_replies.pop(0)
            reply = self._route(request, request.path.strip("/").split("/"))
        reply.delay_s = reply.delay_s or self.delay_s
        return reply

    def _route(self, request: Request, parts: list[str]) -> Reply:
        if parts == ["api", "v1", "orders"] and request.method == "POST":
            return self._create(request.json())
        if len(parts) == 4 and parts[:3] == ["api", "v1", "orders"] and request.method == "GET":
            found = self.orders.get(parts[3])
            return Reply(200, found) if found is not None else Reply(404, {"error": "no such order"})
        if len(parts) == 5 and parts[:3] == ["api", "v1", "orders"]:
            order = self.orders.get(parts[3])
            if order is None:
                return Reply(404, {"error": "no such order"})
            if parts[4] == "status" and request.method == "GET":
                return Reply(200, {"id": order["id"], "status": order["status"]})
            if parts[4] == "cancel" and request.method == "PUT":
                if order["status"] in ("SHIPPED", "DELIVERED", "CANCELLED"):
                    return Reply(409, {"error": f"order is {order['status']}"})
                order["status"] = "CANCELLED"
                return Reply(200, {"id": order["id"], "status": "CANCELLED"})
        if parts == ["api", "v1", "inbound"] and request.method == "POST":
            return self._expect(request.json())
        if len(parts) == 4 and parts[:3] == ["api", "v1", "inbound"] and request.method == "GET":
            found = self.inbound.get(parts[3])
            return Reply(200, found) if found is not None else Reply(404, {"error": "no such inbound"})
        if parts == ["api", "v1", "stock"] and request.method == "GET":
            return self._stock(request.query)
        return Reply(404, {"error": "unknown route"})

    def _stock(self, query: dict[str, list[str]]) -> Reply:
        self.stock_requests += 1
        warehouse = (query.get("warehouse") or [""])[0]
        if not warehouse:
            return Reply(422, {"error": "warehouse is required"})
        if warehouse not in self.warehouses:
            return Reply(404, {"error": f"unknown warehouse {warehouse!r}"})
        available_only = (query.get("available_only") or ["true"])[0]
        if available_only not in ("true", "false"):
            return Reply(422, {"error": "available_only is true or false"})
        try:
            page = int((query.get("page") or ["1"])[0])
            per_page = int((query.get("per_page") or [str(STOCK_PER_PAGE_DEFAULT)])[0])
        except ValueError:
            return Reply(422, {"error": "page and per_page are integers"})
        if page < 1 or not 1 <= per_page <= STOCK_PER_PAGE_MAX:
            return Reply(422, {"error": f"page >= 1, per_page 1 to {STOCK_PER_PAGE_MAX}"})
        rows = []
        for (wh, sku, zone), figures in sorted(self.stock.items()):
            # A test may set a row's `available` itself, to send a row that breaks the identity.
            computed = figures["qty_on_hand"] - figures["qty_reserved"] - figures["qty_in_picking"]
            available = figures.get("available", computed)
            if wh != warehouse or (available_only == "true" and available <= 0):
                continue
            rows.append({"sku": sku, "warehouse": wh, "zone": zone, **figures, "available": available})
        start = (page - 1) * per_page
        items = rows[start : start + per_page]
        return Reply(200, {"items": items, "page": page, "per_page": per_page, "total": len(rows)})

    def _create(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not body.get("external_id") or not body.get("lines"):
            return Reply(422, {"error": "external_id and lines are required"})
        existing = self.by_external(body["external_id"])
        if existing is not None:
            return Reply(200, existing)
        if body.get("warehouse") not in self.warehouses:
            return Reply(422, {"error": f"unknown warehouse {body.get('warehouse')!r}"})
        refused = _refused_lines(body["lines"]) or _refused_codes(body["lines"])
        if refused is not None:
            return Reply(422, {"error": refused})
        order_id = f"PO-{len(self.orders) + 1:06d}"
        order = {"id": order_id, "status": "NEW", **body}
        self.orders[order_id] = order
        self.creates += 1
        return Reply(201, order)

    def _expect(self, body: Any) -> Reply:
        self.inbound_posts += 1
        fields = ("external_id", "warehouse", "transfer_id", "lines")
        if not isinstance(body, dict) or not all(body.get(name) for name in fields):
            return Reply(422, {"error": f"{', '.join(fields)} are required"})
        existing = self.inbound_by_external(body["external_id"])
        if existing is not None:
            return Reply(200, existing)
        if body["warehouse"] not in self.warehouses:
            return Reply(422, {"error": f"unknown warehouse {body['warehouse']!r}"})
        refused = _refused_lines(body["lines"])
        if refused is not None:
            return Reply(422, {"error": refused})
        inbound_id = f"IN-{len(self.inbound) + 1:06d}"
        self.inbound[inbound_id] = {"id": inbound_id, "status": "EXPECTED", **body}
        return Reply(201, self.inbound[inbound_id])


def _refused_lines(lines: Any) -> str | None:
    """Why an order's or an expected receipt's lines are refused, or None: each needs an article
    and a whole quantity of at least 1."""
    for number, line in enumerate(lines if isinstance(lines, list) else [None]):
        qty = line.get("qty") if isinstance(line, dict) else None
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1 or not line.get("sku"):
            return f"lines[{number}]: each line needs sku and a qty >= 1"
    return None


def _refused_codes(lines: Any) -> str | None:
    """Why a picking order's codes are refused, or None (the module's docstring)."""
    seen: set[str] = set()
    for number, line in enumerate(lines if isinstance(lines, list) else []):
        codes = line.get("codes") if isinstance(line, dict) else None
        if codes is None:
            continue
        if line.get("uom") != "unit" or not isinstance(codes, list) or len(codes) > int(line.get("qty") or 0):
            return f"lines[{number}].codes: at most qty codes, on a line in units"
        for code in codes:
            valid = isinstance(code, str) and 1 <= len(code) <= CODE_CHARS_MAX
            if not valid or not all(" " <= ch <= "~" for ch in code) or code in seen:
                return f"lines[{number}].codes: {code!r} is not a code, or is there twice"
            seen.add(code)
    return None
