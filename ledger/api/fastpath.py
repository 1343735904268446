"""A fast path for the hottest requests: placing a reservation, sourcing, reading a cached level.

Measured: FastAPI's routing, dependency solving and middleware stack were three quarters of the
CPU of a reservation request (the writer process does the rest of the work). This ASGI wrapper
recognises exactly `POST /v1/stores/{store}/reservations`, `POST /v1/sourcing` and
`GET /v1/stores/{store}/stock/{sku}` (no query string, level in memory) with well-formed ids, and
calls the same functions the FastAPI routes call (`reserve`, `source_order`, `cached_level`) and
the same error mapping (`problem_for`). Anything else, including every malformed id, goes to
the FastAPI application unchanged, so answers do not differ; but for an API path whose id holds an
encoded slash, which no route may see decoded (ledger/api/slash_in_id.py).
It makes the same access checks as those routes (the role, the store, the content type) on the
grant the gate found (ledger/api/gate.py), from memory.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import BaseRoute

from ledger.access.scopes import Grant, Role, authorize_role, authorize_write_at
from ledger.api.body_limit import declared_too_large, too_large
from ledger.api.deps import REST_SOURCE, principal
from ledger.api.gate import GRANT_KEY
from ledger.api.http_metrics import UNMATCHED_ROUTE
from ledger.api.media import JSON_ONLY, require_media_type
from ledger.api.problems import internal_error, problem_for, problem_response
from ledger.api.reservations import reserve
from ledger.api.reservations_across import across_limits
from ledger.api.schemas import level_public
from ledger.api.slash_in_id import holds_an_encoded_slash, refusal
from ledger.api.sourcing import source_order
from ledger.api.stock import cached_level
from ledger.api.telemetry import ROUTE_KEY
from ledger.config import Settings
from ledger.domain.ids import ID_REGEX
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ID = re.compile(ID_REGEX)
# The FastAPI routes' templates, for the metrics (ledger/api/telemetry.py).
RESERVATIONS_ROUTE = "/v1/stores/{store}/reservations"
STOCK_ROUTE = "/v1/stores/{store}/stock/{sku}"
SOURCING_ROUTE = "/v1/sourcing"


class FastPath:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        ledger: Ledger,
        settings: Settings,
        limits: IntakeLimits,
    ) -> None:
        self.app = app
        self.routes = routes  # the API's, for a path whose id holds an encoded slash
        self.ledger = ledger
        self.limits = limits
        self.body_bytes_max = settings.body_bytes_max
        self.across_limits = across_limits(settings, limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path")
            if raw_path and b"%2" in raw_path and holds_an_encoded_slash(scope["path"], raw_path):
                problem, route = refusal(scope, self.routes)
                scope[ROUTE_KEY] = route or UNMATCHED_ROUTE  # not the route the decoded path names
                await problem_response(problem, scope["path"])(scope, receive, send)
                return
            if scope["path"] == SOURCING_ROUTE and scope["method"] == "POST":
                scope[ROUTE_KEY] = SOURCING_ROUTE
                await self._source(scope, receive, send)
                return
            parts = scope["path"].split("/")
            # ["", "v1", "stores", store, "reservations"] or [..., store, "stock", sku]
            if len(parts) >= 5 and parts[1] == "v1" and parts[2] == "stores" and _ID.fullmatch(parts[3]):
                method = scope["method"]
                if method == "POST" and len(parts) == 5 and parts[4] == "reservations":
                    scope[ROUTE_KEY] = RESERVATIONS_ROUTE
                    await self._reserve(parts[3], scope, receive, send)
                    return
                if (
                    method == "GET"
                    and len(parts) == 6
                    and parts[4] == "stock"
                    and _ID.fullmatch(parts[5])
                    and not scope.get("query_string")
                    # A declared body over the limit: the application's 413 (ledger/api/body_limit.py).
                    and not declared_too_large(scope["headers"], self.body_bytes_max)
                ):
                    grant: Grant | None = scope[GRANT_KEY]
                    if grant is not None and not grant.covers_store(parts[3]):
                        await self.app(scope, receive, send)  # the route answers the refusal
                        return
                    view = cached_level(self.ledger, parts[3], parts[5])
                    if view is not None:
                        scope[ROUTE_KEY] = STOCK_ROUTE
                        response = Response(orjson.dumps(level_public(view)), media_type="application/json")
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _reserve(self, store: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            grant: Grant | None = scope[GRANT_KEY]
            authorize_role(grant, Role.PRODUCER)
            authorize_write_at(grant, store, REST_SOURCE)
            require_media_type(scope["headers"], JSON_ONLY)
            body = await self._body(scope, receive)
            response = await reserve(self.ledger, self.limits, store, body, principal(grant))
        except Exception as error:  # noqa: BLE001 - mapped exactly as the FastAPI handlers map it
            problem = problem_for(error) or internal_error(error, scope["method"], scope["path"])
            response = problem_response(problem, scope["path"])
        await response(scope, receive, send)

    async def _source(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            grant: Grant | None = scope[GRANT_KEY]
            authorize_role(grant, Role.PRODUCER)
            require_media_type(scope["headers"], JSON_ONLY)
            body = await self._body(scope, receive)
            response = await source_order(self.ledger, self.across_limits, body, grant)
        except Exception as error:  # noqa: BLE001 - mapped exactly as the FastAPI handlers map it
            problem = problem_for(error) or internal_error(error, scope["method"], scope["path"])
            response = problem_response(problem, scope["path"])
        await response(scope, receive, send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        if declared_too_large(scope["headers"], self.body_bytes_max):
            raise too_large(self.body_bytes_max)  # before a byte is read: no "100 Continue"
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_bytes_max:
                raise too_large(self.body_bytes_max)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
