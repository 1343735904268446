"""HEAD answered as the GET of the same target, without its body (RFC 9110 §9.3.2: every
general-purpose server takes HEAD wherever it takes GET). FastAPI's routes take only the methods
they name, so without this every GET route answered HEAD with 405: a load balancer's health check
by HEAD, or `curl -I`, saw a ledger that would not answer.

A HEAD request goes through the stack inside this layer as a GET, in a scope of its own, so that
it meets the same checks a GET does (the Host, the token and its role, the rate) and the same
route. Its answer keeps the GET's status and headers, Content-Length included, and loses its body.
What the inner layers note in their scope for the telemetry outside this one (the route answered,
the token's grant: telemetry.NOTED_INSIDE) is copied back to the request's scope, whose method
stays HEAD: the metrics and the access log name the method that was sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.api.telemetry import NOTED_INSIDE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the inner awaitable: every other request pays one call,
        # not a coroutine of its own.
        if scope.get("method") != "HEAD":
            return self.app(scope, receive, send)
        return self._as_get(scope, receive, send)

    async def _as_get(self, scope: Scope, receive: Receive, send: Send) -> None:
        as_get = {**scope, "method": "GET"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(as_get, receive, without_body)
        finally:
            scope.update({key: as_get[key] for key in NOTED_INSIDE if key in as_get})
