"""Which problems each operation of the OpenAPI document may answer, by status, in words that name
each problem `type` it may carry (ledger/api/problem_types.py lists the types): the server's, the
body's, the ones every operation shares and each operation's own. ledger/api/openapi.py completes
the document with them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from ledger.api.schemas import RETRY_AFTER_HEADER
from ledger.http_problems import PROBLEM_MEDIA_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemPublic"}

# The problems an operation may answer besides its own, by status, each naming its `type` (the
# slugs of ledger/api/problem_types.py). A status's reasons are joined with "; or ".
SERVER_400 = (
    "the bytes are not an HTTP request the server can read, or its headers are over "
    "LEDGER_HTTP_HEADER_BYTES_MAX (`invalid-request`, answered by the server itself: no X-Request-ID)"
)
INCOMPLETE_BODY_400 = "the connection ended before the whole body arrived (`incomplete-body`)"
INVALID_422 = "invalid request: `errors` names each wrong field (`invalid-request`)"
# ledger/api/problems.py: a write the writer refused for a reason a retry will not change.
SUBMISSION_FAILED_422 = (
    "the ledger could not record it, and sending it again will not change that (`submission-failed`)"
)
INTERNAL_500 = "a bug (`internal-error`): `detail` names the exception's class, the service's log the rest"
UNAVAILABLE_503 = (
    "the writer (`unavailable`) or the database (`database-unavailable`) is unavailable, or did not "
    "answer in time (`timeout`); retry after Retry-After"
)
OVER_CAPACITY_503 = "the worker holds LEDGER_HTTP_CONNECTIONS_MAX connections (`over-capacity`)"
BODY_PROBLEMS = {
    "413": "the body is over LEDGER_BODY_BYTES_MAX (`content-too-large`)",
    "415": "the content type is not one the route takes (`unsupported-media-type`)",
}
# ledger/api/body_limit.py refuses a declared body over the limit on every route, before the route
# is reached: a GET that declares one is refused as a POST is, not read to the end and ignored.
DECLARED_BODY_PROBLEM = {
    "413": (
        "the request declares a body (`Content-Length`) over LEDGER_BODY_BYTES_MAX, though this "
        "operation takes none (`content-too-large`)"
    ),
}
_AT_POSITION_503 = (
    "`min_position` is not applied by this instance yet (`position-not-reached`; `position` is the "
    "one it has applied); retry"
)
_UNKNOWN_404 = "no such reservation (`unknown-reservation`)"
_TOO_MANY_STORES_422 = "more stores hold the id than LEDGER_RESERVATION_STORES_MAX (`too-many-stores`)"
_CONFLICT_409 = "the reservation id exists with other lines (`reservation-conflict`)"
# What an operation answers of its own, by status, each naming its slug.
OWN_PROBLEMS = {
    ("get", "/v1/stores/{store}/stock/{sku}"): {"503": _AT_POSITION_503},
    ("get", "/v1/stores/{store}/stock"): {"503": _AT_POSITION_503},
    ("get", "/v1/stores/{store}/stock/{sku}/explain"): {
        "422": "more open reservations or transfers hold the SKU than LEDGER_EXPLAIN_ITEMS_MAX "
        "(`too-many-to-explain`)"
    },
    ("post", "/v1/stores/{store}/reservations"): {
        "409": "not enough for every line (`insufficient-stock`: `shortfall` names each short line, "
        f"`position` the refused event); or {_CONFLICT_409}"
    },
    ("get", "/v1/stores/{store}/reservations/{reservation_id}"): {"404": _UNKNOWN_404},
    ("post", "/v1/stores/{store}/reservations/{reservation_id}/release"): {"404": _UNKNOWN_404},
    ("post", "/v1/reservations"): {
        "409": "not enough for every line (`insufficient-stock`: `shortfall` names each short line and "
        f"its `store`); or {_CONFLICT_409} at any of its stores"
    },
    ("get", "/v1/reservations/{reservation_id}"): {"404": _UNKNOWN_404, "422": _TOO_MANY_STORES_422},
    ("post", "/v1/reservations/{reservation_id}/release"): {
        "404": _UNKNOWN_404,
        "422": _TOO_MANY_STORES_422,
    },
    ("post", "/v1/sourcing"): {
        "409": "no set of candidates within `max_stores` serves every line (`insufficient-stock`: "
        "`shortfall` names each line the candidates together cannot serve, empty when only "
        f"`max_stores` stands in the way); with `reserve`, {_CONFLICT_409}"
    },
    ("get", "/readyz"): {
        "503": "this instance should not be sent traffic now (`not-ready`): `detail` says why"
    },
}
NO_PROBLEMS = frozenset({"/healthz", "/metrics"})  # answered from memory: no parameters, no database
# Catches the database's and the writer's errors itself, and says them as `not-ready`.
OWN_503 = frozenset({"/readyz"})
# What FastAPI says of a response it generates, or a status's reason phrase: replaced by our words.
_GENERATED = frozenset({"", "Validation Error", "Successful Response"})


def describe_problems(method: str, path: str, operation: dict[str, Any], takes_input: bool) -> None:
    """Each problem answer under application/problem+json, its description naming every `type` it
    may carry: what a route or ledger/api/guard.py said of it, then `_problems`."""
    responses: dict[str, Any] = operation["responses"]
    for status, reasons in _problems(method, path, operation, takes_input).items():
        response = responses.setdefault(status, {})
        said = response.get("description") or ""
        kept = [] if _generated(status, said) else [said]
        response["description"] = "; or ".join(dict.fromkeys([*kept, *reasons]))
    for status, response in responses.items():
        if int(status) < 400:
            continue
        if _generated(status, response.get("description") or ""):
            # A problem a route declares says which `type` it is, as every other does.
            raise RuntimeError(
                f"{method.upper()} {path} {status}: say its problem in OWN_PROBLEMS "
                "(ledger/api/operation_problems.py)"
            )
        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}
        if status == "503":
            response["headers"] = {**response.get("headers", {}), **RETRY_AFTER_HEADER}


def _generated(status: str, description: str) -> bool:
    return description in _GENERATED or description == HTTPStatus(int(status)).phrase


def _problems(method: str, path: str, operation: dict[str, Any], takes_input: bool) -> dict[str, list[str]]:
    """The problems an operation may answer, by status: the server's, the body's, the common ones
    and its own (OWN_PROBLEMS). Access (400 invalid-host, 401, 403, 429) is said by
    ledger/api/guard.py."""
    takes_body = "requestBody" in operation
    problems: dict[str, list[str]] = {"400": [SERVER_400]}
    if takes_body:
        problems["400"].append(INCOMPLETE_BODY_400)
    for status, reason in (BODY_PROBLEMS if takes_body else DECLARED_BODY_PROBLEM).items():
        problems[status] = [reason]
    if path not in NO_PROBLEMS:
        if takes_input:
            problems["422"] = [INVALID_422]
        if method in ("post", "put"):  # a write: the writer may refuse it for good
            problems.setdefault("422", []).append(SUBMISSION_FAILED_422)
        problems["500"] = [INTERNAL_500]
        problems["503"] = [OVER_CAPACITY_503] if path in OWN_503 else [UNAVAILABLE_503, OVER_CAPACITY_503]
    for status, reason in OWN_PROBLEMS.get((method, path), {}).items():
        problems.setdefault(status, []).append(reason)
    return problems
