"""The HTTP server cuts connections that send no whole request in time (ledger/api/connections.py).

One `ledger serve` with small limits; each test waits for the limit it set, never for a throughput.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from support.server import LedgerServer, serving_sqlite

IDLE_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
HEADER_BYTES_MAX = 4096
SLACK_S = 1.5  # the event loop's timer and a busy 2-core machine
TRICKLE_INTERVAL_S = 0.25  # a byte this often: the connection is never idle, the request never whole
LIMITS_ENV = {
    "LEDGER_HTTP_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
    "LEDGER_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "LEDGER_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "LEDGER_HTTP_HEADER_BYTES_MAX": str(HEADER_BYTES_MAX),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerServer]:
    with serving_sqlite(tmp_path_factory.mktemp("limits"), LIMITS_ENV, "limits") as ledger:
        yield ledger


def _connect(server: LedgerServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def _response(sock: socket.socket) -> bytes:
    """One whole response (status line, headers, a body of its content-length): it may come in
    several segments."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def _closed_after_s(sock: socket.socket, deadline_s: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes the connection, sending `trickle` a byte at a time meanwhile;
    fails past the deadline."""
    started = time.monotonic()
    sock.settimeout(TRICKLE_INTERVAL_S)
    sent = 0
    while time.monotonic() - started < deadline_s:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            sent += 1
    pytest.fail(f"the connection was still open after {deadline_s} s")


def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(
    server: LedgerServer,
) -> None:
    with _connect(server) as sock:
        assert _closed_after_s(sock, IDLE_TIMEOUT_S + SLACK_S) >= IDLE_TIMEOUT_S * 0.5


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(server: LedgerServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _response(sock).startswith(b"HTTP/1.1 200")
        assert _closed_after_s(sock, IDLE_TIMEOUT_S + SLACK_S) >= IDLE_TIMEOUT_S * 0.5


def test_headers_that_trickle_in_are_cut_at_the_header_timeout(server: LedgerServer) -> None:
    """A byte every quarter second keeps the connection from being idle; the headers never end."""
    headers = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"a" * 200
    with _connect(server) as sock:
        elapsed_s = _closed_after_s(sock, HEADER_TIMEOUT_S + SLACK_S, trickle=headers)
    assert elapsed_s >= HEADER_TIMEOUT_S * 0.5


def test_a_body_that_trickles_in_is_cut_at_the_body_timeout(server: LedgerServer) -> None:
    head = (
        b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    with _connect(server) as sock:
        sock.sendall(head)
        elapsed_s = _closed_after_s(sock, BODY_TIMEOUT_S + SLACK_S, trickle=b"[" + b" " * 200)
    assert elapsed_s >= BODY_TIMEOUT_S * 0.5


def _answer_to(server: LedgerServer, request_bytes: bytes) -> tuple[bytes, bytes]:
    """The head and body of the answer, read until the server closes the connection."""
    answer = b""
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_headers_over_the_size_limit_answer_400(server: LedgerServer) -> None:
    head, body = _answer_to(
        server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * HEADER_BYTES_MAX + b"\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["detail"] == f"request headers over {HEADER_BYTES_MAX} bytes"


def test_a_request_the_parser_refuses_answers_a_problem(server: LedgerServer) -> None:
    head, body = _answer_to(server, b"GET /healthz HTTP/1.1\r\nHost localhost\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == "invalid-request"


def test_the_deadlines_are_per_request_on_a_kept_alive_connection(server: LedgerServer) -> None:
    """Requests well within the idle timeout of each other keep one connection open for longer
    than the header and body timeouts together: each request's deadlines end with it."""
    requests = int((HEADER_TIMEOUT_S + BODY_TIMEOUT_S) / (IDLE_TIMEOUT_S / 4)) + 2
    with _connect(server) as sock:
        for _ in range(requests):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(IDLE_TIMEOUT_S / 4)


CONNECTIONS_MAX = 3


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerServer]:
    env = {"LEDGER_HTTP_CONNECTIONS_MAX": str(CONNECTIONS_MAX), "LEDGER_HTTP_IDLE_TIMEOUT_S": "30"}
    with serving_sqlite(tmp_path_factory.mktemp("capacity"), env, "capacity") as ledger:
        yield ledger


def _get(sock: socket.socket, path: str, request_id: str) -> tuple[bytes, dict[bytes, bytes], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: {request_id}\r\n\r\n".encode())
    head, _, body = _response(sock).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    return status, headers, body


def test_past_its_connections_a_worker_answers_the_documented_problem_with_the_request_id(
    small_server: LedgerServer,
) -> None:
    """Past LEDGER_HTTP_CONNECTIONS_MAX (this connection counted): 503 as a problem with
    Retry-After and the request's id, the connection closed; liveness still answers; and once
    connections go, requests are served again."""
    held = [_connect(small_server) for _ in range(CONNECTIONS_MAX - 1)]
    try:
        with _connect(small_server) as sock:
            status, headers, body = _get(sock, "/v1/stores/store-1/stock/SKU-1", "over-1")
            assert status == b"HTTP/1.1 503 Service Unavailable"
            assert headers[b"content-type"] == b"application/problem+json"
            assert headers[b"x-request-id"] == b"over-1"
            assert int(headers[b"retry-after"]) >= 1
            assert json.loads(body)["type"] == "over-capacity"
            assert _closed_after_s(sock, SLACK_S) < SLACK_S
        with _connect(small_server) as sock:
            assert _get(sock, "/healthz", "live-1")[0] == b"HTTP/1.1 200 OK"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:
        with _connect(small_server) as sock:
            status, headers, _ = _get(sock, "/v1/stores/store-1/stock/SKU-1", "after-1")
        if status == b"HTTP/1.1 200 OK" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == b"HTTP/1.1 200 OK"
    with _connect(small_server) as sock:
        _, _, metrics = _get(sock, "/metrics", "metrics-1")
    refused = 'ledger_http_requests_total{method="GET",route="/v1/stores/{store}/stock/{sku}",status="503"}'
    assert f"{refused} 1.0".encode() in metrics
