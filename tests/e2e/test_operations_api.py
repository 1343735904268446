"""Health, readiness, metrics, the API's own description, stock lookups, and unknown routes and methods."""

from __future__ import annotations

import re
import socket

from support import api
from support import events as ev
from support.ids import unique

CONTRACT_PATHS = (
    ("get", r"/v1/stores/\{store\}/stock/\{sku\}"),
    ("get", r"/v1/stores/\{store\}/stock"),
    ("get", r"/v1/stock/\{sku\}"),
    ("post", r"/v1/events"),
    ("post", r"/v1/stores/\{store\}/reservations"),
    ("get", r"/v1/stores/\{store\}/reservations/\{\w+\}"),
    ("post", r"/v1/stores/\{store\}/reservations/\{\w+\}/release"),
    ("get", r"/v1/stores/\{store\}/history"),
    ("get", r"/healthz"),
    ("get", r"/readyz"),
    ("get", r"/metrics"),
)


def test_liveness_and_readiness(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["position"] >= 0


def test_metrics_are_prometheus_text(client):
    api.record(client, ev.receipt(unique("store"), ("A", 1)))
    response = client.get("/metrics")
    assert response.status_code == 200
    # What the API's description says /metrics answers, and the format its body is in: Prometheus'
    # text format 0.0.4 (prometheus_client's CONTENT_TYPE_LATEST said 1.0.0 over that body).
    documented = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(documented["content"]) == [response.headers["content-type"]]
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = [line for line in response.text.splitlines() if line and not line.startswith("#")]
    assert samples
    assert any(re.match(r'^ledger_events_total\{outcome="accepted"\} [1-9]', line) for line in samples), (
        samples
    )


def test_the_openapi_document_describes_every_contract_path(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for method, pattern in CONTRACT_PATHS:
        matching = [path for path in paths if re.fullmatch(pattern, path)]
        assert matching, pattern
        assert method in paths[matching[0]], (method, matching[0])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text


def test_unknown_routes_and_methods_answer_problem_json(client):
    problem = api.assert_problem(client.get("/v1/nothing-here"), 404)
    assert problem["instance"] == "/v1/nothing-here"
    api.assert_problem(client.get("/v2/events"), 404)
    problem = api.assert_problem(client.delete("/v1/events"), 405)
    assert problem["type"] == "method-not-allowed"
    refused = client.get("/v1/events")
    api.assert_problem(refused, 405)
    assert refused.headers["allow"] == "POST"  # RFC 9110: the methods the path takes
    refused = client.put(f"/v1/stores/{unique('s')}/stock/A", json={})
    api.assert_problem(refused, 405)
    assert refused.headers["allow"] == "GET, HEAD"
    refused = client.delete(f"/v1/stores/{unique('s')}/policies/SKU-1")
    assert refused.headers["allow"] == "GET, HEAD, PUT"  # a route per method
    # A trailing slash is no route: a 404 problem, not a redirect the API's description lacks.
    for path in (f"/v1/stores/{unique('s')}/stock/A/", "/v1/events/", "/healthz/"):
        api.assert_problem(client.get(path, follow_redirects=False), 404)


# Answers that may change between a GET and the HEAD after it while other tests write.
VOLATILE_LENGTH = frozenset({"/readyz", "/metrics"})


def test_every_get_route_answers_head_with_the_gets_status_and_headers_and_no_body(client):
    store, sku = unique("store"), unique("sku")
    api.record(client, ev.receipt(store, (sku, 3)))
    assert api.reserve(client, store, "R-1", (sku, 1)).status_code == 201
    values = {"store": store, "sku": sku, "reservation_id": "R-1"}
    documented = [path for path, item in client.get("/openapi.json").json()["paths"].items() if "get" in item]
    assert len(documented) >= 12
    for template in (
        *documented,
        "/openapi.json",
        "/docs",
        "/ui",
        "/ui/stores/{store}/skus/{sku}",
        "/ui/adapters",
    ):
        path = re.sub(r"\{(\w+)\}", lambda name: values[name.group(1)], template)
        params = {"sku": sku} if template == "/v1/stores/{store}/stock" else {}
        got = client.get(path, params=params)
        head = client.head(path, params=params, headers={"X-Request-ID": "head-check-1"})
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if template not in VOLATILE_LENGTH:
            assert head.headers["content-length"] == got.headers["content-length"], path
        assert head.headers["x-request-id"] == "head-check-1"
    missing = client.head(f"/v1/stores/{store}/reservations/R-none")
    assert missing.status_code == 404 and missing.content == b""
    assert missing.headers["content-type"] == "application/problem+json"
    refused = client.head("/v1/events")  # POST only: HEAD is refused as GET is
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    counted = 'ledger_http_requests_total{method="HEAD",route="/v1/stores/{store}/stock/{sku}",status="200"}'
    assert any(line.startswith(counted + " ") for line in client.get("/metrics").text.splitlines()), (
        "a HEAD is counted as the HEAD it was"
    )


def test_a_head_answer_carries_no_body_on_the_wire(ledger_server):
    """httpx reads no body after a HEAD whatever the server sends, so this reads the connection's
    bytes: a HEAD and a GET pipelined on one connection come back as two heads and one body."""
    path = "/v1/stores/head-wire/stock/A"
    request = f"{{}} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", ledger_server.port), timeout=10) as sock:
        sock.sendall((request.format("HEAD") + request.format("GET")).encode())
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 200 "), "the HEAD's answer had a body: " + repr(rest[:80])
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    second_head, _, body = rest.partition(b"\r\n\r\n")
    assert length == len(body) == int(re.search(rb"content-length: (\d+)", second_head).group(1))  # type: ignore[union-attr]


def test_stock_lookups_of_one_or_several_skus(client):
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 3), ("B", 4)))
    never = api.level(client, store, "NEVER")
    assert (never["store_id"], never["sku"]) == (store, "NEVER")
    assert api.levels_tuple(never) == (0, 0, 0, 0)
    response = client.get(f"/v1/stores/{store}/stock", params={"sku": ["B", "A", "NEVER"]})
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["sku"], i["on_hand"]) for i in items] == [("B", 4), ("A", 3), ("NEVER", 0)]
    for item in items:
        assert set(item) >= {
            "store_id",
            "sku",
            "on_hand",
            "reserved",
            "available",
            "incoming",
            "position",
            "updated_at",
        }
    api.assert_problem(client.get(f"/v1/stores/{store}/stock"), 422)
    api.assert_problem(client.get(f"/v1/stores/{store}/stock", params={"sku": ["ok", "not/ok"]}), 422)
    api.assert_problem(
        client.get(f"/v1/stores/{store}/stock", params={"sku": [f"S{i}" for i in range(1001)]}), 422
    )
    api.assert_problem(client.get(f"/v1/stores/{'x' * 65}/stock/A"), 422)
    api.assert_problem(client.get(f"/v1/stores/{store}/stock/A", params={"position": -1}), 422)
