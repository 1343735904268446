"""`ledger consume`'s /metrics with LEDGER_METRICS_AUTH=required takes a token like the API's
(CONTRACT §5); /healthz and /readyz stay open. No broker: the ops server alone."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from support.access import new_token

from ledger.access.book import NO_TOKEN, NOT_VALID, TokenBook
from ledger.access.metrics import metrics_guard
from ledger.kafka import ops as ops_module
from ledger.kafka.ops import OpsServer
from ledger.storage.opening import open_recorder


@pytest.fixture
def book(tmp_path: Path) -> Iterator[tuple[str, TokenBook]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    recorder = open_recorder(url, 2, 30)
    tokens = TokenBook(recorder, refresh_interval_s=0.5, last_use_flush_s=10.0)
    try:
        yield url, tokens
    finally:
        tokens.stop()
        recorder.close()


def _serve(guard) -> OpsServer:
    return OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {}), guard).start()


@contextmanager
def _serving(guard) -> Iterator[tuple[OpsServer, str]]:
    """An ops server, always ready, and its base URL; stopped after the block."""
    ops = _serve(guard)
    try:
        yield ops, f"http://127.0.0.1:{ops.port}"
    finally:
        ops.stop()


def test_metrics_need_a_valid_token_once_one_exists(book: tuple[str, TokenBook]) -> None:
    url, tokens = book
    tokens.start()
    with _serving(metrics_guard(tokens, required=False)) as (_, base):
        scraped = httpx.get(f"{base}/metrics")
        assert scraped.status_code == 200  # open: no token exists
        # The type of the text format generate_latest writes (0.0.4), as the API's /metrics says.
        assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        token = new_token(url, "scraper", "reader")
        tokens.refresh()
        refused = httpx.get(f"{base}/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert token not in refused.text
        assert httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200


def test_with_auth_required_metrics_need_a_token_before_any_exists(
    book: tuple[str, TokenBook],
) -> None:
    _, tokens = book
    tokens.start()
    with _serving(metrics_guard(tokens, required=True)) as (_, base):
        assert httpx.get(f"{base}/metrics").status_code == 401


def test_other_methods_and_malformed_requests_are_answered_as_problems() -> None:
    """The server's own refusals were its HTML page ("501 Unsupported method")."""
    with _serving(None) as (ops, base):
        posted = httpx.post(f"{base}/readyz", content=b"{}")
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        assert posted.headers["content-type"] == "application/problem+json"
        assert posted.json() == {
            "type": "method-not-allowed",
            "title": "Method Not Allowed",
            "status": 405,
            "detail": "this endpoint takes GET and HEAD only (Allow)",
            "instance": "/readyz",
        }
        with socket.create_connection(("127.0.0.1", ops.port), timeout=5) as raw:
            raw.sendall(b"GET /healthz now HTTP/1.1\r\n\r\n")  # a request line of four words
            answer = raw.makefile("rb").read().decode()
        head, _, body = answer.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.0 400") and "Content-Type: application/problem+json" in head, head
        # As the API's server answers bytes it cannot read as a request: `invalid-request`, no
        # instance (the path was not read), and the request's bytes not sent back.
        assert json.loads(body) == {
            "type": "invalid-request",
            "title": "Bad Request",
            "status": 400,
            "detail": "Bad request syntax",
        }
        with socket.create_connection(("127.0.0.1", ops.port), timeout=5) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n")
            head, _, body = raw.makefile("rb").read().decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.0 431") and json.loads(body)["type"] == "invalid-request", head


