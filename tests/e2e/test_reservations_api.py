"""Reservations over REST: read, release (all or some lines), status through shipment, and refusals."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest
from support import api
from support import events as ev
from support.ids import unique


def _lines(body: dict) -> dict[str, tuple[int, int]]:
    return {line["sku"]: (line["qty"], line["remaining"]) for line in body["lines"]}


def test_an_unknown_reservation_is_404(client):
    store = unique("store")
    problem = api.assert_problem(client.get(f"/v1/stores/{store}/reservations/nobody"), 404)
    assert problem["instance"] == f"/v1/stores/{store}/reservations/nobody"
    api.assert_problem(client.post(f"/v1/stores/{store}/reservations/nobody/release", json={}), 404)


def test_an_unknown_reservation_is_answered_byte_for_byte_as_before(client):
    # The contract fixes these bodies; one function builds them now, and this pins what it builds.
    store = unique("store")
    read = client.get(f"/v1/stores/{store}/reservations/nobody")
    assert read.content == (
        b'{"type":"unknown-reservation","title":"Unknown reservation","status":404,'
        b'"detail":"no reservation nobody at store ' + store.encode() + b'",'
        b'"instance":"/v1/stores/' + store.encode() + b'/reservations/nobody"}'
    )
    release = client.post(f"/v1/stores/{store}/reservations/nobody/release", json={})
    assert release.content == (
        b'{"type":"unknown-reservation","title":"Unknown reservation","status":404,'
        b'"detail":"no reservation nobody",'
        b'"instance":"/v1/stores/' + store.encode() + b'/reservations/nobody/release"}'
    )


def test_releasing_a_reservation_gives_its_units_back(client):
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5), ("B", 5)))
    placed = api.reserve(
        client, store, "R-1", ("A", 3), ("B", 2), order_id="O-1", expires_at="2999-01-01T00:00:00+03:00"
    )
    assert placed.status_code == 201, placed.text
    read = client.get(f"/v1/stores/{store}/reservations/R-1")
    assert read.status_code == 200
    body = read.json()
    assert (body["reservation_id"], body["order_id"], body["status"]) == ("R-1", "O-1", "active")
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat("2999-01-01T00:00:00+03:00")
    assert _lines(body) == {"A": (3, 3), "B": (2, 2)}

    some = client.post(
        f"/v1/stores/{store}/reservations/R-1/release", json={"lines": [{"sku": "A", "qty": 1}]}
    )
    assert some.status_code == 200, some.text
    assert some.json()["status"] == "active"
    assert _lines(some.json()) == {"A": (3, 2), "B": (2, 2)}
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 2, 3, 0)

    released = client.post(f"/v1/stores/{store}/reservations/R-1/release", json={})
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    assert _lines(released.json()) == {"A": (3, 0), "B": (2, 0)}
    for sku in "AB":
        assert api.levels_tuple(api.level(client, store, sku)) == (5, 0, 5, 0)
    again = client.post(f"/v1/stores/{store}/reservations/R-1/release", json={})
    assert again.status_code == 200 and again.json()["status"] == "released"
    entries = api.history(client, store, reservation_id="R-1", type="stock.reservation_release")
    assert sum(e["reserved_delta"] for e in entries) == -5


def test_a_reservation_answers_its_expiry_in_utc_as_stored_when_placed_again_and_read(client):
    """The expiry is sent with any offset (CONTRACT §1) and stored in UTC: the answer that places it
    gives what the same request again and a read give, not the offset it was sent with."""
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    placed = api.reserve(client, store, "R-1", ("A", 1), expires_at="2030-01-01T13:00:00+03:00")
    again = api.reserve(client, store, "R-1", ("A", 1), expires_at="2030-01-01T13:00:00+03:00")
    assert (placed.status_code, again.status_code) == (201, 200), placed.text
    assert placed.json()["expires_at"] == "2030-01-01T10:00:00+00:00"
    assert placed.json() == again.json() == client.get(f"/v1/stores/{store}/reservations/R-1").json()


def test_a_reservation_moves_from_partially_shipped_to_shipped(client):
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5), ("B", 5)))
    assert api.reserve(client, store, "R-1", ("A", 2), ("B", 2)).status_code == 201

    def status() -> str:
        return client.get(f"/v1/stores/{store}/reservations/R-1").json()["status"]

    api.record(client, ev.shipment(store, ("A", 1), reservation_id="R-1"))
    assert status() == "partially_shipped"
    api.record(client, ev.shipment(store, ("A", 1), ("B", 2), reservation_id="R-1"))
    assert status() == "shipped"
    assert api.levels_tuple(api.level(client, store, "A")) == (3, 0, 3, 0)
    # A shipment under an unknown reservation is recorded as a plain one, flagged.
    [result] = api.post_events(client, ev.shipment(store, ("A", 1), reservation_id="R-nobody"))
    assert result["outcome"] == "accepted"
    [entry] = api.history(client, store, reservation_id="R-nobody")
    assert entry["unknown_reservation"] is True and entry["on_hand_delta"] == -1


def test_a_partially_shipped_reservation_released_is_released(client):
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    assert api.reserve(client, store, "R-1", ("A", 4)).status_code == 201
    api.record(client, ev.shipment(store, ("A", 1), reservation_id="R-1"))
    released = client.post(f"/v1/stores/{store}/reservations/R-1/release", json={})
    assert released.json()["status"] == "released"
    assert api.levels_tuple(api.level(client, store, "A")) == (4, 0, 4, 0)


def test_an_invalid_reservation_request_is_refused_naming_the_field(client):
    store = unique("store")
    path = f"/v1/stores/{store}/reservations"
    problem = api.assert_problem(client.post(path, json={"lines": [{"sku": "A", "qty": 1}]}), 422)
    assert [e["field"] for e in problem["errors"]] == ["reservation_id"]
    problem = api.assert_problem(client.post(path, json={"reservation_id": "R-1"}), 422)
    assert "lines" in {e["field"] for e in problem["errors"]}
    problem = api.assert_problem(
        client.post(path, json={"reservation_id": "R-1", "lines": [{"sku": "A", "qty": 0}]}), 422
    )
    assert "lines[0].qty" in {e["field"] for e in problem["errors"]}
    api.assert_problem(client.post(path, content=b"[1, 2", headers={"content-type": "application/json"}), 422)
    api.assert_problem(client.get(f"/v1/stores/{store}/reservations/R-1"), 404)


def test_a_field_a_reservation_body_does_not_have_is_refused_by_name_and_nothing_is_placed(client):
    """A typo was dropped in silence: `expire_at` placed a reservation that never expires."""
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    one = [{"sku": "A", "qty": 1}]
    at_store, across = f"/v1/stores/{store}/reservations", "/v1/reservations"
    cases = [
        (at_store, {"reservation_id": "R-1", "lines": one, "expire_at": "2030-01-01T00:00:00Z"}, "expire_at"),
        (at_store, {"reservation_id": "R-1", "lines": [{**one[0], "code": ["X"]}]}, "lines[0].code"),
        (
            across,
            {"reservation_id": "R-2", "lines": [{"store": store, **one[0]}], "channnel": "o"},
            "channnel",
        ),
    ]
    for path, body, field in cases:
        answer = client.post(path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in answer.json()["errors"]] == [field], answer.text
        assert "is not a field of a" in answer.text
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 0, 5, 0)
    assert api.reserve(client, store, "R-3", ("A", 2)).status_code == 201
    release = client.post(
        f"/v1/stores/{store}/reservations/R-3/release", json={"line": [{"sku": "A", "qty": 1}]}
    )
    assert release.status_code == 422 and release.json()["errors"][0]["field"] == "line", release.text
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 2, 3, 0)


def test_an_encoded_slash_in_an_id_never_reaches_another_operation(client):
    """Decoded before routing, `R-1%2Frelease` made the path of R-1's release, `s%2Fstock` that of a
    level at store s, and `A%2Fexplain` the explain of A: each is an id the contract refuses (no
    `/`, CONTRACT §1), and nothing is released, reserved or read."""
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    assert api.reserve(client, store, "R-1", ("A", 3)).status_code == 201
    refused = client.post(f"/v1/stores/{store}/reservations/R-1%2Frelease", json={})
    assert [e["field"] for e in api.assert_problem(refused, 422, "invalid-request")["errors"]] == [
        "reservation_id"
    ]
    assert client.get(f"/v1/stores/{store}/reservations/R-1").json()["status"] == "active"
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 3, 2, 0)
    # The fast path's two routes: a reservation at store `s` and a level read from memory.
    placed = client.post(
        f"/v1/stores/{store}%2Freservations", json={"reservation_id": "R-2", "lines": ev.lines(("A", 1))}
    )
    api.assert_problem(placed, 404, "not-found")
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 3, 2, 0)
    api.assert_problem(client.get(f"/v1/stores/{store}%2Fstock/A"), 404, "not-found")
    explained = client.get(f"/v1/stores/{store}/stock/A%2Fexplain")
    assert [e["field"] for e in api.assert_problem(explained, 422)["errors"]] == ["sku"]


def _sent_as_is(server, method: str, target: str) -> int:
    """The status of a request whose target goes out byte for byte (no client normalises it)."""
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("prefix", "status"), [("/%761", 422), ("/v%31", 422), ("/%76%31", 422), ("/v1%2F", 404)]
)
def test_an_encoded_slash_is_refused_however_the_rest_of_the_path_is_encoded(
    ledger_server, client, prefix, status
):
    """The router reads the path decoded: `/%761/` is `/v1/`. A check of the bytes for `/v1/` let
    `R-1%2Frelease` release R-1 again (found by review)."""
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    assert api.reserve(client, store, "R-1", ("A", 3)).status_code == 201
    path = f"{prefix}/stores/{store}/reservations/R-1%2Frelease".replace("/v1%2F/", "/v1%2F")
    assert _sent_as_is(ledger_server, "POST", path) == status
    assert client.get(f"/v1/stores/{store}/reservations/R-1").json()["status"] == "active"
