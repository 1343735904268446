"""The HTTP edge's checks before any route, in this order: the worker's capacity (503), the Host
(400), the token (401), the token's rate (429). What a valid token may do (403) is each route's
declaration (ledger/api/deps.py).

Authentication comes first, before routing: without a valid token, an unknown route answers 401 as
well. The grant found is left in the request's scope (`GRANT_KEY`) for the routes and the fast
path; `None` there means the service is open (no token exists and none is required) or the
route is open (`OPEN_PATHS`). Nothing here reaches the database: the tokens are in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.access.book import TokenBook, Unauthenticated
from ledger.access.hosts import NOT_ALLOWED_DETAIL, PROBE_PATHS, host_allowed, host_lines_refusal
from ledger.access.limiter import RateLimited, RateLimiter
from ledger.api.docs import ASSETS_PREFIX
from ledger.api.problems import Problem, access_problem, problem_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GRANT_KEY = "ledger.grant"
# CONTRACT §5: the routes that never need a token (and /metrics, unless LEDGER_METRICS_AUTH=required).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs"})
# And what /docs loads: a browser sends no token for a page's assets.
OPEN_PREFIX = ASSETS_PREFIX
METRICS_PATH = "/metrics"
# The console's assets need a token (its cookie) but are not held to the token's rate: a page
# loads four of them at once, which a rate under 5 a second refused (a blank plot, an unstyled
# page), and the browser keeps them after the first load.
UNRATED_PREFIX = "/ui/static/"


HOSTS_REMEMBERED_MAX = 256  # Host values whose answer is kept; past it, forgotten all at once

# In a request's scope when its worker held LEDGER_HTTP_CONNECTIONS_MAX connections or requests as
# it arrived (the server's protocol marks it: ledger/api/connections.py). Liveness and the metrics
# are answered still: from memory, at once, and most wanted when a worker is full.
OVER_CAPACITY_KEY = "ledger.over_capacity"
OVER_CAPACITY_EXEMPT_PATHS = frozenset({"/healthz", METRICS_PATH})
OVER_CAPACITY = Problem(
    503,
    "over-capacity",
    "Too many connections",
    "this worker holds LEDGER_HTTP_CONNECTIONS_MAX connections or requests now",
    headers={"Connection": "close"},
)


HOST_NOT_ALLOWED = Problem(400, "invalid-host", "Host not allowed", NOT_ALLOWED_DETAIL)


class EdgeGate:
    """Answers 503 to a request its worker has no capacity for, and 400 to one whose Host is not
    one this service is reached by, or that names more than one Host or, past HTTP/1.0, none (the
    probes excepted)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed
        # The answer for each Host header value seen (clients send the same few again and again).
        self._seen: dict[bytes | None, bool] = {}

    def _allows(self, host: bytes | None) -> bool:
        allowed = self._seen.get(host)
        if allowed is None:
            allowed = host_allowed(self.allowed, host)
            if len(self._seen) >= HOSTS_REMEMBERED_MAX:
                self._seen.clear()
            self._seen[host] = allowed
        return allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if OVER_CAPACITY_KEY in scope and scope["path"] not in OVER_CAPACITY_EXEMPT_PATHS:
            await problem_response(OVER_CAPACITY, scope["path"])(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] not in PROBE_PATHS:
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            refused = None
            version = scope.get("http_version", "1.1")  # ASGI requires it; a test's scope may lack it
            if (lines_refused := host_lines_refusal(len(hosts), version)) is not None:
                refused = Problem(400, "invalid-host", "Host not allowed", lines_refused)
            elif self.allowed is not None and not self._allows(hosts[0] if hosts else None):
                refused = HOST_NOT_ALLOWED
            if refused is not None:
                await problem_response(refused, scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AuthGate:
    """Authenticates every request that needs a token, and holds each token to its rate."""

    def __init__(
        self, app: ASGIApp, book: TokenBook, limiter: RateLimiter, *, required: bool, metrics_open: bool
    ) -> None:
        self.app = app
        self.book = book
        self.limiter = limiter
        self.required = required  # LEDGER_AUTH=required: tokens even before one exists
        self.open_paths = OPEN_PATHS | {METRICS_PATH} if metrics_open else OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if (
            path in self.open_paths
            or path.startswith(OPEN_PREFIX)
            or not (self.required or self.book.any_tokens)
        ):
            scope[GRANT_KEY] = None
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
                break
        try:
            grant = self.book.grant_for_header(authorization)
            if grant.rate_per_s is not None and not path.startswith(UNRATED_PREFIX):
                self.limiter.admit(grant)  # (most tokens have no rate: no call to make)
        except (Unauthenticated, RateLimited) as refused:
            await problem_response(access_problem(refused), scope["path"])(scope, receive, send)
            return
        scope[GRANT_KEY] = grant
        await self.app(scope, receive, send)
