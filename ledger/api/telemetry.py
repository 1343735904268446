"""What is recorded of every HTTP request, outermost of the ASGI stack: its request id (taken
from `X-Request-ID` when sound, else made; set for every log line the request causes and
returned in the answer's `X-Request-ID`, written by the server's protocol where it can:
response_head.py), its metrics (route template, method, status, latency),
with LEDGER_ACCESS_LOG=on, one access log line, and with tracing on its span (telemetry/spans.py).

Per request this is a header scan, a context variable, two clock readings and one histogram
observation: a few microseconds, on the fast path as on the FastAPI routes. The route template is
the one the request was answered by: the fast path names it (ROUTE_KEY), FastAPI leaves its route
in the scope, and a request answered before routing (a refused host or token, a 404) is matched
against the routes only then."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from time import perf_counter
from typing import Any

from starlette.routing import BaseRoute, Match

from ledger.api.gate import GRANT_KEY
from ledger.api.http_metrics import UNMATCHED_ROUTE, HttpMetrics
from ledger.api.response_head import (
    REQUEST_ID_KEY,
    RESPONSE_HEAD_KEY,
    STATUS_KEY,
    ResponseHead,
    through,
    unanswered_status,
)
from ledger.telemetry import tracing
from ledger.telemetry.logs import FIELDS
from ledger.telemetry.request_ids import HEADER, REQUEST_ID, new_request_id, sound_or_new

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE_KEY = "ledger.route"  # the template of the route a request was answered by, when known early
# What the layers inside note in a request's scope for this one: the route that answered (the fast
# path's name for it, or FastAPI's route) and the token's grant (the access log's principal). A
# layer that hands inward a scope of its own (head.py, the console's session) copies back these
# and nothing else, so that nothing it put there for the inside (a token made from a cookie) leaks out.
NOTED_INSIDE = (ROUTE_KEY, "route", GRANT_KEY)
ACCESS_LOG_PATH_CHARS_MAX = 2048

access_log = logging.getLogger("ledger.http.access")


class RequestTelemetry:
    def __init__(
        self, app: ASGIApp, routes: Sequence[BaseRoute], metrics: HttpMetrics, *, access_log_on: bool
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.access_log_on = access_log_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        for name, value in scope["headers"]:
            if name == HEADER:
                request_id = sound_or_new(value)
                break
        else:
            request_id = new_request_id()
        # Not reset afterwards: the server runs each request in a task of its own, so the id ends
        # with it, and the server's own line about a failed request still names it.
        REQUEST_ID.set(request_id)
        traced = None if tracing.active is None else tracing.active.http_started(scope, request_id.decode())
        head: ResponseHead | None = scope.get(RESPONSE_HEAD_KEY)
        if head is None:  # not `ledger serve`'s server: the header goes through `send`
            send = through(scope, send, request_id)
        else:
            scope[REQUEST_ID_KEY] = request_id
            head.pending = scope
        try:
            await self.app(scope, receive, send)
        finally:
            seconds = perf_counter() - started
            route = scope.get(ROUTE_KEY) or self._template(scope)
            status = scope.get(STATUS_KEY) or unanswered_status(head)
            self.metrics.observe(route, scope["method"], status, seconds)
            if self.access_log_on:
                _log_access(scope, route, status, seconds)
            if traced is not None:
                traced.finished(scope["method"], route, status)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        # Answered before routing (or not found): the first route whose path matches, if any.
        for candidate in self.routes:
            path = getattr(candidate, "path", None)  # a mount or a router's wrapper has none
            if path is not None and candidate.matches(scope)[0] is not Match.NONE:
                return str(path)
        return UNMATCHED_ROUTE


def _log_access(scope: Scope, route: str, status: int, seconds: float) -> None:
    """The path as sent (percent-encoded, so one line stays one line), without its query string;
    the token is never logged, only its name (the principal)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    path = path.split("?", 1)[0][:ACCESS_LOG_PATH_CHARS_MAX]
    grant = scope.get(GRANT_KEY)
    principal = None if grant is None else grant.name
    method = scope["method"]
    access_log.info(
        "%s %s %d %.1f ms route=%s%s",
        method,
        path,
        status,
        seconds * 1000,
        route,
        "" if principal is None else f" principal={principal}",
        extra={
            FIELDS: {
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_seconds": round(seconds, 6),
                "principal": principal,
            }
        },
    )
