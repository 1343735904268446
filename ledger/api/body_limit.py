"""A request body's size limit (LEDGER_BODY_BYTES_MAX): 413 problem+json for a body over it,
declared (refused before a byte of it is read, so that a client waiting on `Expect: 100-continue`
is not told to send it) or streamed. `BodySizeLimit` guards the FastAPI application; the fast path
(ledger/api/fastpath.py) reads its bodies itself with the same rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ledger.api.problems import Problem, problem_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_large(body_bytes_max: int) -> Problem:
    detail = f"a request body may hold at most {body_bytes_max} bytes"
    return Problem(413, "content-too-large", "Content too large", detail)


def declared_too_large(headers: Iterable[tuple[bytes, bytes]], body_bytes_max: int) -> bool:
    """Whether the request's Content-Length says more than the limit."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > body_bytes_max:
            return True
    return False


class BodySizeLimit:
    """Answers 413 problem+json to a body over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, body_bytes_max: int) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope.get("headers", ()), self.body_bytes_max):
            await problem_response(too_large(self.body_bytes_max), scope.get("path"))(scope, receive, send)
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
            await problem_response(too_large(self.body_bytes_max), scope.get("path"))(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
