"""Odd input is the caller's error, never the server's: 422 problem+json naming the field, not 500 or
503. Each case was a 5xx once (issue #15; found by schemathesis and by hand)."""

from __future__ import annotations

import base64
import socket
import time
from typing import Any

import httpx
import pytest
from support import api
from support import events as ev
from support.ids import unique

BIG = 2**70  # over the database's 64-bit integers


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "after",
    [
        str(BIG),
        "9" * 5000,  # over Python's 4,300 digits for int()
        "²",  # a digit to str.isdigit, not to int()
        _cursor(f"{BIG}.0"),
        _cursor(f"1.{BIG}"),
        _cursor("-1.0"),
        _cursor("1.2.3"),
        "%%%",
        _cursor("+5.0"),  # int() takes these three; a cursor from `next` is never one of them
        _cursor(" 5.0"),
        _cursor("1_0.0"),
    ],
    ids=[
        "huge-position",
        "5000-digits",
        "superscript-two",
        "huge-cursor",
        "huge-line",
        "negative",
        "3-parts",
        "junk",
        "plus-sign",
        "space",
        "underscore",
    ],
)
def test_a_history_cursor_out_of_range_is_refused_naming_after(client: httpx.Client, after: str) -> None:
    answer = client.get("/v1/stores/odd-1/history", params={"after": after})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in answer.json()["errors"]] == ["after"]


@pytest.mark.parametrize("name", ["min_position", "position"])
def test_a_position_over_64_bits_is_refused_naming_it(client: httpx.Client, name: str) -> None:
    for path, params in (("/v1/stores/odd-1/stock/SKU-1", {}), ("/v1/stores/odd-1/stock", {"sku": "SKU-1"})):
        answer = client.get(path, params={**params, name: BIG})
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in answer.json()["errors"]] == [name]


@pytest.mark.parametrize(("name", "value"), [("limit", BIG), ("limit", 1001), ("type", "stock.teleport")])
def test_a_history_filter_out_of_its_bounds_is_refused_naming_it(
    client: httpx.Client, name: str, value: object
) -> None:
    answer = client.get("/v1/stores/odd-1/history", params={name: value})
    assert answer.status_code == 422, answer.text
    assert [error["field"] for error in answer.json()["errors"]] == [name]


def test_the_largest_position_is_still_a_position(client: httpx.Client) -> None:
    answer = client.get("/v1/stores/odd-1/history", params={"after": str(2**63 - 1)})
    assert answer.status_code == 200
    assert answer.json() == {"entries": [], "next": None}


def test_a_min_position_past_the_logs_head_is_refused_naming_it(client: httpx.Client) -> None:
    """No write was answered with that position, so no client can be waiting for it: 422, not
    503 (which says "retry": this instance has not applied a position that exists)."""
    head = client.get("/readyz").json()["position"]
    answer = client.get("/v1/stores/odd-1/stock/SKU-1", params={"min_position": head + 1_000_000})
    assert answer.status_code == 422, answer.text
    assert [error["field"] for error in answer.json()["errors"]] == ["min_position"]


@pytest.mark.parametrize("value", ["1_0", "+1", " 1", "1 ", "1.0", "0x1", "1e0", "١"])
@pytest.mark.parametrize(
    ("path", "params", "name", "plain"),
    [
        ("/v1/stores/odd-1/history", {}, "limit", "1"),
        ("/v1/stores/odd-1/stock/SKU-1", {}, "position", "0"),
        ("/v1/stores/odd-1/stock/SKU-1", {}, "min_position", "0"),
        ("/v1/stores/odd-1/stock", {"sku": "SKU-1"}, "position", "0"),
    ],
)
def test_a_whole_number_in_the_query_is_decimal_digits_only(
    client: httpx.Client, path: str, params: dict[str, str], name: str, plain: str, value: str
) -> None:
    """`int()`, and FastAPI with it, would read most of these as 1: the caller meant something
    else, or nothing, and a page or a position misread is answered as if it were right."""
    answer = client.get(path, params={**params, name: value})
    assert answer.status_code == 422, (value, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in answer.json()["errors"]] == [name]
    assert client.get(path, params={**params, name: plain}).status_code == 200  # the plain form


