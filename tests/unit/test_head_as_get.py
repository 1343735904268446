"""HEAD taken as GET (ledger/api/head.py), under any server: the application sees a GET, the answer
keeps its head and loses its body, and what the inner layers noted reaches the outer ones with the
method that was sent."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from ledger.api.head import HeadAsGet

Message = MutableMapping[str, Any]
BODY = b'{"on_hand": 5}'


def _inner(seen: list[str]) -> Any:
    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["method"])
        await _answer(scope, send)

    return app


async def _answer(scope: MutableMapping[str, Any], send: Any) -> None:
    scope["ledger.route"] = "/v1/things/{thing}"
    scope["inner.only"] = True
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY[:5], "more_body": True})
    await send({"type": "http.response.body", "body": BODY[5:]})


def _served(method: str, seen: list[str]) -> tuple[dict[str, Any], list[Message]]:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/v1/things/a"}
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(HeadAsGet(_inner(seen))(scope, receive, send))  # type: ignore[arg-type]
    return scope, sent


def test_a_head_is_answered_as_the_get_without_its_body() -> None:
    seen: list[str] = []
    scope, sent = _served("HEAD", seen)
    assert seen == ["GET"]  # the application, its routes and its gates see a GET
    assert scope["method"] == "HEAD"  # the layers outside see what was sent
    assert scope["ledger.route"] == "/v1/things/{thing}"  # and what the inner layers noted for them
    assert "inner.only" not in scope and "seen_method" not in scope  # and nothing else
    start, *bodies = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == b"%d" % len(BODY)  # the GET's length
    assert [body["body"] for body in bodies] == [b"", b""]
    assert [body.get("more_body", False) for body in bodies] == [True, False]


def test_every_other_method_passes_untouched() -> None:
    for method in ("GET", "POST"):
        seen: list[str] = []
        _, sent = _served(method, seen)
        assert seen == [method]
        assert b"".join(message.get("body", b"") for message in sent) == BODY
