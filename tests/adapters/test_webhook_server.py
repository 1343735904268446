"""The receiver's server: uvicorn's and the app's own limits on what a connection may hold, and a stop
that does not wait for a request without limit (adapters/webhook_server.py, adapters/webhook_app.py)."""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.inbound import DELIVERY_BYTES_MAX, WebhookAccess, WebhookReceiver
from adapters.webhook_server import ServerLimits, WebhookServer
from adapters.webhook_store import StoredIn
from ledger.config import Settings

SECRET = "ms-hook-3c9e1f20"
SHORT_S = 0.2  # the deadlines under test: far below the socket's own timeout
SOCKET_TIMEOUT_S = 30.0  # a connection still open after this was not cut
LIMITS = dataclasses.replace(
    ServerLimits.of(Settings()), idle_timeout_s=SHORT_S, header_timeout_s=SHORT_S, body_timeout_s=SHORT_S
)


@pytest.fixture
def server(recorder: Any) -> Iterator[WebhookServer]:
    running = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET)), LIMITS).start()
    try:
        yield running
    finally:
        running.stop()


def connect(server: WebhookServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_S)


def read_to_the_end(connection: socket.socket) -> bytes:
    """What the server sends until it closes the connection; a timeout if it never does."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


HEAD = f"POST /moysklad/webhook/{SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(server: WebhookServer) -> None:
    with connect(server) as connection:
        assert read_to_the_end(connection) == b""


def test_a_request_whose_headers_trickle_in_is_cut_after_the_header_timeout(server: WebhookServer) -> None:
    with connect(server) as connection:
        connection.sendall(HEAD)  # and never the blank line that ends the headers
        assert read_to_the_end(connection) == b""


def test_a_request_whose_body_stops_coming_is_cut_after_the_body_timeout(server: WebhookServer) -> None:
    with connect(server) as connection:
        connection.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"events": [')
        assert read_to_the_end(connection) == b""


def test_a_declared_body_over_the_limit_is_answered_413_before_it_is_sent(server: WebhookServer) -> None:
    with connect(server) as connection:
        connection.sendall(HEAD + f"Content-Length: {DELIVERY_BYTES_MAX + 1}\r\n\r\n".encode())
        answer = connection.makefile("rb")
        status_line = answer.readline()
        headers = {}
        while (line := answer.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
    assert status_line.split()[1] == b"413"
    assert headers["content-type"] == "application/problem+json"


def test_a_streamed_body_over_the_limit_is_answered_413(server: WebhookServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server sees the size only as it reads
        yield b'{"events": [], "padding": "'
        for _ in range(DELIVERY_BYTES_MAX // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    answer = httpx.post(f"{server.url}/moysklad/webhook/{SECRET}", content=chunks(), timeout=SOCKET_TIMEOUT_S)

    assert answer.status_code == 413
    assert answer.json()["type"] == "delivery-too-large"
    assert httpx.post(f"{server.url}/moysklad/webhook/{SECRET}", content=b'{"events": []}').status_code == 200


class StuckStore:
    """A delivery store that never finishes storing until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def store(self, delivery: Any) -> StoredIn:
        self.entered.set()
        self.release.wait(SOCKET_TIMEOUT_S)
        return StoredIn.DATABASE


def test_a_stop_does_not_wait_for_a_request_past_its_grace(recorder: Any) -> None:
    store = StuckStore()
    receiver = WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET), store)  # type: ignore[arg-type]
    server = WebhookServer(receiver, dataclasses.replace(LIMITS, stop_grace_s=SHORT_S)).start()
    answers: list[Any] = []

    def deliver() -> None:
        try:
            answers.append(httpx.post(f"{server.url}/moysklad/webhook/{SECRET}", content=b'{"events": []}'))
        except httpx.HTTPError as error:
            answers.append(error)

    sender = threading.Thread(target=deliver)
    sender.start()
    try:
        assert store.entered.wait(SOCKET_TIMEOUT_S)
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        stopping.join(SOCKET_TIMEOUT_S)
        assert not stopping.is_alive(), "stop() waited for the stuck request"
        sender.join(SOCKET_TIMEOUT_S)
        [answer] = answers
        assert isinstance(answer, httpx.Response), answer
        assert (answer.status_code, answer.json()["type"]) == (503, "stopping")  # the sender tries again
        assert answer.headers["retry-after"]
    finally:
        store.release.set()
        sender.join(SOCKET_TIMEOUT_S)


