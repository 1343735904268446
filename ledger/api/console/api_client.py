"""The console reads the API in process, with the caller's own grant.

A page asks the application's own routes (GET only), as a client would over HTTP, but without
the network: the request never leaves the process, and it carries the grant the token gate found
for the page's request. So the console shows exactly what the API would give that token (the same
scopes, the same 403s, the same figures), and a page can never show what the token may not read.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

import orjson

from ledger.access.scopes import Grant
from ledger.api.gate import GRANT_KEY

# The largest API answer a page reads, unless it says more (a timeline: pages.py sizes it by
# LEDGER_TIMELINE_POINTS_MAX, whose points may carry ids and references of 256 characters each).
ANSWER_BYTES_MAX = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any  # the decoded JSON, or None

    @property
    def ok(self) -> bool:
        return self.status == 200


def path_of(*segments: str) -> str:
    """A path from segments, each escaped (ids hold no '/', but a typed search might)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class AnswerTooLarge(ValueError):
    """An answer over the bytes the page allows it: not read further."""


async def api_get(
    app: Any,
    grant: Grant | None,
    path: str,
    params: Mapping[str, str | Sequence[str]] | None = None,
    *,
    bytes_max: int = ANSWER_BYTES_MAX,
) -> Answer:
    """`path` as sent over HTTP (path_of's escaped segments). As a server gives it, the scope's
    `path` is decoded (the routes match on it: an id's ':' escaped stayed '%3A' and failed its
    pattern) and `raw_path` is as sent."""
    scope: MutableMapping[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(params or {}, doseq=True).encode(),
        "headers": [(b"host", b"console"), (b"accept", b"application/json")],
        "client": None,
        "server": None,
        "state": {},
        GRANT_KEY: grant,
    }
    status = 0
    chunks: list[bytes] = []
    received = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, received
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            received += len(body)
            if received > bytes_max:
                raise AnswerTooLarge(f"an answer of {path} is over {bytes_max} bytes")
            chunks.append(body)

    await app(scope, receive, send)
    raw = b"".join(chunks)
    return Answer(status, orjson.loads(raw) if raw else None)
