"""The OpenAPI document: what FastAPI generates, completed with what clients and contract testers
read in it (hand-written summaries, every problem answer under application/problem+json, which
ledger/api/operation_problems.py says, the event envelope's schema, the walkthrough's examples,
the package's version). openapi.json at the repository root is this document;
tests/e2e/test_openapi_document.py keeps the two equal."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from ledger.api.envelope_schema import WALKTHROUGH_RECEIPT, envelope_schema
from ledger.api.guard import document_access
from ledger.api.media import CLOUDEVENT, CLOUDEVENTS_BATCH, JSON
from ledger.api.operation_problems import describe_problems
from ledger.api.schemas import (
    PolicyIn,
    ProblemPublic,
    ReservationCreate,
    ReservationRelease,
)
from ledger.api.schemas_across import ReservationAcrossCreate, SourcingRequest
from ledger.domain.ids import ID_REGEX
from ledger.http_problems import PROBLEM_MEDIA_TYPE
from ledger.telemetry import METRICS_MEDIA_TYPE
from ledger.telemetry.request_ids import REQUEST_ID_CHARS_MAX, SOUND_PATTERN

DISTRIBUTION = "stock-ledger"

# Every operation's summary, by hand: a new route without one fails to build the document.
SUMMARIES = {
    ("get", "/v1/stores/{store}/stock/{sku}"): "One SKU's levels at a store, now or then",
    ("get", "/v1/stores/{store}/stock"): "Several SKUs' levels at a store (up to 1,000)",
    ("get", "/v1/stock/{sku}"): "One SKU's levels across every store, with totals",
    ("post", "/v1/events"): "Record one event or a batch of up to 1,000",
    ("post", "/v1/stores/{store}/reservations"): "Reserve every line at a store, or none",
    ("get", "/v1/stores/{store}/reservations/{reservation_id}"): "A reservation and what remains of it",
    (
        "post",
        "/v1/stores/{store}/reservations/{reservation_id}/release",
    ): "Release what is still reserved (optionally only some lines)",
    ("get", "/v1/stores/{store}/history"): "The audit trail, oldest first, one entry per line",
    (
        "get",
        "/v1/stores/{store}/stock/{sku}/timeline",
    ): "One SKU's levels after each entry in a window, on either time axis, thinned",
    (
        "put",
        "/v1/stores/{store}/policies/{sku}",
    ): "Set a store's policy of a SKU or its default (*); {} clears it",
    ("get", "/v1/stores/{store}/policies/{sku}"): "A store's policy of a SKU (or the default it inherits)",
    (
        "get",
        "/v1/stores/{store}/stock/{sku}/explain",
    ): "The entries behind one SKU's figures at a store: last count, since, reservations, transfers",
    ("post", "/v1/reservations"): "Reserve every line at its store, all or none, at one position",
    ("get", "/v1/reservations/{reservation_id}"): "Every store's part of a reservation, with one status",
    ("post", "/v1/reservations/{reservation_id}/release"): "Release what every part still holds",
    (
        "post",
        "/v1/sourcing",
    ): "Where an order can be served; with `reserve`, reserve it there in the same step",
    ("get", "/healthz"): "Liveness: the process answers",
    ("get", "/readyz"): "Readiness: the database answers, writes are recorded, Kafka is in",
    ("get", "/metrics"): "Prometheus metrics (text exposition format)",
}
# RFC 3339 with an offset
TIME_PARAMETERS = frozenset({"as_of", "from", "to", "occurred_as_of", "occurred_from", "occurred_to"})

# Every request may name itself (ledger/api/telemetry.py), and every answer carries the id it was
# given, problems included: one parameter and one header in the components, referred to from every
# operation and answer. An unsound id is replaced, not refused, so the parameter's schema is any
# string: a pattern there would promise a 422 that never comes.
REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": (
        f"the caller's id for this request, kept when it is 1 to {REQUEST_ID_CHARS_MAX} characters of "
        "letters, digits and `._:+/=-`, else replaced by a new one; every log line the request "
        "causes names it"
    ),
    "schema": {"type": "string"},
    "example": "till-12-000123",
}
REQUEST_ID_HEADER = {
    "description": (
        "the request's id: the caller's when sound, else a new one (32 hex digits). Every answer of "
        "the service carries it; only the server's own 400 to bytes that are not an HTTP request does not"
    ),
    "required": True,
    "schema": {"type": "string", "pattern": f"^{SOUND_PATTERN}$"},
}
# A 400 may be the server's own, to bytes it could not read as a request: no id reaches that one.
REQUEST_ID_HEADER_OF_400 = {
    **REQUEST_ID_HEADER,
    "description": (
        "the request's id, as on every answer; absent from the server's own 400 to bytes that are not "
        "an HTTP request (`invalid-request`)"
    ),
    "required": False,
}
REQUEST_ID_PARAMETER_REF = {"$ref": "#/components/parameters/RequestId"}
REQUEST_ID_HEADER_REF = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
REQUEST_ID_HEADER_OF_400_REF = {"X-Request-ID": {"$ref": "#/components/headers/RequestIdOf400"}}

_POS_SALE = {
    "specversion": "1.0",
    "id": "pos-12-000123",
    "source": "pos/store-12",
    "type": "stock.pos_sale",
    "time": "2026-11-22T10:15:00+03:00",
    "subject": "store-12",
    "data": {"lines": [{"sku": "SKU-1", "qty": 3}], "reference": "receipt 000123"},
}
_SHIPMENT = {
    "specversion": "1.0",
    "id": "ship-1001",
    "source": "wms/main",
    "type": "stock.shipment",
    "time": "2026-11-22T11:00:00+03:00",
    "subject": "store-12",
    "data": {"lines": [{"sku": "SKU-1", "qty": 2}], "reservation_id": "order-1001", "order_id": "1001"},
}
_INSUFFICIENT = {
    "type": "insufficient-stock",
    "title": "Insufficient stock",
    "status": 409,
    "detail": "not enough available stock for every line; nothing was reserved",
    "instance": "/v1/stores/store-12/reservations",
    "shortfall": [{"sku": "SKU-1", "requested": 1, "available": 0}],
    "position": 4,
}
_LEVEL = {
    "store_id": "store-12",
    "sku": "SKU-1",
    "on_hand": 0,
    "reserved": 0,
    "available": 0,
    "incoming": 0,
    "safety_stock": 0,
    "sellable": 0,
    "channels": {},
    "position": 5,
    "updated_at": "2026-11-22T08:00:03.512000+00:00",
}


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


# ledger/api/head.py: not an operation of its own in the document, so said once here.
HEAD_NOTE = """**HEAD.** Every GET operation also answers HEAD (RFC 9110): the GET's status and headers,
`Content-Length` included, and no body; the same role is needed. A 405 lists HEAD in `Allow` wherever
it lists GET."""

# ledger/api/console/negotiation.py: the console at /ui is not in the document, so said here.
CONSOLE_NOTE = """**The console at /ui.** Its pages are HTML for people. It answers a refusal (401, 403, 422,
503) as a page only to a request whose `Accept` names `text/html` (a browser's navigation); any other
request gets the same status and headers with `application/problem+json`, as the API does. A 404 or
405 under /ui is problem+json to anyone."""


def install_openapi(app: FastAPI, routes: Sequence[APIRoute]) -> None:
    """app.openapi() builds the document once, on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI, routes: Sequence[APIRoute]) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=package_version(), summary=app.summary, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = envelope_schema()
    del envelope["$schema"], envelope["$id"]  # it sits inside this document, whose dialect is 3.1's
    components["EventEnvelope"] = envelope
    for model in (ReservationCreate, ReservationRelease, PolicyIn, ReservationAcrossCreate, SourcingRequest):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    components["ProblemPublic"] = ProblemPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(components["ProblemPublic"].pop("$defs", {}))
    schema["components"]["parameters"] = {"RequestId": REQUEST_ID_PARAMETER}
    schema["components"]["headers"] = {
        "RequestId": REQUEST_ID_HEADER,
        "RequestIdOf400": REQUEST_ID_HEADER_OF_400,
    }
    document_access(routes, schema)
    schema["info"]["description"] += f"\n\n{HEAD_NOTE}\n\n{CONSOLE_NOTE}"
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            _complete_operation(method, path, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _integer_bounds(components)
    _add_examples(schema)
    _add_links(schema)
    return schema


# The 64-bit bound of levels and positions (ledger/api/schemas.py), and what it becomes as a float.
INT64_MAX = 2**63 - 1
_INT64_MAX_AS_FLOAT = float(INT64_MAX)  # 2**63: one past it


def _integer_bounds(node: Any) -> None:
    """An integer's bounds as the integers they are. FastAPI's document model holds `minimum` and
    `maximum` as floats: the response schemas said 9.223372036854776e+18, which is 2**63, one past
    what an int64 holds, so that a client generated from the document took them for floats or
    wider than 64 bits."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum"):
                bound = node.get(key)
                if isinstance(bound, float) and bound.is_integer():
                    exact = int(bound)
                    if abs(bound) == _INT64_MAX_AS_FLOAT:
                        exact = INT64_MAX if bound > 0 else -INT64_MAX
                    node[key] = exact
        for value in node.values():
            _integer_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integer_bounds(value)


def _complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    summary = SUMMARIES.get((method, path))
    if summary is None:
        raise RuntimeError(f"{method.upper()} {path} has no summary in ledger/api/openapi.py")
    operation["summary"] = summary
    # An operation with neither parameters nor a body (/readyz) has nothing to refuse: no 422.
    takes_input = bool(operation.get("parameters")) or "requestBody" in operation
    for parameter in operation.get("parameters", ()):
        _complete_parameter(parameter)
    operation["parameters"] = [*operation.get("parameters", ()), REQUEST_ID_PARAMETER_REF]
    responses: dict[str, Any] = operation["responses"]
    describe_problems(method, path, operation, takes_input)
    if path == "/metrics":
        responses["200"] = {
            "description": "the Prometheus text exposition format",
            "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    for status, response in responses.items():
        request_id = REQUEST_ID_HEADER_OF_400_REF if status == "400" else REQUEST_ID_HEADER_REF
        response["headers"] = {**response.get("headers", {}), **request_id}
    operation["responses"] = dict(sorted(responses.items()))


def _complete_parameter(parameter: dict[str, Any]) -> None:
    """A query parameter is absent or a value, never null; times are RFC 3339."""
    schema = parameter["schema"]
    options = schema.get("anyOf")
    if options and {"type": "null"} in options and len(options) == 2:
        [value] = [option for option in options if option != {"type": "null"}]
        schema.pop("anyOf")
        schema.update(value)
    if parameter["name"] in TIME_PARAMETERS:
        schema["format"] = "date-time"
    if parameter["name"] == "sku" and schema.get("type") == "array":  # GET .../stock?sku=A&sku=B
        schema.update(minItems=1, maxItems=1000, items={"type": "string", "pattern": ID_REGEX})


def _add_examples(schema: dict[str, Any]) -> None:
    """The README walkthrough's requests and answers."""
    paths = schema["paths"]
    events = paths["/v1/events"]["post"]["requestBody"]["content"]
    for media in (JSON, CLOUDEVENT):
        events[media]["examples"] = {
            "receipt": {"summary": "5 units arrive at store-12", "value": WALKTHROUGH_RECEIPT},
            "pos_sale": {"summary": "the till sells 3 in the shop", "value": _POS_SALE},
            "shipment": {"summary": "the warehouse ships order 1001", "value": _SHIPMENT},
        }
    events[CLOUDEVENTS_BATCH]["examples"] = {
        "batch": {"summary": "a receipt and a sale at the till", "value": [WALKTHROUGH_RECEIPT, _POS_SALE]}
    }
    reservations = paths["/v1/stores/{store}/reservations"]["post"]["responses"]
    reservations["409"]["content"][PROBLEM_MEDIA_TYPE]["examples"] = {
        "insufficient-stock": {"summary": "one more online reservation, refused", "value": _INSUFFICIENT}
    }
    level = paths["/v1/stores/{store}/stock/{sku}"]["get"]["responses"]["200"]["content"][JSON]
    level["example"] = _LEVEL


def _add_links(schema: dict[str, Any]) -> None:
    """A placed reservation leads to reading and releasing it (clients and stateful testers follow)."""
    paths = schema["paths"]
    placed = {"store": "$request.path.store", "reservation_id": "$response.body#/reservation_id"}
    links = {
        "GetReservation": {
            "operationId": paths["/v1/stores/{store}/reservations/{reservation_id}"]["get"]["operationId"],
            "parameters": placed,
            "description": "the reservation just placed",
        },
        "ReleaseReservation": {
            "operationId": paths["/v1/stores/{store}/reservations/{reservation_id}/release"]["post"][
                "operationId"
            ],
            "parameters": placed,
            "requestBody": {},
            "description": "release what remains of it",
        },
    }
    for status in ("200", "201"):
        paths["/v1/stores/{store}/reservations"]["post"]["responses"][status]["links"] = links