def test_past_its_connections_a_request_is_answered_a_problem_the_sender_retries(recorder: Any) -> None:
    """uvicorn's own answer past the limit is plain text ("Service Unavailable"): the receiver
    answers it as every other refusal, a problem with a `type`."""
    limits = dataclasses.replace(ServerLimits.of(Settings()), connections_max=2)
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET)), limits).start()
    try:
        with connect(server) as idle, connect(server) as connection:
            connection.sendall(HEAD + b'Content-Length: 14\r\n\r\n{"events": []}')
            head, _, body = read_to_the_end(connection).partition(b"\r\n\r\n")
            del idle
        lines = head.decode().split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
        assert lines[0].split()[1] == "503", head
        assert headers["content-type"] == "application/problem+json"
        assert headers["retry-after"] and headers["connection"] == "close"
        problem = json.loads(body)
        assert (problem["type"], problem["status"]) == ("over-capacity", 503)
        assert "LEDGER_ADAPTERS_HTTP_CONNECTIONS_MAX" in problem["detail"]
    finally:
        server.stop()


def test_the_adapters_readme_lists_every_problem_type_the_receiver_answers() -> None:
    """Each `_problem(status, "slug", ...)` of the receiver, and the server's own `invalid-request`
    (bytes it cannot read as a request: ledger.api.connections), is named in adapters/README.md."""
    root = Path(__file__).resolve().parents[2]
    tree = ast.parse((root / "adapters" / "inbound.py").read_text())
    slugs = {"invalid-request"} | {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "_problem"
        and isinstance(node.args[1], ast.Constant)
    }
    assert {"not-found", "over-capacity", "spool-full"} <= slugs  # the walk finds them
    readme = (root / "adapters" / "README.md").read_text()
    assert sorted(slug for slug in slugs if f"`{slug}`" not in readme) == []


def test_a_sender_that_hangs_up_before_its_body_ends_is_no_error_in_the_log(
    server: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette raises ClientDisconnect into the route: uncaught, uvicorn logs it as "Exception in
    ASGI application" with a traceback, for every sender that hangs up or is cut by the body timeout."""
    caplog.set_level(logging.INFO)
    with connect(server) as connection:
        connection.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"events": [')
    deadline = time.monotonic() + SOCKET_TIMEOUT_S
    while not any("hung up" in r.getMessage() or r.levelno >= logging.ERROR for r in caplog.records):
        assert time.monotonic() < deadline, "the server said nothing of the hang-up"
        time.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _answer(server: WebhookServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of one request sent on a connection of its own, read until the
    server closes it."""
    with connect(server) as connection:
        connection.sendall(request)
        head, _, body = read_to_the_end(connection).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_past_its_connections_the_liveness_probe_is_answered_still(recorder: Any) -> None:
    """A refused /healthz has an orchestrator restart a receiver that is only busy, losing what it
    has in flight; the API's gate exempts it too. Answered from memory, its connection closed: a
    probe is no way around the limit. /metrics is not exempt here: it reads the database."""
    limits = dataclasses.replace(ServerLimits.of(Settings()), connections_max=2)
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET)), limits).start()
    try:
        with connect(server):  # held idle: with the request's own, the two connections allowed
            status, headers, body = _answer(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            assert headers["connection"] == "close"
            status, headers, body = _answer(server, b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (status, body, headers["connection"]) == (200, b"", "close")
            delivery = HEAD + b'Content-Length: 14\r\n\r\n{"events": []}'
            assert _answer(server, delivery)[0] == 503
            assert _answer(server, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 503
            assert _answer(server, b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 503
    finally:
        server.stop()
