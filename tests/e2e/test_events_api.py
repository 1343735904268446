"""POST /v1/events: single envelopes, batches with invalid elements, and every refusal of a body."""

from __future__ import annotations

import socket

import orjson
import pytest
from support import api
from support import events as ev
from support.ids import unique

from .conftest import BODY_BYTES_MAX

BATCH_TYPE = "application/cloudevents-batch+json"


def _head(client) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200
    return int(response.json()["position"])


def test_a_batch_records_its_valid_events_and_answers_invalid_ones_in_order(client):
    store = unique("store")
    missing_subject = ev.receipt(store, ("A", 1), event_id="bad-1")
    del missing_subject["subject"]
    bad_qty = ev.sale(store, ("A", 1), event_id="bad-2")
    bad_qty["data"]["lines"][0]["qty"] = "two"
    batch = [
        ev.receipt(store, ("A", 10), event_id="ok-1"),
        missing_subject,
        ev.sale(store, ("A", 4), event_id="ok-2"),
        bad_qty,
        42,
        ev.envelope("stock.teleport", store, {"lines": ev.lines(("A", 1))}, event_id="bad-3"),
        ev.sale(store, ("A", 100), event_id="ok-3"),
    ]
    for content_type in ("application/json", BATCH_TYPE):
        store_batch = (
            batch
            if content_type == BATCH_TYPE
            else [{**e, "id": f"{e['id']}-json"} if isinstance(e, dict) else e for e in batch]
        )
        response = client.post(
            "/v1/events", content=orjson.dumps(store_batch), headers={"content-type": content_type}
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["outcome"] for r in results] == [
            "accepted",
            "invalid",
            "accepted",
            "invalid",
            "invalid",
            "invalid",
            "rejected",
        ]
        assert [r["id"] for r in results] == [e["id"] if isinstance(e, dict) else None for e in store_batch]
        assert results[1]["errors"] == [{"field": "subject", "message": "is required"}]
        assert [e["field"] for e in results[3]["errors"]] == ["data.lines[0].qty"]
        assert results[4]["errors"][0]["field"] == ""
        assert [e["field"] for e in results[5]["errors"]] == ["type"]
        for invalid in (results[1], results[3], results[4], results[5]):
            assert "position" not in invalid or invalid["position"] is None
        assert results[0]["position"] < results[2]["position"] < results[6]["position"]
        assert results[6]["reason"] == "insufficient_stock"
    # Each valid receipt and sale was recorded; nothing of the invalid ones.
    assert api.levels_tuple(api.level(client, store, "A")) == (12, 0, 12, 0)
    history = api.history(client, store)
    assert [(e["event_id"], e["outcome"]) for e in history] == [
        ("ok-1-json", "accepted"),
        ("ok-2-json", "accepted"),
        ("ok-3-json", "rejected"),
        ("ok-1", "accepted"),
        ("ok-2", "accepted"),
        ("ok-3", "rejected"),
    ]


def test_a_single_envelope_may_come_as_cloudevents_json(client):
    store = unique("store")
    event = ev.receipt(store, ("A", 1))
    response = client.post(
        "/v1/events",
        content=orjson.dumps(event),
        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["outcome"] == "accepted"


def test_a_body_that_is_not_json_is_refused_and_nothing_is_recorded(client):
    head = _head(client)
    for body in (b"{not json", b"", b"\xff\xfe"):
        response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
        problem = api.assert_problem(response, 422)
        assert problem["type"] == "invalid-request"
        assert problem["instance"] == "/v1/events"
    assert _head(client) == head


def test_a_single_invalid_envelope_is_refused_naming_its_fields(client):
    head = _head(client)
    store = unique("store")
    event = ev.receipt(store, ("A", 1))
    event["time"] = "yesterday"
    event["data"]["lines"].append({"sku": "bad/sku", "qty": 1})
    response = client.post("/v1/events", json=event)
    problem = api.assert_problem(response, 422, "invalid-request")
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"time", "data.lines[1].sku"}
    assert "time" in problem["detail"]

    adjustment = ev.adjustment(store, "", ("A", 0))
    problem = api.assert_problem(client.post("/v1/events", json=adjustment), 422)
    assert {"data.reason", "data.lines[0].qty"} <= {error["field"] for error in problem["errors"]}

    twice = ev.receipt(store, ("A", 1), ("A", 2))
    problem = api.assert_problem(client.post("/v1/events", json=twice), 422)
    assert [error["field"] for error in problem["errors"]] == ["data.lines[1].sku"]
    assert _head(client) == head
    assert api.history(client, store) == []


