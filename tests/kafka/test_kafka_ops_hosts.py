"""`ledger consume`'s ops endpoint answers only the Host names the API answers (LEDGER_ALLOWED_HOSTS,
ledger.access.hosts), by the API's rules: else a DNS rebinding page in a browser on the operator's
machine could read its /metrics. The probes answer any Host, as the API's do."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka_harness import ConsumerFactory, ConsumerProcess, wait_until
from prometheus_client import CollectorRegistry

from ledger.access.book import TokenBook
from ledger.access.metrics import metrics_guard
from ledger.kafka.ops import OpsServer
from ledger.storage.opening import open_recorder

START_DEADLINE_S = 30.0
NOT_ALLOWED = {
    "type": "invalid-host",
    "title": "Host not allowed",
    "status": 400,
    "detail": "this service is not reached by that name (LEDGER_ALLOWED_HOSTS)",
    "instance": "/metrics",
}


@pytest.fixture
def ops() -> Iterator[OpsServer]:
    """As `ledger consume` serves it with LEDGER_ALLOWED_HOSTS unset."""
    server = OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {})).start()
    try:
        yield server
    finally:
        server.stop()


def _raw(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    """The status and JSON body the server answers a request written byte for byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb").read().decode()
    head, _, body = answer.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    return status, json.loads(body) if "application/problem+json" in head else {}


def test_metrics_are_refused_to_a_host_the_service_is_not_reached_by(ops: OpsServer) -> None:
    base = f"http://127.0.0.1:{ops.port}"
    refused = httpx.get(f"{base}/metrics", headers={"host": "rebound.example"})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == NOT_ALLOWED
    assert httpx.get(f"{base}/nowhere", headers={"host": "rebound.example"}).status_code == 400
    for name in ("localhost", "127.0.0.1", "[::1]", f"localhost:{ops.port}"):
        assert httpx.get(f"{base}/metrics", headers={"host": name}).status_code == 200, name


def test_the_probes_answer_any_host_or_none_or_two(ops: OpsServer) -> None:
    base = f"http://127.0.0.1:{ops.port}"
    for path in ("/healthz", "/readyz"):
        assert httpx.get(f"{base}{path}", headers={"host": "10.1.2.3"}).status_code == 200
        assert _raw(ops.port, f"GET {path} HTTP/1.1\r\n\r\n".encode())[0] == 200
        two = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nHost: rebound.example\r\n\r\n".encode()
        assert _raw(ops.port, two)[0] == 200


def test_two_host_lines_or_none_past_http_1_0_are_refused_whatever_is_allowed() -> None:
    anyone = OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {}), allowed_hosts=None).start()
    try:
        status, body = _raw(
            anyone.port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nHost: x.example\r\n\r\n"
        )
        assert (status, body["type"]) == (400, "invalid-host") and "more" in str(body["detail"])
        status, body = _raw(anyone.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert (status, body["type"]) == (400, "invalid-host") and "none" in str(body["detail"])
        assert _raw(anyone.port, b"GET /metrics HTTP/1.0\r\n\r\n")[0] == 200  # `*`: none is answered
    finally:
        anyone.stop()


def test_an_http_1_0_request_with_no_host_is_judged_by_the_names_allowed(ops: OpsServer) -> None:
    assert _raw(ops.port, b"GET /metrics HTTP/1.0\r\n\r\n") == (400, NOT_ALLOWED)


def test_the_host_is_checked_before_the_token(tmp_path: Path) -> None:
    """As the API's gate: 400 for the Host, not 401, which would tell a stranger a token is asked."""
    recorder = open_recorder(f"sqlite:///{tmp_path / 'ledger.db'}", 2, 30)
    tokens = TokenBook(recorder, refresh_interval_s=0.5, last_use_flush_s=10.0)
    tokens.start()
    guarded = OpsServer(
        "127.0.0.1", 0, CollectorRegistry(), lambda: (True, {}), metrics_guard(tokens, required=True)
    ).start()
    try:
        base = f"http://127.0.0.1:{guarded.port}/metrics"
        assert httpx.get(base, headers={"host": "rebound.example"}).status_code == 400
        assert httpx.get(base).status_code == 401
    finally:
        guarded.stop()
        tokens.stop()
        recorder.close()


def _consume_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """`ledger consume` on SQLite with no broker to reach: its ops endpoint serves all the same."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    env.update(
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        LEDGER_KAFKA_BOOTSTRAP="127.0.0.1:1",
        LEDGER_KAFKA_BOOTSTRAP_TIMEOUT_MS="1000",
        LEDGER_FEED_ENABLED="false",
    )
    env.update(extra)
    return env


def _serving(process: ConsumerProcess) -> ConsumerProcess:
    def up() -> bool:
        assert process.process.poll() is None, process.log
        try:
            return httpx.get(f"http://127.0.0.1:{process.metrics_port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, START_DEADLINE_S, f"{process.name}'s ops endpoint")
    return process


def test_ledger_consume_answers_the_names_ledger_allowed_hosts_lists(
    tmp_path: Path, consumers: ConsumerFactory
) -> None:
    process = _serving(consumers(_consume_env(tmp_path, LEDGER_ALLOWED_HOSTS="scraper.internal")))
    base = f"http://127.0.0.1:{process.metrics_port}"
    assert httpx.get(f"{base}/metrics", headers={"host": "scraper.internal:9100"}).status_code == 200
    refused = httpx.get(f"{base}/metrics", headers={"host": "localhost"})
    assert (refused.status_code, refused.json()) == (400, NOT_ALLOWED)
    assert httpx.get(f"{base}/readyz", headers={"host": "10.1.2.3"}).status_code == 503  # no broker


def test_ledger_consume_listening_beyond_loopback_answers_loopback_names_and_says_so(
    tmp_path: Path, consumers: ConsumerFactory
) -> None:
    process = _serving(consumers(_consume_env(tmp_path, LEDGER_KAFKA_METRICS_HOST="0.0.0.0")))
    base = f"http://127.0.0.1:{process.metrics_port}"
    assert httpx.get(f"{base}/metrics").status_code == 200
    assert httpx.get(f"{base}/metrics", headers={"host": "rebound.example"}).status_code == 400
    wait_until(
        lambda: "LEDGER_ALLOWED_HOSTS" in process.log, START_DEADLINE_S, "a warning naming the setting"
    )
