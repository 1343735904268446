"""A fake Inflow-style WMS (seed 002): picking orders, their fixed status machine, and stock.

`POST /api/v1/orders` (an `external_id` seen before returns the existing order: idempotent),
`GET /api/v1/orders/{id}/status`, `PUT /api/v1/orders/{id}/cancel` (409 once shipped),
`GET /api/v1/stock?warehouse=...`; every call needs the `X-API-Key` header.

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
    stock: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (warehouse, sku)
    requests: int = 0
    creates: int = 0
    next_replies: list[Reply] = field(default_factory=list)
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set_status(self, order_id: str, status: str) -> None:
        assert status in STATUSES, status
        with self._lock:
            self.orders[order_id]["status"] = status

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
        if parts == ["api", "v1", "stock"] and request.method == "GET":
            warehouse = (request.query.get("warehouse") or ["main"])[0]
            items = [
                {"sku": sku, "warehouse": wh, **figures}
                for (wh, sku), figures in sorted(self.stock.items())
                if wh == warehouse
            ]
            return Reply(200, {"items": items})
        return Reply(404, {"error": "unknown route"})

    def _create(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not body.get("external_id") or not body.get("lines"):
            return Reply(422, {"error": "external_id and lines are required"})
        existing = self.by_external(body["external_id"])
        if existing is not None:
            return Reply(200, existing)
        if body.get("warehouse") not in self.warehouses:
            return Reply(422, {"error": f"unknown warehouse {body.get('warehouse')!r}"})
        order_id = f"PO-{len(self.orders) + 1:06d}"
        order = {"id": order_id, "status": "NEW", **body}
        self.orders[order_id] = order
        self.creates += 1
        return Reply(201, order)