def test_a_batch_must_hold_one_to_a_thousand_events(client):
    head = _head(client)
    api.assert_problem(client.post("/v1/events", json=[]), 422, "invalid-request")
    too_many = [ev.receipt("s", ("A", 1)) for _ in range(1001)]
    api.assert_problem(client.post("/v1/events", json=too_many), 422, "invalid-request")
    single_as_batch = client.post(
        "/v1/events", content=orjson.dumps(ev.receipt("s", ("A", 1))), headers={"content-type": BATCH_TYPE}
    )
    api.assert_problem(single_as_batch, 422, "invalid-request")
    assert _head(client) == head


def test_an_unsupported_content_type_is_refused_with_415(client):
    event = orjson.dumps(ev.receipt(unique("store"), ("A", 1)))
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post("/v1/events", content=event, headers={"content-type": content_type})
        problem = api.assert_problem(response, 415)
        assert problem["type"] == "unsupported-media-type"
    no_type = client.post("/v1/events", content=event, headers={"content-type": ""})
    api.assert_problem(no_type, 415)


def test_a_body_over_the_limit_is_refused_with_413(client):
    head = _head(client)
    store = unique("store")
    big = ev.receipt(store, ("A", 1), reference="x" * 200)
    body = orjson.dumps([big] * (BODY_BYTES_MAX // len(orjson.dumps(big)) + 10))
    assert len(body) > BODY_BYTES_MAX
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    problem = api.assert_problem(response, 413)
    assert problem["type"] == "content-too-large"

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    api.assert_problem(streamed, 413)
    assert _head(client) == head


@pytest.mark.parametrize(
    "path",
    ["/v1/events", "/v1/reservations", "/v1/stores/{store}/reservations", "/v1/sourcing"],
)
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(ledger_server, path: str) -> None:
    """A client that asks first (`Expect: 100-continue`) is told 413 at once, not to go on sending:
    the fast path's routes (one store's reservations, sourcing) read their bodies themselves."""
    request = (
        f"POST {path.format(store=unique('store'))} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {BODY_BYTES_MAX * 50}\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", ledger_server.port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413 "), answer  # not "100 Continue"


def _status_of_headers_alone(port: int, request: str) -> int:
    """The status of the answer to a request sent without the body its headers declare."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_get_declaring_a_body_over_the_limit_is_refused_and_documented_so(ledger_server, client) -> None:
    """A GET that declares a body over the limit is refused 413 before a byte of it is read, as a
    POST is, whichever way the service answers it: the document listed 413 for the operations that
    take a body only, and a level the fast path answers from memory was answered 200."""
    store = unique("store")
    assert client.post("/v1/events", json=ev.receipt(store, ("SKU-1", 1))).status_code == 200
    assert client.get(f"/v1/stores/{store}/stock/SKU-1").status_code == 200  # in memory now
    document = client.get("/openapi.json").json()
    ids = {"store": store, "sku": "SKU-1", "reservation_id": unique("order")}
    for template, item in document["paths"].items():
        if "get" not in item:
            continue
        path = template.format(**ids)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BODY_BYTES_MAX * 50}\r\n\r\n"
        assert _status_of_headers_alone(ledger_server.port, request) == 413, path
        assert "413" in item["get"]["responses"], template
