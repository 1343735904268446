"""Builds the FastAPI application around a ledger: routers, error mapping, limits, OpenAPI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ledger.api import events, history, ops, reservations, stock
from ledger.api.problems import Problem, install_handlers, problem_response
from ledger.api.schemas import EventEnvelope, ReservationCreate
from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """Answers 413 problem+json to a body over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, body_bytes_max: int) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413,
            "content-too-large",
            "Content too large",
            f"a request body may hold at most {self.body_bytes_max} bytes",
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.body_bytes_max:
                await problem_response(too_large, scope.get("path"))(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.body_bytes_max:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await problem_response(too_large, scope.get("path"))(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_app(
    ledger: Ledger, settings: Settings, limits: IntakeLimits, *, manage_ledger: bool = True
) -> FastAPI:
    """The app; with manage_ledger it starts the ledger's threads on startup and stops them on shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_ledger:
            ledger.start()
        kafka = None
        if settings.kafka_bootstrap:
            from ledger.kafka import start_consumer

            kafka = start_consumer(ledger, settings, limits)  # a thread; the ledger is started
            app.state.metrics.register(kafka.collector)
        app.state.kafka = kafka
        try:
            yield
        finally:
            if kafka is not None:
                await asyncio.to_thread(kafka.stop)  # finishes the batch, commits, leaves the group
            if manage_ledger:
                ledger.stop()

    app = FastAPI(
        title="Stock ledger",
        version="1.0.0",
        summary="One immutable per-store stock ledger: levels, reservations and the audit trail.",
        lifespan=lifespan,
    )
    app.state.ledger = ledger
    app.state.settings = settings
    app.state.intake_limits = limits
    app.state.metrics = ops.metrics_registry(ledger)
    app.state.kafka = None
    for module in (stock, events, reservations, history, ops):
        app.include_router(module.router)
    install_handlers(app)
    app.add_middleware(BodySizeLimit, body_bytes_max=settings.body_bytes_max)
    _document_raw_bodies(app)
    return app


def create_asgi(ledger: Ledger, settings: Settings, limits: IntakeLimits) -> ASGIApp:
    """What `ledger serve` runs: the application behind the fast path (ledger/api/fastpath.py)."""
    from ledger.api.fastpath import FastPath

    app = create_app(ledger, settings, limits)
    return FastPath(app, ledger, settings, limits)


def _document_raw_bodies(app: FastAPI) -> None:
    """The event and reservation routes read their bodies raw (for speed and field-precise errors);
    their schemas are added to the OpenAPI document here."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (EventEnvelope, ReservationCreate):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
