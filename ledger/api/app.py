"""Builds the FastAPI application around a ledger: routers, error mapping, limits, OpenAPI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from ledger.access.book import TokenBook
from ledger.access.hosts import allowed_hosts
from ledger.access.limiter import RateLimiter
from ledger.api import (
    events,
    explain,
    history,
    ops,
    policies,
    reservations,
    reservations_across,
    sourcing,
    stock,
    timeline,
)
from ledger.api.body_limit import BodySizeLimit
from ledger.api.console import ConsoleSession
from ledger.api.console import router as console_router
from ledger.api.docs import install_docs
from ledger.api.gate import AuthGate, EdgeGate
from ledger.api.guard import api_routes, check_every_route_is_guarded
from ledger.api.head import HeadAsGet
from ledger.api.http_metrics import HttpMetrics
from ledger.api.openapi import install_openapi, package_version
from ledger.api.problems import Problem, install_handlers, problem_response
from ledger.api.telemetry import RequestTelemetry
from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


TITLE = "Stock ledger"


def token_book(ledger: Ledger, settings: Settings) -> TokenBook:
    """This process's copy of the tokens, on the ledger's database (not started)."""
    return TokenBook(
        ledger.recorder,
        refresh_interval_s=settings.auth_refresh_ms / 1000,
        last_use_flush_s=settings.auth_last_use_flush_s,
    )


def create_app(
    ledger: Ledger,
    settings: Settings,
    limits: IntakeLimits,
    *,
    manage_ledger: bool = True,
    book: TokenBook | None = None,
) -> FastAPI:
    """The app; with manage_ledger it starts the ledger's threads on startup and stops them on shutdown.
    It keeps `book` (the tokens) current while it runs; the gates in front of it (create_asgi) use it."""
    tokens = book or token_book(ledger, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_ledger:
            ledger.start()
        await ledger.writer.subscribe()  # commits reach this process's cache before any write here
        await asyncio.to_thread(tokens.start)  # the tokens are read before the first request
        kafka = None
        if settings.kafka_bootstrap:
            from ledger.kafka import start_consumer

            kafka = start_consumer(ledger, settings, limits)  # a thread; the ledger is started
            app.state.metrics.register(kafka.collector)
        feed = None
        if settings.kafka_bootstrap and settings.feed_enabled:
            from ledger.kafka import start_levels_feed

            feed = start_levels_feed(ledger.recorder, settings)  # a thread; one instance publishes
            app.state.metrics.register(feed.collector)
        app.state.kafka = kafka
        try:
            yield
        finally:
            if feed is not None:
                await asyncio.to_thread(feed.stop)  # its position is saved after each round
            if kafka is not None:
                await asyncio.to_thread(kafka.stop)  # finishes the batch, commits, leaves the group
            await asyncio.to_thread(tokens.stop)
            if manage_ledger:
                ledger.stop()

    app = FastAPI(
        title=TITLE,
        version=package_version(),
        summary="One immutable per-store stock ledger: levels, reservations and the audit trail.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's loads Swagger UI from a CDN; install_docs serves it from the package
        redoc_url=None,  # ReDoc from a CDN too; /docs is the one page, and it works offline
        # A path with a trailing slash is no route: 404 problem+json (CONTRACT §3), not a bare
        # redirect that the API's description does not declare.
        redirect_slashes=False,
    )
    app.state.ledger = ledger
    app.state.settings = settings
    app.state.intake_limits = limits
    app.state.http_metrics = HttpMetrics()
    app.state.metrics = ops.metrics_registry(ledger, app.state.http_metrics)
    app.state.kafka = None
    routers = [
        module.router
        for module in (
            stock,
            explain,
            events,
            reservations,
            reservations_across,
            sourcing,
            policies,
            history,
            timeline,
            ops,
        )
    ]
    routers.append(console_router)
    for router in routers:
        app.include_router(router)
    app.state.tokens = tokens
    install_handlers(app)
    app.add_middleware(BodySizeLimit, body_bytes_max=settings.body_bytes_max)
    routes = api_routes(app, routers)
    app.state.api_routes = routes
    check_every_route_is_guarded(routes)
    install_openapi(app, routes)
    install_docs(app, TITLE)
    return app


def create_asgi(ledger: Ledger, settings: Settings, limits: IntakeLimits) -> ASGIApp:
    """What `ledger serve` runs, outermost first: the request's id, metrics and access log
    (ledger/api/telemetry.py), HEAD taken as GET (ledger/api/head.py), the worker's capacity and
    the Host check, CORS (only when LEDGER_CORS_ORIGINS lists origins), the console's login cookie
    (ledger/api/console/session.py), the token and its rate (ledger/api/gate.py), the fast path
    (ledger/api/fastpath.py), then the application."""
    from ledger.api.fastpath import FastPath

    book = token_book(ledger, settings)
    app = create_app(ledger, settings, limits, book=book)
    gated: ASGIApp = AuthGate(
        FastPath(app, app.state.api_routes, ledger, settings, limits),
        book,
        RateLimiter(),
        required=settings.auth == "required",
        metrics_open=settings.metrics_auth == "open",
    )
    gated = ConsoleSession(gated, book, required=settings.auth == "required")  # the console's login
    origins = [origin.strip() for origin in (settings.cors_origins or "").split(",") if origin.strip()]
    if origins:
        gated = ProblemCors(
            gated,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            # What a page's script may read of an answer besides the safelisted headers.
            expose_headers=["x-request-id", "retry-after"],
            max_age=CORS_MAX_AGE_S,
        )
    return RequestTelemetry(
        HeadAsGet(EdgeGate(gated, allowed_hosts(settings.allowed_hosts))),
        # Each API route itself: app.routes holds an included router's routes in a wrapper of its own.
        [*app.state.api_routes, *app.router.routes],
        app.state.http_metrics,
        access_log_on=settings.access_log,
    )


CORS_MAX_AGE_S = 600  # how long a browser may keep a preflight's answer


class ProblemCors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight (an origin, method or header not allowed) answered
    400 problem+json as every other refusal (CONTRACT §3), not in plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        kept = {
            name: value
            for name, value in answer.headers.items()
            if name not in ("content-type", "content-length")
        }
        # Starlette's text names what was refused: "Disallowed CORS origin, headers".
        detail = bytes(answer.body).decode()
        problem = Problem(
            400, "cors-preflight-refused", "Cross-origin request not allowed", detail, headers=kept
        )
        return problem_response(problem)