def test_every_refusal_is_a_problem_with_the_members_the_apis_have(book: tuple[str, TokenBook]) -> None:
    """Every problem the API, this endpoint and the adapters' webhooks answer has a `type` slug, a
    `title`, the `status`, a `detail` saying why and, once the path was read, the path as its
    `instance`: a monitor reads one shape wherever it asks."""
    _, tokens = book
    tokens.start()
    with _serving(metrics_guard(tokens, required=True)) as (_, base):
        nowhere = httpx.get(f"{base}/nowhere?x=1")
        assert nowhere.status_code == 404
        assert nowhere.headers["content-type"] == "application/problem+json"
        assert nowhere.json() == {
            "type": "not-found",
            "title": "Not Found",
            "status": 404,
            "detail": "no such path: this endpoint serves /healthz, /readyz and /metrics",
            "instance": "/nowhere",
        }
        refusals = {
            "not-found": nowhere,
            "unauthorized": httpx.get(f"{base}/metrics"),
            "invalid-host": httpx.get(f"{base}/metrics", headers={"host": "rebound.example"}),
            "method-not-allowed": httpx.delete(f"{base}/metrics"),
        }
        for slug, answer in refusals.items():
            assert answer.headers["content-type"] == "application/problem+json", slug
            problem = answer.json()
            assert problem["type"] == slug and problem["status"] == answer.status_code, problem
            assert problem["title"] and problem["detail"] and problem["instance"].startswith("/"), problem
        assert refusals["unauthorized"].json()["detail"] == NO_TOKEN
        wrong = httpx.get(f"{base}/metrics", headers={"authorization": "Bearer nonsense"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == NOT_VALID


def test_head_is_answered_as_get_is_without_the_body() -> None:
    """A load balancer's probe may send HEAD (RFC 9110: whatever takes GET takes HEAD): a 405 would
    fail the probe of an instance that is well."""
    with _serving(None) as (_, base):
        for path in ("/healthz", "/readyz", "/metrics"):
            answer = httpx.head(f"{base}{path}")
            assert (answer.status_code, answer.content) == (200, b""), path
            assert answer.headers["content-length"] == str(len(httpx.get(f"{base}{path}").content)), path
        missing = httpx.head(f"{base}/nowhere")
        assert (missing.status_code, missing.content) == (404, b"")
        assert missing.headers["content-type"] == "application/problem+json"
        assert httpx.post(f"{base}/healthz").headers["allow"] == "GET, HEAD"


def test_not_ready_is_a_problem_as_ledger_serves_is() -> None:
    """`ledger serve`'s /readyz answers not ready as a 503 problem (`not-ready`, with Retry-After);
    `ledger consume`'s answered plain JSON with a `status` of "not ready", where a problem's
    `status` is the HTTP status."""
    why = {"not_ready_because": "not in its consumer group", "lag": 0, "partitions": 0, "writer_alive": True}
    not_ready = OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (False, why)).start()
    ready = OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {"lag": 0})).start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{not_ready.port}/readyz")
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        assert answer.json() == {
            "type": "not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "not in its consumer group",
            "instance": "/readyz",
            **why,  # what it said before, kept for whoever reads it
        }
        fine = httpx.get(f"http://127.0.0.1:{ready.port}/readyz")
        assert fine.status_code == 200 and fine.headers["content-type"] == "application/json"
        assert fine.json() == {"status": "ready", "lag": 0}
    finally:
        not_ready.stop()
        ready.stop()


def test_silent_connections_are_bounded_in_number_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection holds a thread: clients that connect and send nothing must neither pile up
    threads nor keep the probe from answering once they are gone."""
    monkeypatch.setattr(ops_module, "OPS_CONNECTIONS_MAX", 4)
    monkeypatch.setattr(ops_module, "OPS_SOCKET_TIMEOUT_S", 0.5)
    ops = OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {})).start()
    silent = [socket.create_connection(("127.0.0.1", ops.port), timeout=5) for _ in range(6)]
    try:
        time.sleep(0.2)
        serving = [t for t in threading.enumerate() if t.name.endswith("(process_request_thread)")]
        assert 0 < len(serving) <= 4
        closed = 0
        for connection in silent:  # every one is closed by the server: refused, or timed out
            try:
                closed += connection.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == len(silent)
        assert httpx.get(f"http://127.0.0.1:{ops.port}/healthz", timeout=5).status_code == 200
    finally:
        for connection in silent:
            connection.close()
        ops.stop()
