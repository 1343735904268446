"""The HTTP edge's Host check (ledger/api/gate.py): one Host line, or 400, whatever names are allowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ledger.access.hosts import LOOPBACK_NAMES
from ledger.api.gate import EdgeGate


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _status(gate: EdgeGate, path: str, hosts: list[bytes], http_version: str = "1.1") -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", host) for host in hosts]
    scope = {"type": "http", "http_version": http_version, "method": "GET", "path": path, "headers": headers}
    asyncio.run(gate(scope, receive, send))
    return int(sent[0]["status"])


@pytest.mark.parametrize("allowed", [LOOPBACK_NAMES, None])  # None: LEDGER_ALLOWED_HOSTS=*
def test_a_request_with_two_host_lines_is_refused_400_whatever_hosts_are_allowed(
    allowed: frozenset[str] | None,
) -> None:
    # RFC 9112 §3.2: a proxy in front may have routed by the other one.
    gate = EdgeGate(_app, allowed)
    assert _status(gate, "/v1/stock/A", [b"localhost"]) == 200
    assert _status(gate, "/v1/stock/A", [b"evil.example", b"localhost"]) == 400
    assert _status(gate, "/v1/stock/A", [b"localhost", b"localhost"]) == 400
    assert _status(gate, "/healthz", [b"localhost", b"localhost"]) == 200  # probes are never asked


@pytest.mark.parametrize("allowed", [LOOPBACK_NAMES, None])  # None: LEDGER_ALLOWED_HOSTS=*
def test_an_http_1_1_request_without_a_host_line_is_refused_400_whatever_hosts_are_allowed(
    allowed: frozenset[str] | None,
) -> None:
    # RFC 9112 §3.2: HTTP/1.0 may omit it, and is judged by the names allowed.
    gate = EdgeGate(_app, allowed)
    assert _status(gate, "/v1/stock/A", []) == 400
    assert _status(gate, "/v1/stock/A", [], "1.0") == (200 if allowed is None else 400)
    assert _status(gate, "/readyz", []) == 200  # probes are never asked
