"""A fake MoySklad JSON API 1.2, as adapters/moysklad.py's docstring describes it.

Customer orders (created, and found by `filter=externalCode=...`), demands (read with
`expand=positions,customerOrder`), and `report/stock/all` by store; Bearer auth; the 3-second
request window with its 429 answer and X-Lognex-* headers (the stock report weighs 5 requests).

It refuses what the documents say MoySklad refuses and defaults the way they say it defaults,
since a lenient fake hides exactly the bugs that cost users data:
- a request without `Accept-Encoding: gzip` is answered 415 with no body (md/_general.md);
- an `Accept` that does not admit `application/json;charset=utf-8` is answered error 1062
  (md/_errors.md; the page gives no HTTP status, 400 is assumed);
- the stock report's `quantityMode` defaults to `nonEmpty`: rows whose available quantity
  (`quantity` = stock - reserve) is 0 are left out unless `quantityMode=all` is sent; an unknown
  mode is error 1041; pages hold at most 1000 rows (`limit` 1 to 1000, else error 1040 assumed),
  `meta.size` counts the whole report and `meta.nextHref` is given while pages follow
  (md/reports/_report_stock.md).

It also sends webhooks the way md/dictionaries/_webhook.md says MoySklad does (`send_webhook`):
a POST with `?requestId=...` that must be answered 200 or 204 within 1500 ms; on any other
answer, or none in time, 3 more attempts follow at once, with no pause between them; then the
notification is dropped for good.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from adapters.httpserver import Reply, Request

BASE_PATH = "/api/remap/1.2/"
MOSCOW = timezone(timedelta(hours=3))
REPORT_WEIGHT = 5
REPORT_PAGE_MAX = 1000
ACCEPTED_MEDIA = "application/json;charset=utf-8"
QUANTITY_MODES = ("all", "positiveOnly", "negativeOnly", "empty", "nonEmpty", "underMinimum")
# _webhook.md: "200 or 204 within 1500 ms", then "3 more attempts", one after the other.
WEBHOOK_ANSWER_DEADLINE_S = 1.5
WEBHOOK_ATTEMPTS_MAX = 1 + 3
WEBHOOK_ACCEPTED_STATUSES = (200, 204)


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    status: int | None  # None: no answer within the deadline (or no connection)
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    request_id: str
    attempts: tuple[WebhookAttempt, ...]

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].status in WEBHOOK_ACCEPTED_STATUSES


def send_webhook(url: str, body: dict[str, Any], request_id: str | None = None) -> WebhookOutcome:
    """Delivers one notification as MoySklad does: up to 4 attempts in a row, then dropped."""
    request_id = request_id or str(uuid.uuid4())
    data = json.dumps(body, ensure_ascii=False).encode()
    target = f"{url}{'&' if '?' in url else '?'}requestId={request_id}"
    attempts = []
    for _ in range(WEBHOOK_ATTEMPTS_MAX):
        started = time.monotonic()
        status: int | None
        request = urllib.request.Request(
            target, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_ANSWER_DEADLINE_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            status = None
        elapsed_s = time.monotonic() - started
        if status in WEBHOOK_ACCEPTED_STATUSES and elapsed_s > WEBHOOK_ANSWER_DEADLINE_S:
            status = None  # answered, but too late: MoySklad has given up on this attempt
        attempts.append(WebhookAttempt(status, elapsed_s))
        if status in WEBHOOK_ACCEPTED_STATUSES:
            break
    return WebhookOutcome(request_id, tuple(attempts))


@dataclass
class FakeMoySklad:
    token: str = "fake-moysklad-token"
    requests_per_window: int = 45
    window_s: float = 3.0
    origin: str = "http://127.0.0.1"  # hrefs are written against this; set to the server's URL
    products: dict[str, str] = field(default_factory=dict)  # uuid -> "product" | "variant"
    stores: set[str] = field(default_factory=set)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    demands: dict[str, dict[str, Any]] = field(default_factory=dict)
    stock: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (assortment, store)
    requests: int = 0
    rate_limited: int = 0
    report_pages_served: int = 0
    next_replies: list[Reply] = field(default_factory=list)
    delay_s: float = 0.0

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
        order = next((o for o in self.orders.values() if o["externalCode"] == order_external_code), None)
        local = (moment or datetime.now(UTC)).astimezone(MOSCOW)
        self.demands[demand_id] = {
            "id": demand_id,
            "name": f"{len(self.demands) + 1:05d}",
            "moment": local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}",
            "store": self.meta("store", store),
            "positions": [
                {"quantity": qty, "assortment": self.meta(self.products[a], a)} for a, qty in positions
            ],
            "customerOrder": order["id"] if order else None,
        }
        return demand_id

    def webhook_body(self, demand_id: str, action: str = "CREATE") -> dict[str, Any]:
        return {
            "auditContext": {
                "meta": {"type": "audit", "href": f"{self.origin}{BASE_PATH}audit/{uuid.uuid4()}"},
                "moment": datetime.now(MOSCOW).strftime("%Y-%m-%d %H:%M:%S"),
                "uid": "admin@fake",
            },
            "events": [
                {
                    "meta": {"type": "demand", "href": self.href("demand", demand_id)},
                    "action": action,
                    "accountId": "00000000-0000-0000-0000-000000000001",
                }
            ],
        }

    # -- HTTP ---------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests += 1
            if request.header("Authorization") != f"Bearer {self.token}":
                return Reply(401, {"errors": [{"error": "Authentication error", "code": 1056}]})
            if "gzip" not in (request.header("Accept-Encoding") or "").lower():
                return Reply(415, b"")
            if not _accepts_json(request.header("Accept")):
                return _error(
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
        if parts[:2] == ["entity", "customerorder"] and len(parts) == 2:
            if request.method == "GET":
                return self._find_orders(request)
            if request.method == "POST":
                return self._create_order(request.json())
        if parts[:2] == ["entity", "demand"] and len(parts) == 3 and request.method == "GET":
            return self._demand(parts[2], request)
        if parts == ["report", "stock", "all"] and request.method == "GET":
            return self._stock_report(request)
        return Reply(404, {"errors": [{"error": f"unknown resource {path}", "code": 1002}]})

    def _find_orders(self, request: Request) -> Reply:
        wanted = {value for name, value in _filter_conditions(request) if name == "externalCode"}
        rows = [o for o in self.orders.values() if not wanted or o["externalCode"] in wanted]
        return Reply(200, {"meta": {"size": len(rows), "limit": 1000, "offset": 0}, "rows": rows})

    def _create_order(self, body: Any) -> Reply:
        errors = []
        if not isinstance(body, dict) or not isinstance(body.get("positions"), list):
            return Reply(400, {"errors": [{"error": "positions are required", "code": 2016}]})
        for position in body["positions"]:
            href = ((position.get("assortment") or {}).get("meta") or {}).get("href") or ""
            kind, assortment = (
                (href.split("/")[-2], href.split("/")[-1]) if href.count("/") >= 2 else ("", "")
            )
            if self.products.get(assortment) != kind:
                errors.append({"error": f"unknown {kind} {assortment}", "code": 1021})
        store = ((body.get("store") or {}).get("meta") or {}).get("href", "").split("/")[-1]
        if store not in self.stores:
            errors.append({"error": f"unknown store {store}", "code": 1021})
        if errors:
            return Reply(400, {"errors": errors})
        order_id = str(uuid.uuid4())
        order = {
            **body,
            "id": order_id,
            "name": f"{len(self.orders) + 1:05d}",
            **self.meta("customerorder", order_id),
        }
        self.orders[order_id] = order
        return Reply(200, order)

    def _demand(self, demand_id: str, request: Request) -> Reply:
        demand = self.demands.get(demand_id)
        if demand is None:
            return Reply(404, {"errors": [{"error": "not found", "code": 1021}]})
        answer = {**demand, **self.meta("demand", demand_id)}
        expand = ",".join(request.query.get("expand", []))
        positions = [dict(p) for p in demand["positions"]]
        answer["positions"] = (
            {"meta": {"size": len(positions)}, "rows": positions}
            if "positions" in expand
            else {"meta": {"href": self.href("demand", demand_id) + "/positions"}}
        )
        order_id = demand.get("customerOrder")
        if order_id is None:
            answer.pop("customerOrder", None)
        elif "customerOrder" in expand:
            answer["customerOrder"] = self.orders[order_id]
        else:
            answer["customerOrder"] = self.meta("customerorder", order_id)
        return Reply(200, answer)

    def _stock_report(self, request: Request) -> Reply:
        conditions = _filter_conditions(request)
        stores = {value.split("/")[-1] for name, value in conditions if name == "store"}
        modes = [value for name, value in conditions if name == "quantityMode"]
        mode = modes[-1] if modes else "nonEmpty"  # the documented default
        if mode not in QUANTITY_MODES:
            return _error(
                400,
                1041,
                f"Неверное значение '{mode}' параметра фильтрации 'quantityMode', допустимые значения: "
                f"'{', '.join(QUANTITY_MODES)}'",
            )
        limit = int((request.query.get("limit") or [str(REPORT_PAGE_MAX)])[0])
        offset = int((request.query.get("offset") or ["0"])[0])
        if not 1 <= limit <= REPORT_PAGE_MAX or offset < 0:
            return _error(400, 1040, "Неверно заданы параметры запроса: limit 1-1000, offset >= 0")
        totals: dict[str, dict[str, float]] = {}
        for (assortment, store_id), figures in sorted(self.stock.items()):
            if not stores or store_id in stores:
                total = totals.setdefault(assortment, {"stock": 0.0, "reserve": 0.0, "inTransit": 0.0})
                for name in total:
                    total[name] += figures.get(name, 0.0)
        rows: list[dict[str, Any]] = [
            {
                "meta": {
                    "href": self.href(self.products[a], a) + "?expand=supplier",
                    "type": self.products[a],
                },
                "name": a,
                "code": a,
                "externalCode": a,
                **t,
                "quantity": t["stock"] - t["reserve"],
            }
            for a, t in totals.items()
            if _in_quantity_mode(mode, t["stock"] - t["reserve"])
        ]
        self.report_pages_served += 1
        meta: dict[str, Any] = {"size": len(rows), "limit": limit, "offset": offset}
        if offset + limit < len(rows):
            meta["nextHref"] = (
                f"{self.origin}{BASE_PATH}report/stock/all?limit={limit}&offset={offset + limit}"
            )
        return Reply(200, {"meta": meta, "rows": rows[offset : offset + limit]})


def _error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"errors": [{"error": message, "code": code}]})


def _accepts_json(accept: str | None) -> bool:
    """No Accept, a wildcard, or the one documented value."""
    if accept is None:
        return True
    for part in accept.split(","):
        media = part.split(";q=")[0].replace(" ", "").lower()
        if media in ("*/*", "application/*", ACCEPTED_MEDIA):
            return True
    return False


def _filter_conditions(request: Request) -> list[tuple[str, str]]:
    """`filter=store=<href>;quantityMode=all` -> [("store", "<href>"), ("quantityMode", "all")]."""
    conditions = []
    for flt in request.query.get("filter", []):
        for part in flt.split(";"):
            name, _, value = part.partition("=")
            if name:
                conditions.append((name, value))
    return conditions


def _in_quantity_mode(mode: str, available: float) -> bool:
    return {
        "all": True,
        "positiveOnly": available > 0,
        "negativeOnly": available < 0,
        "empty": available == 0,
        "nonEmpty": available != 0,
        "underMinimum": available < 0,  # no minimum balances in the fake: below 0 only
    }[mode]