def test_one_byte_order_mark_before_a_json_body_is_ignored(client: httpx.Client) -> None:
    """RFC 8259 §8.1: a parser may ignore a UTF-8 BOM, which Windows tools and 1C exports write."""
    bom = b"\xef\xbb\xbf"
    event = (
        b'{"specversion":"1.0","id":"bom-1","source":"odd/bom","type":"stock.receipt",'
        b'"time":"2026-12-06T10:00:00Z","subject":"odd-bom","data":{"lines":[{"sku":"A","qty":5}]}}'
    )
    json_type = {"content-type": "application/json"}
    answer = client.post("/v1/events", content=bom + event, headers=json_type)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["outcome"] in ("accepted", "duplicate")
    reservation = b'{"reservation_id":"bom-r1","lines":[{"sku":"A","qty":1}]}'
    answer = client.post("/v1/stores/odd-bom/reservations", content=bom + reservation, headers=json_type)
    assert answer.status_code in (200, 201), answer.text
    release = client.post("/v1/stores/odd-bom/reservations/bom-r1/release", content=bom, headers=json_type)
    assert release.status_code == 200, release.text  # a mark alone is an empty body, as none is
    for body in (bom + bom + event, b" " + bom + event):  # one mark, first: nothing else is taken
        refused = client.post("/v1/events", content=body, headers=json_type)
        assert refused.status_code == 422 and refused.json()["title"] == "Body is not JSON", refused.text


@pytest.mark.parametrize("path", ["/v1/events", "/v1/stores/odd-cut/policies/A", "/v1/reservations"])
@pytest.mark.parametrize(
    "head_and_body",
    [
        b"Content-Length: 100\r\n\r\n" + b'{"spec',  # the client goes before its body is whole
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",  # chunks that are not chunks
    ],
    ids=["cut-short", "bad-chunks"],
)
def test_a_body_that_ends_early_is_no_error_of_the_server(
    ledger_server: Any, path: str, head_and_body: bytes
) -> None:
    """It was logged as an unhandled error, with two tracebacks, on three of the write routes."""
    method = "PUT" if "/policies/" in path else "POST"
    log_before = len(ledger_server.log_path.read_bytes())
    with socket.create_connection(("127.0.0.1", ledger_server.port), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".encode()
            + head_and_body
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    with ledger_server.client() as client:  # the request is over: whatever it logged is written
        assert client.get("/healthz").status_code == 200
    time.sleep(0.3)
    logged = ledger_server.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert "ERROR" not in logged and "Traceback" not in logged, logged


@pytest.mark.parametrize(
    ("method", "path", "body", "fields"),
    [
        ("GET", "/v1/stores/odd%2F1/stock/SKU-1", None, ["store"]),
        ("GET", "/v1/stores/odd-1/stock/SKU%2f1/explain", None, ["sku"]),
        ("GET", "/v1/stores/a%2Fb/stock/c%2Fd/timeline", None, ["store", "sku"]),
        ("GET", "/v1/stock/SKU%2F1", None, ["sku"]),
        ("GET", "/v1/stores/odd-1/reservations/r%2F1", None, ["reservation_id"]),
        ("POST", "/v1/reservations/r%2F1/release", {}, ["reservation_id"]),
        ("PUT", "/v1/stores/odd-1/policies/SKU%2F1", {"safety_stock": 1}, ["sku"]),
        ("GET", "/v1/stores/odd%2F1/history", None, ["store"]),
    ],
)
def test_an_id_with_an_encoded_slash_is_refused_naming_it(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None, fields: list[str]
) -> None:
    """An id never holds `/` (CONTRACT §1); sent as %2F, the server decodes it before routing and
    the path matched no operation: a 404 that named nothing and that no operation declares."""
    answer = client.request(method, path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert sorted(error["field"] for error in answer.json()["errors"]) == sorted(fields), answer.text


def test_a_path_that_matches_no_operation_with_its_slashes_kept_is_still_not_found(
    client: httpx.Client,
) -> None:
    for path in ("/v1/nothing%2Fhere", "/v1/stores/odd-1/stock/SKU-1/extra%2Fpart/more"):
        answer = client.get(path)
        assert answer.status_code == 404, answer.text
        assert answer.json()["type"].endswith("not-found")


def test_ids_dot_and_dot_dot_are_read_in_a_path_sent_percent_encoded(client: httpx.Client) -> None:
    """`.` and `..` are ids (CONTRACT §1), recorded like any other; most clients resolve them as a
    path's dot segments before sending (README, The API's description), but `%2E` they send as it is."""
    sku = unique("sku")
    api.record(client, ev.receipt("..", (".", 3), (sku, 5)), ev.reservation("..", ".", (sku, 2)))
    level = client.get(f"/v1/stores/%2E%2E/stock/{sku}")
    assert level.status_code == 200, level.text
    assert (level.json()["store_id"], level.json()["available"]) == ("..", 3)
    assert client.get("/v1/stores/%2E%2E/stock/%2E").json()["sku"] == "."
    assert client.get("/v1/stores/%2E%2E/reservations/%2E").json()["reservation_id"] == "."
    # Resolved by the client, the same path is another operation's: the SKU over every store.
    assert "total" in client.get(f"/v1/stores/../stock/{sku}").json()
