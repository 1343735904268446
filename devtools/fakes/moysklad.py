"""A fake MoySklad JSON API 1.2, as adapters/moysklad.py's docstring describes it: the account's
state, its requests' gate and routing, and its documents (customer orders and demands).

Customer orders (created, and found by `filter=externalCode=...`), demands (read with
`expand=positions,customerOrder`, listed by `updated`), and the stock reports; Bearer auth; the
3-second request window with its 429 answer and X-Lognex-* headers (a stock report weighs 5
requests).

It refuses what the documents say MoySklad refuses and defaults the way they say it defaults,
since a lenient fake hides exactly the bugs that cost users data:
- a request without `Accept-Encoding: gzip` is answered 415 with no body (md/_general.md);
- an `Accept` that does not admit `application/json;charset=utf-8` is answered error 1062
  (md/_errors.md; the page gives no HTTP status, 400 is assumed);
- a customer order is created only with its `organization` and `agent` (the counterparty), as
  seed 001 says MoySklad requires ("Необходимо при создании"), each naming one the account has.

Its parts: the wire format (moysklad_wire.py), what a new customer order must carry
(moysklad_order_rules.py), the stock reports and their defaults (moysklad_reports.py), the
webhook registries and their rules (moysklad_webhook_registry.py), the delivery of a notification
with its attempts (moysklad_webhooks.py), the audit of every change of a demand or an order
(moysklad_audit.py).

What it notifies: changes to entities that a registered webhook follows, made through the API or
by the test helpers that stand for a person at MoySklad (`add_demand`, `update_demand`,
`delete_demand`, `set_order_state`, `delete_order`). A request carrying
`X-Lognex-WebHook-Disable` (any value, as the page's "Заголовок временного отключения через API"
says) notifies nothing. Stock webhooks are sent by
`notify_stock_changes`, with a `reportUrl` to the short stock report (`changedSince` in Moscow
time as `YYYY-MM-DD HH:MM:SS`, a raw space, as in the documented example). Notifications wait in
`outbox` until `deliver_webhooks()` sends them, each with MoySklad's retry pattern.

Customer orders: their positions are listed (`.../positions`) and updated one by one
(`PUT .../positions/{id}`: `reserve` from 0 to the position's quantity); an order's `state` is
set by PUT with a state meta; an order is deleted by DELETE (or `delete_order`, a person). Demands
are changed and deleted by PUT and DELETE as well.
Where a page names a rule but not its error code, the code here is marked as assumed.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.httpserver import Reply, Request
from devtools.fakes.moysklad_audit import (
    API_LOGIN,
    APP_LOGIN,
    list_contexts,
    list_events,
    new_context,
    token_employee,
    update_diff,
)
from devtools.fakes.moysklad_order_rules import order_refusals
from devtools.fakes.moysklad_reports import REPORT_WEIGHT, current_stock, stock_report
from devtools.fakes.moysklad_webhook_registry import handle_registry
from devtools.fakes.moysklad_webhooks import WebhookOutcome, send_webhook
from devtools.fakes.moysklad_wire import (
    ACCEPTED_MEDIA,
    ACCOUNT_ID,
    BASE_PATH,
    MOSCOW,
    accepts_json,
    error,
    filter_conditions,
    moment_key,
    moment_text,
    page_bounds,
)

WEBHOOK_DISABLE_HEADER = "X-Lognex-WebHook-Disable"
# A document read with `expand=positions` shows its first 1000 positions; a larger one (positions
# added through their own resource) is read there ("лимит на количество строк в выдаче документа.
# Этот лимит равен 1000", the documents' pages).
EXPANDED_POSITIONS_MAX = 1000


@dataclass
class FakeMoySklad:
    token: str = "fake-moysklad-token"
    requests_per_window: int = 45
    window_s: float = 3.0
    origin: str = "http://127.0.0.1"  # hrefs are written against this; set to the server's URL
    products: dict[str, str] = field(default_factory=dict)  # uuid -> "product" | "variant"
    archived: set[str] = field(default_factory=set)  # products and variants put in the archive
    stores: set[str] = field(default_factory=set)
    # Stores a person deleted (`delete_store`): gone from `GET entity/store/{id}` (404, error 1021),
    # listed at 0 by the short report for their changes since, absent from the full report.
    deleted_stores: set[str] = field(default_factory=set)
    # The seller's organizations and the counterparties a customer order may name (seed 001: both
    # are required to create one). The demo's and the tests' are these.
    organizations: set[str] = field(default_factory=lambda: {"org-1"})
    counterparties: set[str] = field(default_factory=lambda: {"agent-1"})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    demands: dict[str, dict[str, Any]] = field(default_factory=dict)
    stock: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (assortment, store)
    requests: int = 0
    rate_limited: int = 0
    report_pages_served: int = 0
    next_replies: list[Reply] = field(default_factory=list)
    delay_s: float = 0.0
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # entity/webhook by id
    stock_webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # entity/webhookstock
    outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (url, body) to send
    notifications_suppressed: int = 0  # changes not notified for X-Lognex-WebHook-Disable
    stock_changed_at: dict[tuple[str, str], datetime] = field(default_factory=dict)
    request_log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)  # contexts, oldest first

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()

    def href(self, entity: str, entity_uuid: str) -> str:
        return f"{self.origin}{BASE_PATH}entity/{entity}/{entity_uuid}"

    def meta(self, entity: str, entity_uuid: str) -> dict[str, Any]:
        return {
            "meta": {"href": self.href(entity, entity_uuid), "type": entity, "mediaType": "application/json"}
        }

    # -- test helpers -------------------------------------------------------------------------------

    def add_demand(
        self,
        store: str,
        positions: list[tuple[str, float]],
        order_external_code: str | None = None,
        moment: datetime | None = None,
    ) -> str:
        demand_id = str(uuid.uuid4())
        store_href = self.href("store", store)
        order = next(
            (
                o
                for o in self.orders.values()
                if o["externalCode"] == order_external_code
                and ((o.get("store") or {}).get("meta") or {}).get("href") == store_href
            ),
            None,
        )
        when = moment_text(moment or datetime.now(UTC))
        self.demands[demand_id] = {
            "id": demand_id,
            "name": f"{len(self.demands) + 1:05d}",
            "moment": when,
            "updated": when,
            "applicable": True,
            "store": self.meta("store", store),
            "positions": [
                {"quantity": qty, "assortment": self.meta(self.products[a], a)} for a, qty in positions
            ],
            "customerOrder": order["id"] if order else None,
        }
        with self._lock:
            self._notify("demand", demand_id, "CREATE")
        return demand_id

    def update_demand(
        self,
        demand_id: str,
        positions: list[tuple[str, float]] | None = None,
        store: str | None = None,
        applicable: bool | None = None,
    ) -> None:
        """A person corrects a demand: its positions, its store, or whether it is conducted."""
        with self._lock:
            before = self._snapshot("demand", demand_id)
            self._change_demand(demand_id, positions, store, applicable)
            given = {"positions": positions, "store": store, "applicable": applicable}
            changed = [k for k, v in given.items() if v is not None]
            self._notify("demand", demand_id, "UPDATE", fields=changed, before=before)

    def set_order_state(self, order_id: str, state_uuid: str) -> None:
        """A person moves a customer order to another state in the app (its webhooks notified)."""
        with self._lock:
            before = self._snapshot("customerorder", order_id)
            order = self.orders[order_id]
            order["state"] = {
                "meta": {
                    "href": f"{self.origin}{BASE_PATH}entity/customerorder/metadata/states/{state_uuid}",
                    "type": "state",
                    "mediaType": "application/json",
                }
            }
            order["updated"] = moment_text(datetime.now(UTC))
            self._notify("customerorder", order_id, "UPDATE", fields=["state"], before=before)

    def delete_order(self, order_id: str) -> None:
        """A person deletes a customer order in the app (its webhooks notified)."""
        with self._lock:
            name = self.orders.pop(order_id)["name"]
            self._notify("customerorder", order_id, "DELETE", name=name)

    def delete_demand(self, demand_id: str) -> None:
        with self._lock:
            name = self.demands.pop(demand_id)["name"]
            self._notify("demand", demand_id, "DELETE", name=name)

    def set_stock(self, assortment: str, store: str, stock: float, reserve: float = 0.0) -> None:
        with self._lock:
            self.stock[(assortment, store)] = {"stock": stock, "reserve": reserve, "inTransit": 0.0}
            self.stock_changed_at[(assortment, store)] = datetime.now(UTC)

    def delete_store(self, store: str) -> None:
        """A person deletes a store (md/reports/_report_stock.md, the short report: "если за
        запрашиваемый интервал был удален ... склад, то будет выведен остаток равный 0"). What
        the full report does with a filter naming a deleted store is not documented: the fake
        lists nothing of it (assumed)."""
        with self._lock:
            self.stores.discard(store)
            self.deleted_stores.add(store)
            now = datetime.now(UTC)
            for assortment, at in list(self.stock):
                if at == store:
                    self.stock_changed_at[(assortment, at)] = now

    def stock_webhook_body(self, since: datetime, report_type: str = "bystore") -> dict[str, Any]:
        changed_since = since.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "accountId": ACCOUNT_ID,
            "stockType": "stock",
            "reportType": report_type,
            "reportUrl": f"{self.origin}{BASE_PATH}report/stock/{report_type}/current"
            f"?changedSince={changed_since}",
        }

    def notify_stock_changes(self, since: datetime) -> int:
        """What MoySklad does every 1-5 minutes in which stock changed: one notification per
        enabled stock webhook. Returns how many were queued."""
        with self._lock:
            hooks = [h for h in self.stock_webhooks.values() if h["enabled"]]
            for hook in hooks:
                self.outbox.append((hook["url"], self.stock_webhook_body(since, hook["reportType"])))
        return len(hooks)

    def deliver_webhooks(self) -> list[WebhookOutcome]:
        """Sends every queued notification, each with MoySklad's retry pattern, in order."""
        with self._lock:
            queued, self.outbox = self.outbox, []
        return [send_webhook(url, body) for url, body in queued]

    def webhook_body(self, demand_id: str, action: str = "CREATE") -> dict[str, Any]:
        return self.notification_body("demand", demand_id, action)

    def notification_body(
        self, entity_type: str, entity_id: str, action: str, context_href: str | None = None
    ) -> dict[str, Any]:
        """What a webhook sends for one change; `auditContext` names the change's context in the
        audit (a new address when none is given)."""
        href = context_href or f"{self.origin}{BASE_PATH}audit/{uuid.uuid4()}"
        return {
            "auditContext": {
                "meta": {"type": "audit", "href": href},
                "moment": datetime.now(MOSCOW).strftime("%Y-%m-%d %H:%M:%S"),
                "uid": APP_LOGIN,
            },
            "events": [
                {
                    "meta": {"type": entity_type, "href": self.href(entity_type, entity_id)},
                    "action": action,
                    "accountId": ACCOUNT_ID,
                }
            ],
        }

    def _notify(
        self,
        entity_type: str,
        entity_id: str,
        action: str,
        request: Request | None = None,
        name: str | None = None,
        fields: list[str] | None = None,
        before: dict[str, Any] | None = None,
    ) -> None:
        """Records the change in the audit, and queues a notification for each enabled webhook
        that follows it, unless the request that made it asked for none. A webhook with diffType
        FIELDS is told which `fields` an UPDATE changed (`updatedFields`); the audit's event holds
        them in its `diff`, each with its value `before` the change and after it."""
        entities = self.demands if entity_type == "demand" else self.orders
        if name is None:
            name = entities.get(entity_id, {}).get("name", "")
        source = "jsonapi" if request is not None else "app"
        uid = API_LOGIN if request is not None else APP_LOGIN
        entity = self.meta(entity_type, entity_id)
        diff = (
            update_diff(fields or (), before or {}, entities.get(entity_id, {}))
            if action == "UPDATE"
            else None
        )
        when = datetime.now(UTC)
        context = new_context(self.origin, entity, action.lower(), name, when, source, uid, diff)
        self.audit.append(context)
        if request is not None and request.header(WEBHOOK_DISABLE_HEADER) is not None:
            self.notifications_suppressed += 1
            return
        for hook in self.webhooks.values():
            if hook["enabled"] and hook["entityType"] == entity_type and hook["action"] == action:
                body = self.notification_body(entity_type, entity_id, action, context["meta"]["href"])
                body["auditContext"]["moment"] = context["moment"]
                body["auditContext"]["uid"] = uid
                if action == "UPDATE" and hook.get("diffType") == "FIELDS":
                    body["events"][0]["updatedFields"] = list(fields or [])
                self.outbox.append((hook["url"], body))

    def _snapshot(self, entity_type: str, entity_id: str) -> dict[str, Any]:
        """The entity as it is now, for the audit's record of what a change changed."""
        entities = self.demands if entity_type == "demand" else self.orders
        return copy.deepcopy(entities.get(entity_id, {}))

    def _change_demand(
        self,
        demand_id: str,
        positions: list[tuple[str, float]] | None,
        store: str | None,
        applicable: bool | None,
    ) -> None:
        demand = self.demands[demand_id]
        if positions is not None:
            demand["positions"] = [
                {"quantity": qty, "assortment": self.meta(self.products[a], a)} for a, qty in positions
            ]
        if store is not None:
            demand["store"] = self.meta("store", store)
        if applicable is not None:
            demand["applicable"] = applicable
        demand["updated"] = moment_text(datetime.now(UTC))

    # -- HTTP ---------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests += 1
            self.request_log.append((request.method, request.path, dict(request.headers)))
            if request.header("Authorization") != f"Bearer {self.token}":
                return Reply(401, {"errors": [{"error": "Authentication error", "code": 1056}]})
            if "gzip" not in (request.header("Accept-Encoding") or "").lower():
                return Reply(415, b"")
            if not accepts_json(request.header("Accept")):
                return error(
                    400,
                    1062,
                    "Неверное значение заголовка 'Accept'. Поддерживается только значение "
                    f"'{ACCEPTED_MEDIA}'",
                )
            path = request.path.removeprefix(BASE_PATH)
            weight = REPORT_WEIGHT if path.startswith("report/stock") else 1
            limited = self._limit(weight)
            if limited is not None:
                self.rate_limited += 1
                return limited
            if self.next_replies:
                return self.next_replies.pop(0)
            reply = self._route(request, path)
        reply.delay_s = reply.delay_s or self.delay_s
        return reply

    def _limit(self, weight: int) -> Reply | None:
        now = time.monotonic()
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        if len(self._sent) + weight > self.requests_per_window:
            reset_ms = int((self.window_s - (now - self._sent[0])) * 1000) if self._sent else 0
            return Reply(
                429,
                {"errors": [{"error": "Превышен лимит количества запросов", "code": 1049}]},
                headers={
                    "X-RateLimit-Limit": str(self.requests_per_window),
                    "X-RateLimit-Remaining": "0",
                    "X-Lognex-Retry-TimeInterval": str(int(self.window_s * 1000)),
                    "X-Lognex-Retry-After": str(reset_ms),
                    "X-Lognex-Reset": str(reset_ms),
                },
            )
        self._sent.extend([now] * weight)
        return None

    def _route(self, request: Request, path: str) -> Reply:
        parts = path.strip("/").split("/")
        method = request.method
        if parts == ["context", "employee"] and method == "GET":
            return Reply(200, token_employee(self.origin))
        if parts[:2] == ["entity", "customerorder"]:
            if len(parts) == 2 and method == "GET":
                return self._find_orders(request)
            if len(parts) == 2 and method == "POST":
                return self._create_order(request)
            if len(parts) >= 3 and parts[2] not in self.orders:
                return error(404, 1021, f"customerorder {parts[2]} not found")
            if len(parts) == 3 and method == "GET":
                return Reply(200, self._order_view(self.orders[parts[2]], request))
            if len(parts) == 3 and method == "PUT":
                return self._update_order(parts[2], request)
            if len(parts) == 3 and method == "DELETE":
                name = self.orders.pop(parts[2])["name"]
                self._notify("customerorder", parts[2], "DELETE", request, name)
                return Reply(200, b"")
            if len(parts) == 4 and parts[3] == "positions" and method == "GET":
                return self._positions_page(
                    "customerorder", parts[2], self.orders[parts[2]]["positions"], request
                )
            if len(parts) == 5 and parts[3] == "positions" and method == "PUT":
                return self._update_position(parts[2], parts[4], request)
        if parts == ["entity", "demand"] and method == "GET":
            return self._list_demands(request)
        if (
            parts[:2] == ["entity", "demand"]
            and len(parts) == 4
            and parts[3] == "positions"
            and method == "GET"
        ):
            if parts[2] not in self.demands:
                return error(404, 1021, f"demand {parts[2]} not found")
            return self._positions_page("demand", parts[2], self.demands[parts[2]]["positions"], request)
        if parts[:2] == ["entity", "demand"] and len(parts) == 3:
            if parts[2] not in self.demands:
                return error(404, 1021, f"demand {parts[2]} not found")
            if method == "GET":
                return self._demand(parts[2], request)
            if method == "PUT":
                return self._update_demand(parts[2], request)
            if method == "DELETE":
                name = self.demands.pop(parts[2])["name"]
                self._notify("demand", parts[2], "DELETE", request, name)
                return Reply(200, b"")
        if parts[:2] in (["entity", "webhook"], ["entity", "webhookstock"]):
            registry = self.stock_webhooks if parts[1] == "webhookstock" else self.webhooks
            return handle_registry(registry, self.meta, parts, request)
        if parts == ["audit"] and method == "GET":
            return list_contexts(self.audit, request)
        if len(parts) == 3 and parts[0] == "audit" and parts[2] == "events" and method == "GET":
            context = next((c for c in self.audit if c["id"] == parts[1]), None)
            if context is None:
                return error(404, 1021, f"audit {parts[1]} not found")
            return list_events(context, request)
        if parts == ["report", "stock", "all"] and method == "GET":
            return self._stock_report(request)
        if parts[:2] == ["report", "stock"] and parts[3:] == ["current"] and method == "GET":
            return current_stock(
                self.stock, self.stock_changed_at, parts[2], request, self.archived, self.deleted_stores
            )
        if parts[:2] == ["entity", "store"] and len(parts) == 3 and method == "GET":
            if parts[2] not in self.stores:  # md/_errors.md 1021: not found ("возможно ... была удалена")
                return error(404, 1021, f"Объект с типом 'store' и идентификатором '{parts[2]}' не найден")
            return Reply(200, {**self.meta("store", parts[2]), "id": parts[2], "name": parts[2]})
        return Reply(404, {"errors": [{"error": f"unknown resource {path}", "code": 1002}]})

    def _update_order(self, order_id: str, request: Request) -> Reply:
        body = request.json()
        if not isinstance(body, dict):
            return error(400, 2016, "the body must be an object")
        order = self.orders[order_id]
        before = self._snapshot("customerorder", order_id)
        if "state" in body:
            href = ((body["state"] or {}).get("meta") or {}).get("href") or ""
            if f"{BASE_PATH}entity/customerorder/metadata/states/" not in href:
                return error(400, 1021, f"unknown state {href}")
            order["state"] = {"meta": {"href": href, "type": "state", "mediaType": "application/json"}}
        for name in ("description", "externalCode"):
            if name in body:
                order[name] = body[name]
        order["updated"] = moment_text(datetime.now(UTC))
        changed = [name for name in ("state", "description", "externalCode") if name in body]
        self._notify("customerorder", order_id, "UPDATE", request, fields=changed, before=before)
        return Reply(200, self._order_view(order, request))

    def _update_position(self, order_id: str, position_id: str, request: Request) -> Reply:
        order = self.orders[order_id]
        position = next((p for p in order["positions"] if p["id"] == position_id), None)
        if position is None:
            return error(404, 1021, f"position {position_id} not found")
        before = self._snapshot("customerorder", order_id)
        body = request.json() or {}
        if "reserve" in body:
            reserve = body["reserve"]
            if not isinstance(reserve, int | float) or not 0 <= reserve <= position["quantity"]:
                return error(400, 3007, "reserve must be from 0 to the position's quantity")  # assumed
            position["reserve"] = reserve
        self._notify(
            "customerorder", order_id, "UPDATE", request, fields=["positions"], before=before
        )  # assumed name
        return Reply(200, position)

    def _update_demand(self, demand_id: str, request: Request) -> Reply:
        before = self._snapshot("demand", demand_id)
        body = request.json() or {}
        positions = None
        if "positions" in body:
            positions = []
            for position in body["positions"]:
                href = position["assortment"]["meta"]["href"]
                positions.append((href.rstrip("/").split("/")[-1], position["quantity"]))
        store = body.get("store", {}).get("meta", {}).get("href", "").split("/")[-1] or None
        self._change_demand(demand_id, positions, store, body.get("applicable"))
        changed = [name for name in ("positions", "store", "applicable") if name in body]
        self._notify("demand", demand_id, "UPDATE", request, fields=changed, before=before)
        return self._demand(demand_id, request)

    def _order_view(self, order: dict[str, Any], request: Request) -> dict[str, Any]:
        """An order as MoySklad answers it: its positions a reference (a MetaArray) unless
        `expand=positions` (md/documents/_customerOrder.md); read through their own resource."""
        if "positions" in ",".join(request.query.get("expand", [])):
            return order
        href = f"{self.href('customerorder', order['id'])}/positions"
        size = len(order["positions"])
        reference = {"href": href, "type": "customerorderposition", "mediaType": "application/json"}
        return {**order, "positions": {"meta": {**reference, "size": size, "limit": 1000, "offset": 0}}}

    def _find_orders(self, request: Request) -> Reply:
        conditions = filter_conditions(request)
        wanted = {value for name, value in conditions if name == "externalCode"}
        stores = {value for name, value in conditions if name == "store"}  # a store's href
        rows = [
            o
            for o in self.orders.values()
            if (not wanted or o["externalCode"] in wanted)
            and (not stores or ((o.get("store") or {}).get("meta") or {}).get("href") in stores)
        ]
        rows = [self._order_view(o, request) for o in rows]
        return Reply(200, {"meta": {"size": len(rows), "limit": 1000, "offset": 0}, "rows": rows})

    def _create_order(self, request: Request) -> Reply:
        body = request.json()
        errors = order_refusals(body, self.products, self.stores, self.organizations, self.counterparties)
        if errors:
            return Reply(400, {"errors": errors})
        order_id = str(uuid.uuid4())
        positions = []
        for position in body["positions"]:
            position_id = str(uuid.uuid4())
            positions.append(
                {
                    **position,
                    "id": position_id,
                    "reserve": position.get("reserve", 0),
                    "meta": {
                        "href": f"{self.href('customerorder', order_id)}/positions/{position_id}",
                        "type": "customerorderposition",
                        "mediaType": "application/json",
                    },
                }
            )
        order = {
            **body,
            "id": order_id,
            "name": f"{len(self.orders) + 1:05d}",
            "updated": moment_text(datetime.now(UTC)),
            **self.meta("customerorder", order_id),
            "positions": positions,
        }
        self.orders[order_id] = order
        self._notify("customerorder", order_id, "CREATE", request)
        return Reply(200, self._order_view(order, request))

    def _list_demands(self, request: Request) -> Reply:
        """`entity/demand`, as md/documents/_demand.md lists documents: `filter=updated>=` a moment
        (Moscow time, `YYYY-MM-DD HH:MM:SS[.mmm]`), `order=updated,asc` (else by name: the
        documented default order is not by time), `limit` 1 to 1000 (default 1000; else error 1040,
        assumed) and `offset`; positions are not expanded."""
        since = [value for name, value in filter_conditions(request) if name == "updated>"]
        bounds = page_bounds(request)
        if isinstance(bounds, Reply):
            return bounds
        limit, offset = bounds
        rows = [
            {
                **demand,
                **self.meta("demand", demand_id),
                "positions": {"meta": {"href": self.href("demand", demand_id) + "/positions"}},
            }
            for demand_id, demand in self.demands.items()
            if not since or moment_key(demand["updated"]) >= moment_key(since[-1])
        ]
        ordered_by = (request.query.get("order") or [""])[0]
        rows.sort(
            key=(lambda row: (row["updated"], row["id"]))
            if ordered_by.startswith("updated")
            else (lambda row: row["name"])
        )
        return Reply(
            200,
            {
                "meta": {"size": len(rows), "limit": limit, "offset": offset},
                "rows": rows[offset : offset + limit],
            },
        )

    def _demand(self, demand_id: str, request: Request) -> Reply:
        demand = self.demands.get(demand_id)
        if demand is None:
            return Reply(404, {"errors": [{"error": "not found", "code": 1021}]})
        answer = {**demand, **self.meta("demand", demand_id)}
        expand = ",".join(request.query.get("expand", []))
        positions = [dict(p) for p in demand["positions"]]
        meta = {
            "href": self.href("demand", demand_id) + "/positions",
            "type": "demandposition",
            "mediaType": "application/json",
            "size": len(positions),
            "limit": EXPANDED_POSITIONS_MAX,
            "offset": 0,
        }
        answer["positions"] = (
            {"meta": meta, "rows": positions[:EXPANDED_POSITIONS_MAX]}
            if "positions" in expand
            else {"meta": meta}
        )
        order_id = demand.get("customerOrder")
        if order_id is None:
            answer.pop("customerOrder", None)
        elif "customerOrder" in expand:
            answer["customerOrder"] = self.orders[order_id]
        else:
            answer["customerOrder"] = self.meta("customerorder", order_id)
        return Reply(200, answer)

    def _positions_page(
        self, entity: str, document_id: str, positions: list[dict[str, Any]], request: Request
    ) -> Reply:
        """A document's positions through their own resource: pages of `limit` (1 to 1000, default
        1000) from `offset`, `nextHref` while more follow (md/_general.md, "Мета коллекций")."""
        bounds = page_bounds(request)
        if isinstance(bounds, Reply):
            return bounds
        limit, offset = bounds
        href = f"{self.href(entity, document_id)}/positions"
        meta: dict[str, Any] = {"href": href, "size": len(positions), "limit": limit, "offset": offset}
        if offset + limit < len(positions):
            meta["nextHref"] = f"{href}?limit={limit}&offset={offset + limit}"
        return Reply(200, {"meta": meta, "rows": positions[offset : offset + limit]})

    def _stock_report(self, request: Request) -> Reply:
        figures = {key: values for key, values in self.stock.items() if key[1] not in self.deleted_stores}
        reply = stock_report(figures, self.products, self.archived, self.href, self.origin, request)
        if reply.status == 200:
            self.report_pages_served += 1
        return reply
