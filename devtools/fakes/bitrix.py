"""A fake 1C-Bitrix REST endpoint (inbound webhook), as the docstrings of adapters/bitrix_client.py
(calls, batch, limits) and adapters/bitrix.py (the methods pushed) describe it.

It keeps products, per-store amounts, inventory documents and orders in memory, counts requests in
the documented leaky bucket (503 QUERY_LIMIT_EXCEEDED past the burst), runs `batch` with
`$result[...]` references and per-command errors, and refuses `quantity` updates when inventory
management is enabled, as the real portal does.

It sums each method's operating time as limits.md describes: past 480 s within 10 minutes the
method is blocked for every caller, other methods go on. A blocked method called alone answers 429
`OPERATION_TIME_LIMIT` (system errors, error-codes.md); as a command of a batch, that error under
its key in `result_error` while the batch answers 200. Every answer's `time` (a batch's commands:
`result_time`) names `operating` and `operating_reset_at`, when part of the limit is released.
What a call costs is set per method (`operating_s_per_call`), or charged as another application's
calls would be (`charge_operating`).

It refuses what the documents say the portal refuses, since a lenient fake hides the bugs that
cost users data:
- conducting a receipt (A) without a supplier: "Document conducting error: Supplier not
  specified" (catalog-document-conduct.md), and any document while inventory management is off:
  "Warehouse accounting must be enabled to conduct the document";
- suppliers as the portal keeps them (`contractor_provider`): "crm" (Bitrix24) binds a CRM vendor
  company or contact with catalog.documentcontractor.add and ignores `contractorId`; "catalog"
  (site management) takes the document's `contractorId` and answers documentcontractor.add with
  "Contractors should be provided by CRM";
- `catalog.storeproduct.list` filters as documented: `@field` (IN) and `!@field` take an array,
  `field` and `=field` a value. What the portal does with an array under a bare name is not
  documented, so the fake refuses it. Pages are 50 rows (`start`), with `total`;
- `sale.order.update` (sale-order-update.md, "Possible Error Codes", HTTP 400) without `id`, or
  with `fields` missing or empty: error `100`, "Could not find value for parameter {id}" or
  "... {fields}" (the wording other methods' pages give for that code); an order that does not
  exist: `200540400001`, "order does not exist". The codes are numbers, as the page shows them.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.httpserver import Reply, Request

DOC_TYPES = ("A", "S", "M", "R", "D")
PARAMETER_MISSING = 100  # a required parameter missing or empty (sale-order-update.md)
ORDER_NOT_FOUND = 200540400001
BATCH_COMMANDS_MAX = 50
OPERATING_LIMIT_S = 480.0  # limits.md: a method's summed operating time allowed ...
OPERATING_WINDOW_S = 600.0  # ... within the past 10 minutes
# A blocked method's error (error-codes.md, system errors: 429 OPERATION_TIME_LIMIT).
BLOCKED_CODE, BLOCKED_TEXT = "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit"
LIST_PAGE = 50
CRM_ENTITY_TYPES = (3, 4)  # contact, company
RESULT_REF = re.compile(r"^\$result\[([^\]]+)\]((?:\[[^\]]*\])*)$")


class CommandError(Exception):
    def __init__(self, code: str | int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass(frozen=True, slots=True)
class Listed:
    """A page of a list method, and the count of all its rows (`total`)."""

    result: Any
    total: int


def parse_php_query(query: str) -> dict[str, Any]:
    """`fields[quantity]=5&select[0]=id` -> {"fields": {"quantity": "5"}, "select": ["id"]}."""
    root: dict[str, Any] = {}
    for raw_key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        names = re.findall(r"[^\[\]]+", raw_key)
        node = root
        for index, name in enumerate(names):
            last = index == len(names) - 1
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
    parsed: dict[str, Any] = _lists(root)
    return parsed


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _lists(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


@dataclass
class FakeBitrix:
    user: str = "1"
    token: str = "fake-webhook-token"
    burst_requests_max: int = 50
    drain_per_s: float = 2.0
    inventory_management: bool = False
    # Where suppliers live: "catalog" (site management; contractor 1 exists, as in the documented
    # example of catalog.document.add) or "crm" (Bitrix24: CRM vendor companies and contacts).
    contractor_provider: str = "catalog"
    crm_vendors: set[tuple[int, int]] = field(default_factory=set)  # (entityTypeId, id)
    catalog_contractors: set[int] = field(default_factory=lambda: {1})
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_amounts: dict[tuple[str, str], float] = field(default_factory=dict)
    stores: set[str] = field(default_factory=set)
    documents: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What happened, for tests.
    requests: int = 0
    rate_limited: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Failure injection.
    next_replies: list[Reply] = field(default_factory=list)
    failing_products: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # The operating-time limit: what one call of a method costs (none unless set), and its bounds.
    operating_s_per_call: dict[str, float] = field(default_factory=dict)
    operating_limit_s: float = OPERATING_LIMIT_S
    operating_window_s: float = OPERATING_WINDOW_S

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._level = 0.0
        self._at = time.monotonic()
        self._next_doc_id = 1
        self._operating: dict[str, list[tuple[float, float]]] = {}  # method -> (epoch s, operating s)

    @property
    def webhook_path(self) -> str:
        return f"/rest/{self.user}/{self.token}/"

    def add_product(self, product_id: str, kind: str = "product") -> None:
        self.products[str(product_id)] = {
            "id": str(product_id),
            "type": kind,
            "quantity": 0.0,
            "quantityReserved": 0.0,
        }

    def charge_operating(self, method: str, operating_s: float) -> None:
        """Counts operating time against a method now, as other applications' calls of it would."""
        with self._lock:
            self._charge(method, operating_s)

    # -- HTTP ---------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests += 1
            if not request.path.startswith(self.webhook_path):
                return Reply(
                    401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
                )
            if not self._bucket_allows():
                self.rate_limited += 1
                return Reply(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
            if self.next_replies:
                return self.next_replies.pop(0)
            method = request.path[len(self.webhook_path) :].removesuffix(".json")
            params = (
                request.json()
                if request.body
                else parse_php_query(
                    urllib.parse.urlencode([(k, v) for k, values in request.query.items() for v in values])
                )
            )
            delay_s = self.delay_s
            reset_at = self._blocked_until(method)
            if reset_at is not None:
                blocked = {"error": BLOCKED_CODE, "error_description": BLOCKED_TEXT}
                reply = Reply(429, {**blocked, "time": _time(0.0, reset_at)})
            elif method == "batch":
                reply = self._batch(params)
                self._charge(method, self.operating_s_per_call.get(method, 0.0))
            else:
                operating_s = self.operating_s_per_call.get(method, 0.0)
                try:
                    answer = self._run(method, params)
                    self._charge(method, operating_s)
                    timing = _time(operating_s, self._reset_at(method))
                    body = {"result": answer, "time": timing}
                    if isinstance(answer, Listed):
                        body = {"result": answer.result, "total": answer.total, "time": timing}
                    reply = Reply(200, body)
                except CommandError as error:
                    reply = Reply(400, {"error": error.code, "error_description": error.description})
        reply.delay_s = delay_s
        return reply

    def _bucket_allows(self) -> bool:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.drain_per_s)
        self._at = now
        if self._level + 1 > self.burst_requests_max:
            return False
        self._level += 1
        return True

    def _charge(self, method: str, operating_s: float) -> None:
        if operating_s > 0:
            self._operating.setdefault(method, []).append((time.time(), operating_s))

    def _reset_at(self, method: str) -> float:
        """When the oldest operating time counted against the method leaves the window (now if none)."""
        now = time.time()
        charges = [c for c in self._operating.get(method, []) if c[0] > now - self.operating_window_s]
        self._operating[method] = charges
        return charges[0][0] + self.operating_window_s if charges else now

    def _blocked_until(self, method: str) -> float | None:
        """The method's operating_reset_at while its operating time is over the limit, else None."""
        reset_at = self._reset_at(method)
        if sum(s for _, s in self._operating.get(method, [])) > self.operating_limit_s:
            return reset_at
        return None

    def _batch(self, params: Mapping[str, Any]) -> Reply:
        cmd = params.get("cmd") or {}
        halt = str(params.get("halt", 0)) in ("1", "true", "True")
        if not isinstance(cmd, Mapping) or len(cmd) > BATCH_COMMANDS_MAX:
            return Reply(
                400,
                {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"},
            )
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, int] = {}
        times: dict[str, Any] = {}
        for key, command in cmd.items():
            method, _, query = str(command).partition("?")
            try:
                reset_at = self._blocked_until(method)
                if reset_at is not None:
                    times[key] = _time(0.0, reset_at)
                    raise CommandError(BLOCKED_CODE, BLOCKED_TEXT)
                sub = self._resolve(parse_php_query(query), results)
                if method == "batch":
                    raise CommandError(
                        "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                    )
                answer = self._run(method, sub)
                operating_s = self.operating_s_per_call.get(method, 0.0)
                self._charge(method, operating_s)
                times[key] = _time(operating_s, self._reset_at(method))
                if isinstance(answer, Listed):
                    totals[key] = answer.total
                    answer = answer.result
                results[key] = answer
            except CommandError as error:
                errors[key] = {"error": error.code, "error_description": error.description}
                if halt:
                    break
        body = {
            "result": {
                "result": results,
                "result_error": errors,
                "result_total": totals or [],
                "result_next": [],
                "result_time": times or [],
            },
            "time": _time(0.0, self._reset_at("batch")),
        }
        return Reply(200, body)

    def _resolve(self, node: Any, results: Mapping[str, Any]) -> Any:
        if isinstance(node, dict):
            return {k: self._resolve(v, results) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolve(v, results) for v in node]
        if isinstance(node, str):
            match = RESULT_REF.match(node)
            if match:
                value: Any = results.get(match.group(1))
                for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
                    value = value.get(part) if isinstance(value, Mapping) else None
                if value is None:
                    raise CommandError("ERROR_RESULT_REFERENCE", f"{node} has no value")
                return value
        return node

    # -- methods ------------------------------------------------------------------------------------

    def _run(self, method: str, params: Mapping[str, Any]) -> Any:
        self.calls.append((method, dict(params)))
        handler = {
            "catalog.product.update": lambda p: self._product_update(p, "product"),
            "catalog.product.offer.update": lambda p: self._product_update(p, "offer"),
            "catalog.storeproduct.list": self._storeproduct_list,
            "catalog.document.add": self._document_add,
            "catalog.document.element.add": self._element_add,
            "catalog.document.conduct": self._conduct,
            "catalog.document.mode.status": lambda p: "Y" if self.inventory_management else "N",
            "catalog.documentcontractor.add": self._documentcontractor_add,
            "sale.order.update": self._order_update,
        }.get(method)
        if handler is None:
            raise CommandError("ERROR_METHOD_NOT_FOUND", f"Method '{method}' not found")
        return handler(params)

    def _product_update(self, params: Mapping[str, Any], kind: str) -> Any:
        product_id = str(params.get("id", ""))
        product = self.products.get(product_id)
        if product is None or product["type"] != kind:
            raise CommandError("ERROR_PRODUCT_NOT_FOUND", f"{kind} {product_id} is not exists")
        if product_id in self.failing_products:
            raise CommandError("ERROR", self.failing_products[product_id])
        fields = params.get("fields") or {}
        if self.inventory_management and ({"quantity", "quantityReserved"} & set(fields)):
            raise CommandError("ERROR", "quantity is not editable when inventory management is enabled")
        for name in ("quantity", "quantityReserved"):
            if name in fields:
                product[name] = float(fields[name])
        return {kind: dict(product)}

    def _storeproduct_list(self, params: Mapping[str, Any]) -> Any:
        conditions = _filter(params.get("filter") or {})
        rows = [
            {"id": index + 1, "productId": int(pid), "storeId": int(sid), "amount": amount}
            for index, ((pid, sid), amount) in enumerate(sorted(self.store_amounts.items()))
            if all(test({"productId": pid, "storeId": sid}) for test in conditions)
        ]
        start = int(params.get("start") or 0)
        return Listed({"storeProducts": rows[start : start + LIST_PAGE]}, len(rows))

    def _document_add(self, params: Mapping[str, Any]) -> Any:
        fields = params.get("fields") or {}
        if fields.get("docType") not in DOC_TYPES:
            raise CommandError("ERROR", f"docType must be one of {DOC_TYPES}")
        for name in ("currency", "responsibleId"):
            if not fields.get(name):
                raise CommandError("ERROR", f"{name} is required")
        doc_id = self._next_doc_id
        self._next_doc_id += 1
        self.documents[doc_id] = {
            "id": doc_id,
            "docType": fields["docType"],
            "status": "N",
            "elements": [],
            "title": fields.get("title"),
            "commentary": fields.get("commentary"),
            "contractorId": int(fields["contractorId"]) if fields.get("contractorId") else None,
            "crm_vendors": [],
        }
        return {"document": {"id": doc_id, "docType": fields["docType"], "status": "N"}}

    def _element_add(self, params: Mapping[str, Any]) -> Any:
        fields = params.get("fields") or {}
        document = self.documents.get(int(fields.get("docId") or 0))
        if document is None or document["status"] != "N":
            raise CommandError("ERROR_DOCUMENT_STATUS", "Document not found / Conducted document")
        product_id = str(fields.get("elementId", ""))
        if product_id not in self.products:
            raise CommandError("0", "Error of adding new document element")
        if product_id in self.failing_products:
            raise CommandError("0", self.failing_products[product_id])
        store_field = "storeTo" if document["docType"] == "A" else "storeFrom"
        store = str(fields.get(store_field) or "")
        if store not in self.stores:
            raise CommandError("ERROR_DOCUMENT_RIGHTS", f"{store_field} {store!r} is not a store")
        element = {
            "id": len(document["elements"]) + 1,
            "docId": document["id"],
            "elementId": int(product_id),
            store_field: int(store),
            "amount": float(fields.get("amount") or 0),
        }
        document["elements"].append(element)
        return {"documentElement": element}

    def _documentcontractor_add(self, params: Mapping[str, Any]) -> Any:
        fields = params.get("fields") or {}
        if self.contractor_provider != "crm":
            raise CommandError("0", "Contractors should be provided by CRM")
        document = self.documents.get(int(fields.get("documentId") or 0))
        if document is None:
            raise CommandError("0", "Store document was not found")
        if document["docType"] != "A":
            raise CommandError("0", "Type of store document is wrong")
        if document["status"] != "N":
            raise CommandError("0", "Unable to edit conducted document")
        entity_type = int(fields.get("entityTypeId") or 0)
        if entity_type not in CRM_ENTITY_TYPES:
            raise CommandError("0", "Wrong entity type id")
        vendor = (entity_type, int(fields.get("entityId") or 0))
        if vendor not in self.crm_vendors:
            raise CommandError("0", "Wrong entity id")
        document["crm_vendors"].append(vendor)
        binding = {"documentId": document["id"], "entityTypeId": vendor[0], "entityId": vendor[1]}
        return {"documentContractor": {"id": len(document["crm_vendors"]), **binding}}

    def _has_supplier(self, document: Mapping[str, Any]) -> bool:
        if self.contractor_provider == "crm":
            return bool(document["crm_vendors"])  # contractorId is not used with CRM vendors
        return document["contractorId"] in self.catalog_contractors

    def _conduct(self, params: Mapping[str, Any]) -> Any:
        document = self.documents.get(int(params.get("id") or 0))
        if document is None:
            raise CommandError("0", "Document not found")
        if not self.inventory_management:
            raise CommandError("0", "Warehouse accounting must be enabled to conduct the document")
        if document["status"] != "N":
            raise CommandError("0", "Document conducting error: already conducted")
        if document["docType"] == "A" and not self._has_supplier(document):
            raise CommandError("0", "Document conducting error: Supplier not specified")
        sign = 1 if document["docType"] == "A" else -1
        for element in document["elements"]:
            store = str(element.get("storeTo") or element.get("storeFrom"))
            key = (str(element["elementId"]), store)
            after = self.store_amounts.get(key, 0.0) + sign * element["amount"]
            if after < 0:
                raise CommandError("0", f"Document conducting error: not enough of {key[0]} in store {store}")
        for element in document["elements"]:
            store = str(element.get("storeTo") or element.get("storeFrom"))
            key = (str(element["elementId"]), store)
            self.store_amounts[key] = self.store_amounts.get(key, 0.0) + sign * element["amount"]
            product = self.products[key[0]]
            product["quantity"] = sum(a for (pid, _), a in self.store_amounts.items() if pid == key[0])
        document["status"] = "Y"
        return True

    def _order_update(self, params: Mapping[str, Any]) -> Any:
        # The parameters are checked before the order is looked up, as the portal binds them first.
        if params.get("id") in (None, ""):
            raise CommandError(PARAMETER_MISSING, "Could not find value for parameter {id}")
        fields = params.get("fields")
        if not fields or not isinstance(fields, Mapping):
            raise CommandError(PARAMETER_MISSING, "Could not find value for parameter {fields}")
        order = self.orders.get(str(params["id"]))
        if order is None:
            raise CommandError(ORDER_NOT_FOUND, "order does not exist")
        if "statusId" in fields:
            order["statusId"] = str(fields["statusId"])
        return {"order": dict(order)}


def _filter(flt: Mapping[str, Any]) -> list[Any]:
    """Tests for the documented filter keys: `@f` / `!@f` with an array, `f` / `=f` / `!f` with a value."""
    tests = []
    for key, value in flt.items():
        negate = key.startswith("!")
        name = key.removeprefix("!")
        if name.startswith("@"):
            if not isinstance(value, list):
                raise CommandError("0", f"filter {key}: IN takes an array")
            wanted = {str(v) for v in value}
            name = name[1:]
        else:
            if isinstance(value, list):
                raise CommandError("0", f"filter {key}: an array needs the @ (IN) prefix")
            wanted = {str(value)}
            name = name.removeprefix("=")
        tests.append(lambda row, n=name, w=wanted, neg=negate: (str(row.get(n)) in w) != neg)
    return tests


def _time(operating_s: float = 0.0, reset_at: float | None = None) -> dict[str, Any]:
    """An answer's `time`, with the operating-time keys every answer carries (limits.md)."""
    now = time.time()
    return {
        "start": now,
        "finish": now,
        "duration": 0.0,
        "processing": 0.0,
        "operating_reset_at": now if reset_at is None else reset_at,
        "operating": operating_s,
    }
