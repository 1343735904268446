"""Logs and metrics an on-call engineer can use (issue #15): JSON log lines that name the request
they were caused by, in the HTTP worker and in the writer process; X-Request-ID echoed, made, or
replaced; the access log; and /metrics with HTTP requests by route template, the writer's
figures, the process and Python collectors, and the build. On both databases, with the writer in
its own process (as `ledger serve` runs it)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.api import assert_problem, reserve
from support.events import pos_sale, receipt
from support.ids import unique
from support.server import LedgerServer

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "ledger-dashboard.json"
STOCK_ROUTE = "/v1/stores/{store}/stock/{sku}"
RESERVATIONS_ROUTE = "/v1/stores/{store}/reservations"
NEW_ID = re.compile(r"[0-9a-f]{32}")
HEARD_DEADLINE_S = 20.0  # the writer's figures reach the workers every second; logs are flushed per line
POLL_S = 0.1
ENV = {
    "LEDGER_LOG_FORMAT": "json",
    "LEDGER_ACCESS_LOG": "on",
    "LEDGER_WRITER_SLOW_BATCH_MS": "0",  # every batch is logged by the writer, naming its requests
}


@pytest.fixture(scope="module")
def server(module_serve: Any, module_database_url: str) -> LedgerServer:
    server: LedgerServer = module_serve(module_database_url, ENV)
    return server


@pytest.fixture
def client(server: LedgerServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def _log_lines(server: LedgerServer) -> list[dict[str, Any]]:
    """Every line the service logged: each one a JSON object (the file's own notes aside)."""
    lines = []
    for line in server.log_path.read_text().splitlines():
        if line.startswith("--- "):
            continue  # the test harness's notes
        lines.append(json.loads(line))
    return lines


def _lines_until(server: LedgerServer, found: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + HEARD_DEADLINE_S
    while True:
        lines = [line for line in _log_lines(server) if found(line)]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(POLL_S)


def _metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- request ids -------------------------------------------------------------------------------------


def test_a_sound_request_id_is_echoed_and_names_the_access_log_line(
    server: LedgerServer, client: httpx.Client
) -> None:
    request_id = f"till-7:{unique('req')}"
    store = unique("store")
    response = client.get(f"/v1/stores/{store}/stock/SKU-1", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    (line,) = _lines_until(server, lambda line: line.get("request_id") == request_id)
    assert line["logger"] == "ledger.http.access"
    assert line["level"] == "INFO"
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        f"/v1/stores/{store}/stock/SKU-1",
        STOCK_ROUTE,
        200,
    )
    assert line["duration_seconds"] >= 0
    assert line["principal"] is None  # the service is open in this module


def test_a_request_without_an_id_gets_a_new_one(client: httpx.Client) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert NEW_ID.fullmatch(first) and NEW_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("offered", ["two words", "x" * 129, "new\\nline", "é"])
def test_an_unsound_request_id_is_replaced(offered: str, client: httpx.Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": offered.encode("utf-8")})
    assert response.status_code == 200
    assert NEW_ID.fullmatch(response.headers["x-request-id"])


def test_problem_answers_carry_the_request_id_on_the_fast_path_and_the_routes(
    server: LedgerServer, client: httpx.Client
) -> None:
    store = unique("store")
    fast = client.post(
        f"/v1/stores/{store}/reservations",
        content=b"{",
        headers={"X-Request-ID": "bad-body-1", "content-type": "application/json"},
    )
    assert_problem(fast, 422)
    assert fast.headers["x-request-id"] == "bad-body-1"
    routed = client.get(
        f"/v1/stores/{store}/history", params={"limit": 0}, headers={"X-Request-ID": "bad-q-1"}
    )
    assert_problem(routed, 422)
    assert routed.headers["x-request-id"] == "bad-q-1"
    lost = client.get("/no/such/path", headers={"X-Request-ID": "lost-1"})
    assert_problem(lost, 404)
    assert lost.headers["x-request-id"] == "lost-1"
    (line,) = _lines_until(server, lambda line: line.get("request_id") == "lost-1")
    assert line["route"] == "unmatched" and line["status"] == 404
    # Refused before routing (the Host check), yet counted under its route's template.
    refused = client.get(
        f"/v1/stores/{store}/stock/A", headers={"X-Request-ID": "refused-1", "Host": "elsewhere.example"}
    )
    assert_problem(refused, 400)
    (line,) = _lines_until(server, lambda line: line.get("request_id") == "refused-1")
    assert line["route"] == "/v1/stores/{store}/stock/{sku}" and line["status"] == 400


def test_the_writer_process_names_the_requests_of_its_batch(
    server: LedgerServer, client: httpx.Client
) -> None:
    store = unique("store")
    request_id = unique("write")
    response = client.post(
        "/v1/events", json=receipt(store, ("SKU-1", 5)), headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200, response.text
    lines = _lines_until(server, lambda line: request_id in line.get("request_ids", ()))
    assert lines, "the writer logged no line naming the request"
    assert all(line["logger"] == "ledger.writer" for line in lines)
    assert "from taken to answered" in lines[0]["message"]


# -- metrics ------------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_and_status(client: httpx.Client) -> None:
    before = _metrics(client)
    store = unique("store")
    for sku in ("SKU-1", "SKU-2", "SKU-3"):
        assert client.get(f"/v1/stores/{store}/stock/{sku}").status_code == 200
    assert reserve(client, store, unique("r"), ("SKU-1", 1)).status_code == 409  # nothing on hand
    after = _metrics(client)
    get_200 = {"route": STOCK_ROUTE, "method": "GET", "status": "200"}
    post_409 = {"route": RESERVATIONS_ROUTE, "method": "POST", "status": "409"}
    for labels, count in ((get_200, 3), (post_409, 1)):
        for name in ("ledger_http_requests_total", "ledger_http_request_duration_seconds_count"):
            assert _sample(after, name, **labels) - _sample(before, name, **labels) == count, (name, labels)
        inf = {**labels, "le": "+Inf"}
        assert (
            _sample(after, "ledger_http_request_duration_seconds_bucket", **inf)
            - _sample(before, "ledger_http_request_duration_seconds_bucket", **inf)
            == count
        )
        assert _sample(after, "ledger_http_request_duration_seconds_sum", **labels) > _sample(
            before, "ledger_http_request_duration_seconds_sum", **labels
        )
    # Templates, never raw paths: no label names the store.
    assert not any(store in value for _, labels in after for _, value in labels)


def test_the_writers_figures_reach_the_metrics(client: httpx.Client) -> None:
    store = unique("store")
    before = _metrics(client)
    assert reserve(client, store, unique("r"), ("SKU-1", 1)).status_code == 409  # recorded, refused
    deadline = time.monotonic() + HEARD_DEADLINE_S
    while True:
        after = _metrics(client)
        grew = _sample(after, "ledger_writer_batch_events_count") > _sample(
            before, "ledger_writer_batch_events_count"
        )
        if grew or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert grew, "the writer's batch was not counted"
    assert _sample(after, "ledger_writer_commit_duration_seconds_count") > _sample(
        before, "ledger_writer_commit_duration_seconds_count"
    )
    assert _sample(after, "ledger_writer_batch_events_sum") > _sample(
        before, "ledger_writer_batch_events_sum"
    )
    assert ("ledger_writer_queued_requests", ()) in after
    for reason in ("queue_full", "unavailable", "refused"):
        assert ("ledger_writer_rejects_total", (("reason", reason),)) in after
    for result in ("committed", "lost"):
        assert ("ledger_writer_one_statement_batches_total", (("result", result),)) in after


def test_an_oversold_line_is_counted_and_logged_with_what_to_read_next(
    server: LedgerServer, client: httpx.Client
) -> None:
    """A till's sale past what the store held is recorded (the goods left) and flagged in the
    history; the on-call person learned of it only from a customer. Now it is a metric and a line."""
    store = unique("store")
    before = _metrics(client)
    for event in (receipt(store, ("SKU-1", 1)), pos_sale(store, ("SKU-1", 3)), pos_sale(store, ("SKU-2", 1))):
        response = client.post("/v1/events", json=event)
        assert response.status_code == 200 and response.json()["results"][0]["outcome"] == "accepted"
    deadline = time.monotonic() + HEARD_DEADLINE_S
    while True:
        grown = _sample(_metrics(client), "ledger_oversold_lines_total") - _sample(
            before, "ledger_oversold_lines_total"
        )
        if grown >= 2 or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert grown == 2  # SKU-1 past its 1 unit, SKU-2 never received
    lines = _lines_until(server, lambda line: f"left store {store} " in line["message"])
    assert lines and lines[0]["level"] == "WARNING" and lines[0]["logger"] == "ledger.writer"
    assert f"/v1/stores/{store}/stock/SKU-1/explain" in " ".join(line["message"] for line in lines)
    listed = client.get(f"/v1/stores/{store}/history", params={"oversold": "true"}).json()["entries"]
    assert [entry["sku"] for entry in listed] == ["SKU-1", "SKU-2"]  # and the history lists them


def test_the_process_python_and_build_metrics_are_there(client: httpx.Client) -> None:
    samples = _metrics(client)
    names = {name for name, _ in samples}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
    } <= names
    (build,) = [dict(labels) for name, labels in samples if name == "ledger_build_info"]
    assert build["version"] and re.fullmatch(r"3\.\d+\.\d+.*", build["python"])


def test_every_metric_the_dashboard_queries_exists(client: httpx.Client) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
        if "expr" in target
    ]
    assert expressions
    queried = {
        name for expr in expressions for name in re.findall(r"\b((?:ledger|process|python)_[a-z_]+)", expr)
    }
    exposed = {name for name, _ in _metrics(client)}
    assert queried and queried <= exposed, sorted(queried - exposed)


def test_spawned_http_workers_log_as_the_service_does(serve: Any, tmp_path: Path) -> None:
    """With several workers, uvicorn starts each in a process of its own; each applies the same
    logging configuration (uvicorn's log_config), so its lines are JSON and name the request."""
    workers = serve(f"sqlite:///{tmp_path / 'ledger.db'}", {**ENV, "LEDGER_HTTP_WORKERS": "2"})
    request_ids = [unique("worker") for _ in range(4)]
    with workers.client() as http:
        for request_id in request_ids:
            assert http.get("/healthz", headers={"X-Request-ID": request_id}).status_code == 200
    for request_id in request_ids:
        (line,) = _lines_until(workers, lambda line, wanted=request_id: line.get("request_id") == wanted)
        assert line["logger"] == "ledger.http.access" and line["route"] == "/healthz"


def test_a_new_ledger_logs_its_schema_in_one_line_and_a_restart_none(database_url: str, serve: Any) -> None:
    # Fourteen lines on a first start, one of them "drop what earlier releases had", alarmed a
    # new user whose ledger had nothing to drop.
    server = serve(database_url)
    first = server.log_tail(100_000)
    assert first.count("a new ledger: its schema made, at version") == 1, first
    assert "schema migration" not in first, first
    server.restart()
    again = server.log_tail(100_000)[len(first) :]
    assert "schema" not in again, again
