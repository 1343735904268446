"""Every route says what it needs of the caller's token, and the OpenAPI document says it too.

A route declares its role with a dependency (ledger/api/deps.py: `ReaderGrant`, `WritableStore`,
...), or is one of CONTRACT §5's open routes. `check_every_route_is_guarded` refuses to build an
app with a route that does neither, so that a route added later cannot be left open by mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ledger.access.hosts import PROBE_PATHS
from ledger.access.scopes import Role
from ledger.api.deps import RoleRequired
from ledger.api.gate import METRICS_PATH, OPEN_PATHS
from ledger.api.problems import RETRY_AFTER_S_MAX
from ledger.api.schemas import ProblemPublic

SECURITY_SCHEME = "bearerToken"
# What CONTRACT §5 leaves open, as chosen here (the README says the same, at more length).
ACCESS = """**Access** (CONTRACT §5). Send `Authorization: Bearer <token>`, a token from `ledger tokens
create`. While no token exists and `LEDGER_AUTH` is unset the service is open; once one exists (revoked and
expired ones too) every route but `/healthz`, `/readyz`, `/openapi.json` and `/docs` (and `/metrics` unless
`LEDGER_METRICS_AUTH=required`) needs a valid token, unknown routes included: 401 `unauthorized`. Each
operation names its role in `x-required-role`: `reader` for every GET, `producer` for events and reservations;
403 `forbidden` names the missing `role`, `store` or `source`. A store-scoped token acts on its stores only (a
transfer needs its sending store); `GET /v1/stock/{sku}` lists and totals its stores. A source-scoped token
may send only events whose `source` starts with one of its prefixes; the reservation routes, sourcing and
policy changes record under the ledger's own sources (`ledger/http`, `ledger/sourcing`, `ledger/policies`),
which its prefixes must cover, while an event it sends may name any reservation at its stores. No producer may
send under a source starting with `ledger/` (422). A request with any element out of scope is refused whole
and records nothing. 429 `rate-limited` with `Retry-After` (seconds): a token's `--rate-per-s` holds in each
serving process (HTTP worker, instance) on its own, with a second's worth at once. Every write route takes
only `application/json` (events: also `application/cloudevents+json`, and `application/cloudevents-batch+json`
for arrays), else 415.
A `Host` other than `LEDGER_ALLOWED_HOSTS` (by default the loopback names) answers 400 `invalid-host`, and so
does, whatever the setting, a request with two `Host` lines or an HTTP/1.1 request with none (RFC 9112),
except on `/healthz` and `/readyz`. No CORS unless `LEDGER_CORS_ORIGINS`. Every history entry names its
`principal`: the token's name; `kafka`; `ledger` (expiry); `import` (`ledger import`); null while the service
was open. `/docs` loads its assets from `/docs/assets/`, open too."""
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemPublic"}}}


def route_role(route: APIRoute) -> Role | None:
    """The role a route declares (the highest, if it declares several), or None."""
    found: list[Role] = []

    def visit(dependant: Dependant) -> None:
        if isinstance(dependant.call, RoleRequired):
            found.append(dependant.call.role)
        for inner in dependant.dependencies:
            visit(inner)

    visit(route.dependant)
    return max(found, key=list(Role).index) if found else None


def api_routes(app: FastAPI, routers: Sequence[APIRouter]) -> list[APIRoute]:
    """The app's routes: those of the routers it includes, and its own. (Recent FastAPI versions
    keep an included router's routes inside a wrapper of their own in `app.routes`.)"""
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    return routes + [route for route in app.routes if isinstance(route, APIRoute)]


def check_every_route_is_guarded(routes: Sequence[APIRoute]) -> None:
    unguarded = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in routes
        if route.path not in OPEN_PATHS and route_role(route) is None
    ]
    if unguarded:
        raise RuntimeError(f"routes that declare no role (ledger/api/deps.py): {', '.join(unguarded)}")


def document_access(routes: Sequence[APIRoute], schema: dict[str, Any]) -> None:
    """The bearer scheme, and on each operation: its security, its role, and its 400/401/403/429."""
    info = schema.setdefault("info", {})
    info["description"] = f"{info['description']}\n\n{ACCESS}" if info.get("description") else ACCESS
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("ProblemPublic", ProblemPublic.model_json_schema())
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `ledger tokens create` (sl_live_…). Required on every route but "
        "/healthz, /readyz, /openapi.json, /docs (and /metrics unless LEDGER_METRICS_AUTH=required) "
        "once a token exists or LEDGER_AUTH=required; while no token exists the service is open.",
    }
    for route in routes:
        if route.path not in schema.get("paths", {}):
            continue
        role = route_role(route)
        for method in route.methods or ():
            operation = schema["paths"][route.path].get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if route.path not in PROBE_PATHS:
                responses["400"] = _answer(
                    "a Host not in LEDGER_ALLOWED_HOSTS, two Host lines, or none (`invalid-host`)"
                )
            if route.path in OPEN_PATHS or role is None:
                operation["security"] = []
                continue
            condition = " (with LEDGER_METRICS_AUTH=required)" if route.path == METRICS_PATH else ""
            operation["security"] = [{SECURITY_SCHEME: []}]
            operation["x-required-role"] = role.value
            responses["401"] = _answer(
                f"no valid token{condition} (`unauthorized`)",
                {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
            )
            responses["403"] = _answer(
                f"the token lacks the {role} role, or a store or source in scope (`forbidden`; "
                "`role`, `store` or `source` names what is missing)"
            )
            responses["429"] = _answer(
                "the token is over its rate (`rate-limited`)",
                {
                    "Retry-After": {
                        "schema": {"type": "integer", "minimum": 1, "maximum": RETRY_AFTER_S_MAX},
                        "description": "seconds until a request is allowed again",
                    }
                },
            )


def _answer(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _PROBLEM}
    if headers:
        answer["headers"] = headers
    return answer
