"""RFC 9457 problem details: every error the API answers, mapped once, with a stable `type`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from ledger.access.book import Unauthenticated
from ledger.access.limiter import RateLimited
from ledger.access.scopes import Forbidden
from ledger.api.problem_types import HTTP_ERROR_TYPES
from ledger.http_problems import PROBLEM_MEDIA_TYPE, RETRY_AFTER_S, WWW_AUTHENTICATE
from ledger.intake.envelope import FieldError, InvalidEvent
from ledger.service import DatabaseUnavailable
from ledger.storage.availability import UNAVAILABLE_ERRORS, database_unavailable
from ledger.writer.submission import SubmissionFailed, WriterUnavailable

log = logging.getLogger("ledger.api")

# The longest Retry-After a 429 says (a token may have a rate under one request a day); asked again
# then, the answer says again how long.
RETRY_AFTER_S_MAX = 86_400


class Problem(Exception):
    """An error answer. `type` is a stable slug (a relative URI reference), e.g. insufficient-stock."""

    def __init__(
        self,
        status: int,
        type_: str,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    """The problem as application/problem+json; a 503 says when to retry (Retry-After)."""
    body: dict[str, Any] = {"type": problem.type, "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if problem.status == 503 else None
    if problem.headers:
        headers = {**(headers or {}), **problem.headers}
    return Response(
        orjson.dumps(body), status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def invalid(errors: list[FieldError], title: str = "Invalid request") -> Problem:
    detail = "; ".join(f"{e.field or 'body'}: {e.message}" for e in errors)
    return Problem(422, "invalid-request", title, detail, errors=[e.as_dict() for e in errors])


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts)


def problem_for(error: Exception) -> Problem | None:
    """The problem an operating error is answered with; None for a bug (answered 500)."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, InvalidEvent):
        return invalid(error.errors, "Invalid event")
    if isinstance(error, Unauthenticated | Forbidden | RateLimited):
        return access_problem(error)
    if isinstance(error, SubmissionFailed):
        log.error("a submission failed for a reason a retry will not change: %s", error.reason)
        # Not 503: that asks for the same request again, which would fail the same way for ever.
        # 422 says "this content, as sent, cannot be processed", and the contract uses it already.
        return Problem(
            422,
            "submission-failed",
            "The ledger could not record these events; sending them again will not change that",
            "Nothing of the request was recorded. Why is in the service's log (its text may hold "
            "the internals of a bug, so it is not shown here).",
        )
    if isinstance(error, ClientDisconnect):
        # The body stopped short of its length, or its chunks were malformed: the server has
        # answered a malformed one itself, and a client that went away reads nothing more.
        return Problem(
            400,
            "incomplete-body",
            "The request ended before its body did",
            "The connection closed before the whole body arrived: nothing of it was recorded.",
        )
    if isinstance(error, WriterUnavailable):
        return Problem(503, "unavailable", "The ledger cannot take writes now", str(error))
    if isinstance(error, DatabaseUnavailable) or database_unavailable(error):
        return Problem(
            503,
            "database-unavailable",
            "The ledger's database is unavailable now",
            "Retry later: re-sending an event with the same source and id records it at most once.",
        )
    if isinstance(error, TimeoutError):
        return Problem(
            503,
            "timeout",
            "The ledger did not answer in time; the outcome is not known",
            "Retry with the same source and id: a recorded event is answered as a duplicate.",
        )
    return None


def access_problem(error: Unauthenticated | Forbidden | RateLimited) -> Problem:
    """CONTRACT §5's refusals. None of them holds the token: only its name, which is no secret."""
    if isinstance(error, Unauthenticated):
        return Problem(
            401, "unauthorized", "Unauthorized", str(error), headers={"WWW-Authenticate": WWW_AUTHENTICATE}
        )
    if isinstance(error, RateLimited):
        retry_after_s = min(error.retry_after_s, RETRY_AFTER_S_MAX)
        return Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"{error}: retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
    named: dict[str, Any] = {
        key: value
        for key, value in (("role", error.role), ("store", error.store), ("source", error.source))
        if value is not None
    }
    return Problem(403, "forbidden", "Forbidden", error.detail, **named)


def internal_error(error: Exception, method: str, path: str) -> Problem:
    log.exception("unhandled error on %s %s", method, path, exc_info=error)
    return Problem(500, "internal-error", "Internal error", type(error).__name__)


def validation_problem(error: RequestValidationError) -> Problem:
    """A request's parameters or body that FastAPI refused: 422, naming each field."""
    return invalid(
        [FieldError(_field_name(tuple(e.get("loc", ()))), e.get("msg", "is invalid")) for e in error.errors()]
    )


def install_handlers(app: FastAPI) -> None:
    async def on_operating_error(request: Request, error: Exception) -> Response:
        problem = problem_for(error) or internal_error(error, request.method, request.url.path)
        return problem_response(problem, request.url.path)

    # Every operating error is named here, not left to the handler of Exception: Starlette answers
    # that one from its outermost middleware and then re-raises, and the server drops the
    # connection (seen: reads during a database outage lost their keep-alive connection).
    operating_errors = (
        Problem,
        ClientDisconnect,
        InvalidEvent,
        SubmissionFailed,
        WriterUnavailable,
        TimeoutError,
        DatabaseUnavailable,
        Unauthenticated,
        Forbidden,
        RateLimited,
    )
    for error_type in (*operating_errors, *UNAVAILABLE_ERRORS, Exception):
        app.add_exception_handler(error_type, on_operating_error)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError) -> Response:
        return problem_response(validation_problem(error), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        slug = HTTP_ERROR_TYPES.get(error.status_code, "http-error")
        detail = str(error.detail) if error.detail else ""
        # A 405 says which methods the path takes (Allow, RFC 9110). Starlette names only the first
        # route of the path; a path with a route per method (PUT and GET of a policy) needs them all.
        headers = dict(error.headers) if error.headers else None
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        problem = Problem(error.status_code, slug, detail or slug.replace("-", " "), detail, headers=headers)
        return problem_response(problem, request.url.path)


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the routes whose path matches. FastAPI keeps the routes of an included
    router in a wrapper of its own, which has no methods: the app's routes, unwrapped, are kept in
    its state (ledger/api/guard.py); its own routes (the docs) are in `app.routes`."""
    methods: set[str] = set()
    for route in (*getattr(request.app.state, "api_routes", ()), *request.app.routes):
        route_methods = getattr(route, "methods", None)
        if not route_methods or not isinstance(route, BaseRoute):
            continue  # a wrapper of included routes, or a mount
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods.update(route_methods)
    if "GET" in methods:
        methods.add("HEAD")  # every GET takes HEAD too (ledger/api/head.py)
    return sorted(methods)
