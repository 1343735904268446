"""The adapters' HTTP side as a FastAPI app: a route for each webhook, /metrics and /healthz.

Thin: each route hands the request, as plain values (exchange.py), to the receiver (inbound.py),
which authenticates, checks, stores and answers. The app adds only what the server must:
- a delivery's body is read no further than the receiver takes (DELIVERY_BYTES_MAX): a declared
  Content-Length over it is answered 413 before a byte of the body is read, a longer stream as
  soon as it passes the limit;
- the receiver's work waits on the database and the disk, so it runs on worker threads, at most
  `threads_max` at once, never on the event loop; a request a stop cancels does not wait for its
  thread, and is answered 503;
- any other path or method is the receiver's 404 problem+json (not FastAPI's 404 or 405), and a
  failure the receiver did not expect its 500 problem+json, with no detail;
- a request the server marked over capacity (ledger.api.connections) is the receiver's 503
  `over-capacity`, before any route: uvicorn's own answer is plain text, with no `type`. The
  liveness probe excepted (GET or HEAD /healthz), as the API's gate excepts it: answered 200 from
  memory there and then, its connection closed.
The order of the answers is the receiver's: the Host first (/healthz excepted), then the path
(its secret), then the size.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable

import anyio
from fastapi import FastAPI
from fastapi import Request as HttpRequest
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.exchange import Reply, Request
from adapters.inbound import DELIVERY_BYTES_MAX, MOYSKLAD_PATH, WMS_PATH, WebhookReceiver
from adapters.masking import secret_safe_logger
from ledger.api.gate import OVER_CAPACITY_KEY

log = secret_safe_logger("adapters.webhook_app")

OTHER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HEALTHZ_PATH = "/healthz"
PROBE_METHODS = frozenset({"GET", "HEAD"})  # a load balancer's probe may send HEAD (RFC 9110)


class _OverCapacity:
    """Answers a request the server marked over capacity with the receiver's problem, at once.

    Except the liveness probe: refused, it has an orchestrator restart a receiver that is only busy,
    losing what it has in flight (the API's gate exempts it too: ledger/api/gate.py). It is answered
    here, from memory, and its connection closed, so that probes hold no connection past the limit
    and cost no route, no thread. Not /metrics, which the API's gate exempts as well: here it reads
    the database, on one of the threads the limit is there to keep."""

    def __init__(self, app: ASGIApp, answer: Callable[[], Reply], healthz: Callable[[], Reply]) -> None:
        self.app = app
        self.answer = answer
        self.healthz = healthz

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and OVER_CAPACITY_KEY in scope:
            if scope["path"] == HEALTHZ_PATH and scope["method"] in PROBE_METHODS:
                alive = self.healthz()
                reply = dataclasses.replace(alive, headers={**alive.headers, "Connection": "close"})
            else:
                reply = self.answer()
            await _response(reply)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def webhook_app(receiver: WebhookReceiver, threads_max: int) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.add_middleware(_OverCapacity, answer=receiver.over_capacity, healthz=receiver.healthz)
    threads = anyio.CapacityLimiter(threads_max)

    async def answer(call: Callable[[Request], Reply], request: Request) -> Response:
        try:
            reply = await anyio.to_thread.run_sync(call, request, abandon_on_cancel=True, limiter=threads)
        except anyio.get_cancelled_exc_class():
            # A stop past its grace: the request stops waiting for its thread, which ends on its own
            # (the receiver's work is bounded: the database wait, one spool write), and the sender
            # is told to come back (a delivery stored meanwhile is stored once).
            reply = receiver.stopping()
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            reply = receiver.failed()
        return _response(reply)

    # HEAD too (RFC 9110; a load balancer's probe may send it): else the catch-all below, which
    # takes HEAD for its 404, would answer it.
    @app.api_route(HEALTHZ_PATH, methods=sorted(PROBE_METHODS))
    async def healthz() -> Response:
        return _response(receiver.healthz())

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics(http: HttpRequest) -> Response:
        request = _plain(http, b"")
        if (refusal := receiver.host_refusal(request, *_host_lines(http))) is not None:
            return _response(refusal)
        return await answer(receiver.metrics, request)

    @app.post(MOYSKLAD_PATH + "{secret}")
    @app.post(WMS_PATH + "/{secret}")
    @app.post(WMS_PATH)
    async def delivery(http: HttpRequest) -> Response:
        request = _plain(http, b"")
        if (refusal := receiver.host_refusal(request, *_host_lines(http))) is not None:
            return _response(refusal)
        if not receiver.takes(request.path):
            return _response(receiver.not_found())  # unread: a stranger's body is not worth reading
        try:
            body = await _body(http, DELIVERY_BYTES_MAX)
        except ClientDisconnect:  # hung up, or cut by the body timeout: no error of ours
            log.info("a sender hung up before its delivery's body arrived whole")
            return _response(receiver.incomplete())  # answered to no one: the API's answer
        if body is None:
            return _response(receiver.too_large())
        request.body = body
        return await answer(receiver.delivery, request)

    @app.api_route("/{path:path}", methods=OTHER_METHODS)
    async def other(http: HttpRequest) -> Response:
        request = _plain(http, b"")
        if (refusal := receiver.host_refusal(request, *_host_lines(http))) is not None:
            return _response(refusal)
        return _response(receiver.not_found())

    return app


def _plain(http: HttpRequest, body: bytes) -> Request:
    """The request as the receiver reads it: the path as sent (not percent-decoded: a secret is
    compared as it was written in the URL), the query parsed, the headers as sent."""
    return Request(
        http.method,
        http.scope["raw_path"].decode("latin-1"),
        urllib.parse.parse_qs(http.scope["query_string"].decode("latin-1")),
        dict(http.headers.items()),
        body,
    )


def _host_lines(http: HttpRequest) -> tuple[int, str]:
    """How many Host header lines the request has (the plain request's headers keep one of each),
    and its HTTP version, which says whether it may have none."""
    lines = sum(1 for name, _ in http.scope["headers"] if name == b"host")
    return lines, http.scope.get("http_version", "1.1")


async def _body(http: HttpRequest, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to be over `limit` bytes."""
    declared = http.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _response(reply: Reply) -> Response:
    # The content type goes in as a header, as it is: Starlette would add a charset to text/plain.
    headers = {**reply.headers, "content-type": reply.content_type}
    return Response(reply.body_bytes(), status_code=reply.status, headers=headers)
