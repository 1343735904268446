"""Reservations across stores and sourcing over HTTP (CONTRACT §6), on both databases: all or
none, the same request again, conflicts, expiry of every part, each part as a per-store
reservation afterwards, sourcing's rule and its reservation in the same step, and 422s that name
the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import api
from support import events as ev
from support.ids import unique

ENV = {"LEDGER_EXPIRY_INTERVAL_MS": "100"}
EXPIRY_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def client(module_database_url: str, module_serve) -> Iterator[httpx.Client]:
    server = module_serve(module_database_url, ENV)
    with server.client() as http:
        yield http


def stock(client: httpx.Client, store: str, *pairs: tuple[str, int]) -> None:
    api.record(client, ev.receipt(store, *pairs))


def across_body(reservation_id: str, *lines: tuple[str, str, int], **extra: Any) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "lines": [{"store": store, "sku": sku, "qty": qty} for store, sku, qty in lines],
        **extra,
    }


def reserved(client: httpx.Client, store: str, sku: str) -> int:
    return int(api.level(client, store, sku)["reserved"])


def test_a_reservation_across_stores_is_placed_at_one_position_and_is_idempotent(
    client: httpx.Client,
) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 5))
    stock(client, s2, ("B", 5))
    body = across_body(unique("R"), (s1, "A", 2), (s2, "B", 3))
    placed = client.post("/v1/reservations", json=body)
    assert placed.status_code == 201, placed.text
    answer = placed.json()
    assert answer["status"] == "active" and answer["reservation_id"] == body["reservation_id"]
    assert [(p["store_id"], p["lines"][0]["sku"], p["lines"][0]["qty"]) for p in answer["stores"]] == sorted(
        [(s1, "A", 2), (s2, "B", 3)]
    )
    [position] = {p["position"] for p in answer["stores"]}
    # Each part is an ordinary per-store reservation, in each store's history at that position.
    for store, sku in ((s1, "A"), (s2, "B")):
        part = client.get(f"/v1/stores/{store}/reservations/{body['reservation_id']}")
        assert part.status_code == 200 and part.json()["status"] == "active"
        [entry] = api.history(client, store, type="stock.reservation")
        assert (entry["position"], entry["sku"], entry["outcome"]) == (position, sku, "accepted")
    again = client.post("/v1/reservations", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == answer
    other = across_body(body["reservation_id"], (s1, "A", 1), (s2, "B", 3))
    api.assert_problem(client.post("/v1/reservations", json=other), 409, "reservation-conflict")
    assert (reserved(client, s1, "A"), reserved(client, s2, "B")) == (2, 3)
    fetched = client.get(f"/v1/reservations/{body['reservation_id']}")
    assert fetched.status_code == 200 and fetched.json() == answer


def test_one_part_short_reserves_nothing_at_any_store(client: httpx.Client) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 5))
    stock(client, s2, ("B", 1))
    rid = unique("R")
    refused = client.post("/v1/reservations", json=across_body(rid, (s1, "A", 2), (s2, "B", 3)))
    problem = api.assert_problem(refused, 409, "insufficient-stock")
    assert problem["shortfall"] == [{"store": s2, "sku": "B", "requested": 3, "available": 1}]
    assert (reserved(client, s1, "A"), reserved(client, s2, "B")) == (0, 0)
    api.assert_problem(client.get(f"/v1/stores/{s1}/reservations/{rid}"), 404)
    api.assert_problem(client.get(f"/v1/reservations/{rid}"), 404)
    assert api.history(client, s1, type="stock.reservation") == []
    # Once stock arrives the same request succeeds: a refusal recorded nothing to be a duplicate of.
    stock(client, s2, ("B", 2))
    assert (
        client.post("/v1/reservations", json=across_body(rid, (s1, "A", 2), (s2, "B", 3))).status_code == 201
    )


def test_an_unknown_reservation_across_stores_is_answered_byte_for_byte_as_before(
    client: httpx.Client,
) -> None:
    # The contract fixes these bodies; one function builds them now, and this pins what it builds.
    rid = unique("R")
    for response, path in (
        (client.get(f"/v1/reservations/{rid}"), f"/v1/reservations/{rid}"),
        (client.post(f"/v1/reservations/{rid}/release", json={}), f"/v1/reservations/{rid}/release"),
    ):
        assert response.status_code == 404
        assert response.content == (
            b'{"type":"unknown-reservation","title":"Unknown reservation","status":404,'
            b'"detail":"no reservation ' + rid.encode() + b'","instance":"' + path.encode() + b'"}'
        )


def test_every_part_is_released_or_shipped_as_a_per_store_reservation(client: httpx.Client) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 5))
    stock(client, s2, ("A", 5))
    rid = unique("R")
    assert (
        client.post("/v1/reservations", json=across_body(rid, (s1, "A", 2), (s2, "A", 3))).status_code == 201
    )
    api.record(client, ev.shipment(s1, ("A", 2), reservation_id=rid))
    assert client.get(f"/v1/reservations/{rid}").json()["status"] == "partially_shipped"
    released = client.post(f"/v1/reservations/{rid}/release", json={})
    assert released.status_code == 200, released.text
    parts = {p["store_id"]: p["status"] for p in released.json()["stores"]}
    assert parts == {s1: "shipped", s2: "released"}
    assert released.json()["status"] == "released"
    assert (reserved(client, s1, "A"), reserved(client, s2, "A")) == (0, 0)


def test_every_part_of_a_reservation_across_stores_expires(client: httpx.Client) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 5))
    stock(client, s2, ("A", 5))
    rid = unique("R")
    body = across_body(rid, (s1, "A", 2), (s2, "A", 3), expires_at=ev.now_rfc3339(1.0))
    assert client.post("/v1/reservations", json=body).status_code == 201
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    while client.get(f"/v1/reservations/{rid}").json()["status"] != "expired":
        assert time.monotonic() < deadline, client.get(f"/v1/reservations/{rid}").text
        time.sleep(0.1)
    answer = client.get(f"/v1/reservations/{rid}").json()
    assert [p["status"] for p in answer["stores"]] == ["expired", "expired"]
    assert (reserved(client, s1, "A"), reserved(client, s2, "A")) == (0, 0)


def test_sourcing_answers_by_the_rule_and_reserves_in_the_same_call(client: httpx.Client) -> None:
    s1, s2, s3 = unique("s1"), unique("s2"), unique("s3")
    stock(client, s1, ("A", 1), ("B", 9))
    stock(client, s2, ("A", 9), ("C", 1))
    stock(client, s3, ("A", 9), ("B", 9), ("C", 9))
    ask = {"lines": ev.lines(("A", 2), ("B", 2), ("C", 1)), "stores": [s1, s2, s3]}
    asked = client.post("/v1/sourcing", json=ask)
    assert asked.status_code == 200, asked.text
    assert asked.json() == {"allocations": [{"store": s3, "lines": ev.lines(("A", 2), ("B", 2), ("C", 1))}]}
    # Without s3 no store serves alone: s1 and s2, each line taken in candidate order.
    pair = client.post("/v1/sourcing", json={**ask, "stores": [s1, s2]}).json()
    assert pair == {
        "allocations": [
            {"store": s1, "lines": ev.lines(("A", 1), ("B", 2))},
            {"store": s2, "lines": ev.lines(("A", 1), ("C", 1))},
        ]
    }
    rid = unique("R")
    placing = {**ask, "stores": [s1, s2], "reserve": {"reservation_id": rid, "order_id": "o-1"}}
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    body = placed.json()
    assert body["allocations"] == pair["allocations"]
    assert body["reservation"]["order_id"] == "o-1"
    assert [p["store_id"] for p in body["reservation"]["stores"]] == sorted([s1, s2])
    assert (reserved(client, s1, "B"), reserved(client, s2, "C")) == (2, 1)
    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200 and again.json() == body
    changed = {**placing, "lines": ev.lines(("A", 1))}
    api.assert_problem(client.post("/v1/sourcing", json=changed), 409, "reservation-conflict")
    assert client.get(f"/v1/reservations/{rid}").json() == body["reservation"]


def test_sourcing_that_nothing_serves_says_which_lines_and_reserves_nothing(client: httpx.Client) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 1), ("B", 1))
    stock(client, s2, ("A", 1), ("B", 1))
    short = {
        "lines": ev.lines(("A", 3), ("B", 2)),
        "stores": [s1, s2],
        "reserve": {"reservation_id": unique("R")},
    }
    problem = api.assert_problem(client.post("/v1/sourcing", json=short), 409, "insufficient-stock")
    assert problem["shortfall"] == [{"sku": "A", "requested": 3, "available": 2}]
    only_max = {"lines": ev.lines(("A", 2)), "stores": [s1, s2], "max_stores": 1}
    assert api.assert_problem(client.post("/v1/sourcing", json=only_max), 409)["shortfall"] == []
    assert (reserved(client, s1, "A"), reserved(client, s2, "A")) == (0, 0)


@pytest.mark.parametrize("elsewhere", [0, 5], ids=["no-other-store", "another-store-has-stock"])
def test_sourcing_without_stores_answers_the_same_request_again_after_it_took_the_last_units(
    client: httpx.Client, elsewhere: int
) -> None:
    """The stores found for a retry no longer include those where the first request took the last
    units: the retry must still be answered as the first was, not refused."""
    s1, s2, sku = unique("s1"), unique("s2"), unique("SKU")
    stock(client, s1, (sku, 9))
    placing = {"lines": ev.lines((sku, 9)), "reserve": {"reservation_id": unique("R")}}
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    assert placed.json()["allocations"] == [{"store": s1, "lines": ev.lines((sku, 9))}]
    if elsewhere:
        stock(client, s2, (sku, elsewhere))
    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()
    assert (reserved(client, s1, sku), reserved(client, s2, sku)) == (9, 0)


def test_sourcing_without_stores_answers_the_allocations_again_in_store_id_order(
    client: httpx.Client,
) -> None:
    """The first request emptied s1, so the stores found for the retry are s2 and s3 alone: the
    allocations are still in the order of the request's own candidates (every store, by id)."""
    s1, s2, s3, sku = unique("s1"), unique("s2"), unique("s3"), unique("SKU")
    stock(client, s1, (sku, 2))
    stock(client, s2, (sku, 1))
    stock(client, s3, (sku, 6))
    placing = {"lines": ev.lines((sku, 7)), "reserve": {"reservation_id": unique("R")}}
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    assert placed.json()["allocations"] == [
        {"store": s1, "lines": ev.lines((sku, 2))},
        {"store": s3, "lines": ev.lines((sku, 5))},
    ]
    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()


@pytest.mark.parametrize("left", [3, 0], ids=["units-left", "took-the-last-units"])
def test_sourcing_again_answers_its_own_reservation_when_another_store_holds_the_id(
    client: httpx.Client, left: int
) -> None:
    """Reservation ids are unique per store only (CONTRACT §1): another store may hold the same id
    for another order, and the same sourcing request again still answers what it placed."""
    other, s1, sku = unique("s0"), unique("s1"), unique("SKU")
    stock(client, other, ("OTHER", 5))
    stock(client, s1, (sku, 2 + left))
    rid = unique("R")
    elsewhere = client.post(
        f"/v1/stores/{other}/reservations", json={"reservation_id": rid, "lines": ev.lines(("OTHER", 1))}
    )
    assert elsewhere.status_code == 201, elsewhere.text
    placing = {"lines": ev.lines((sku, 2)), "reserve": {"reservation_id": rid}}
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    assert placed.json()["allocations"] == [{"store": s1, "lines": ev.lines((sku, 2))}]
    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()  # its allocations, reservation and position
    assert [part["store_id"] for part in again.json()["reservation"]["stores"]] == [s1]
    assert (reserved(client, other, "OTHER"), reserved(client, s1, sku)) == (1, 2)


def _holding_the_id_elsewhere(client: httpx.Client, rid: str) -> str:
    """More stores than a reservation across stores may span (LEDGER_RESERVATION_STORES_MAX, 20)
    hold `rid` for orders of their own (ids are unique per store only: a till numbering its
    reservations from 1, say), all of them before the returned prefix's stores by id."""
    base = unique("x")
    others = [f"{base}-a{i:02d}" for i in range(21)]
    api.record(client, *(ev.receipt(store, ("OTHER", 5)) for store in others))
    api.record(client, *(ev.reservation(store, rid, ("OTHER", 1)) for store in others))
    return base


def test_a_reservation_across_stores_is_answered_again_whatever_other_stores_hold_its_id(
    client: httpx.Client,
) -> None:
    rid = unique("R")
    base = _holding_the_id_elsewhere(client, rid)
    s1, s2 = f"{base}-z1", f"{base}-z2"
    stock(client, s1, ("A", 5))
    stock(client, s2, ("A", 5))
    body = across_body(rid, (s1, "A", 2), (s2, "A", 3))
    placed = client.post("/v1/reservations", json=body)
    assert placed.status_code == 201, placed.text
    again = client.post("/v1/reservations", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()


def test_sourcing_again_answers_its_own_reservation_whatever_other_stores_hold_its_id(
    client: httpx.Client,
) -> None:
    rid, sku = unique("R"), unique("SKU")
    base = _holding_the_id_elsewhere(client, rid)
    s1 = f"{base}-z1"
    stock(client, s1, (sku, 5))
    placing = {"lines": ev.lines((sku, 2)), "stores": [s1], "reserve": {"reservation_id": rid}}
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()
    assert reserved(client, s1, sku) == 2


def test_a_reservation_across_stores_answers_its_expiry_in_utc_as_stored(client: httpx.Client) -> None:
    """Sent with any offset, stored in UTC: the answer that places it gives what the same request
    again and a read give, for the reservation and for each part."""
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 5))
    stock(client, s2, ("A", 5))
    rid = unique("R")
    body = across_body(rid, (s1, "A", 1), (s2, "A", 1), expires_at="2030-01-01T13:00:00+03:00")
    placed = client.post("/v1/reservations", json=body)
    again = client.post("/v1/reservations", json=body)
    assert (placed.status_code, again.status_code) == (201, 200), placed.text
    answer = placed.json()
    assert {answer["expires_at"]} | {p["expires_at"] for p in answer["stores"]} == {
        "2030-01-01T10:00:00+00:00"
    }
    assert answer == again.json() == client.get(f"/v1/reservations/{rid}").json()


def test_sourcing_answers_its_reservations_expiry_in_utc_as_stored(client: httpx.Client) -> None:
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 1))
    stock(client, s2, ("A", 1))
    rid = unique("R")
    placing = {
        "lines": ev.lines(("A", 2)),
        "stores": [s1, s2],
        "reserve": {"reservation_id": rid, "expires_at": "2030-01-01T13:00:00+03:00"},
    }
    placed = client.post("/v1/sourcing", json=placing)
    again = client.post("/v1/sourcing", json=placing)
    assert (placed.status_code, again.status_code) == (200, 200), placed.text
    reservation = placed.json()["reservation"]
    expiries = {reservation["expires_at"]} | {p["expires_at"] for p in reservation["stores"]}
    assert expiries == {"2030-01-01T10:00:00+00:00"}
    assert placed.json() == again.json()
    assert reservation == client.get(f"/v1/reservations/{rid}").json()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/reservations", {"lines": [{"store": "s", "sku": "A", "qty": 1}]}, "reservation_id"),
        ("/v1/reservations", {"reservation_id": "R", "lines": []}, "lines"),
        ("/v1/reservations", {"reservation_id": "R", "lines": [{"sku": "A", "qty": 1}]}, "lines[0].store"),
        (
            "/v1/reservations",
            {"reservation_id": "R", "lines": [{"store": "s\n", "sku": "A", "qty": 1}]},
            "lines[0].store",
        ),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "stores": ["s\n"]}, "stores[0]"),
        (
            "/v1/reservations",
            {
                "reservation_id": "R",
                "lines": [{"store": "s", "sku": "A", "qty": 1}, {"store": "t", "sku": "A", "qty": 0}],
            },
            "lines[1].qty",
        ),
        (
            "/v1/reservations",
            {
                "reservation_id": "R",
                "lines": [{"store": "s", "sku": "A", "qty": 1}, {"store": "s", "sku": "A", "qty": 1}],
            },
            "lines[1].sku",
        ),
        (
            "/v1/reservations",
            {"reservation_id": "R", "channel": "no way", "lines": [{"store": "s", "sku": "A", "qty": 1}]},
            "channel",
        ),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "max_stores": 6}, "max_stores"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "stores": ["s", "s"]}, "stores[1]"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "stores": []}, "stores"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": -1}]}, "lines[0].qty"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}] * 51}, "lines"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "reserve": {}}, "reserve.reservation_id"),
        (
            "/v1/sourcing",
            {"lines": [{"sku": "A", "qty": 1}], "reserve": {"reservation_id": "R", "expires_at": "soon"}},
            "reserve.expires_at",
        ),
        ("/v1/reservations/R/release", {"lines": [{"sku": "A", "qty": 1}]}, "lines"),
    ],
)
def test_a_bad_body_is_a_422_that_names_the_field(
    client: httpx.Client, path: str, body: Any, field: str
) -> None:
    problem = api.assert_problem(client.post(path, json=body), 422)
    assert field in [error["field"] for error in problem["errors"]], problem


@pytest.mark.parametrize("named", [True, False], ids=["stores-named", "no-stores"])
def test_sourcing_again_after_the_last_units_answers_its_own_parts_not_a_later_order_under_its_id(
    client: httpx.Client, named: bool
) -> None:
    """The same request again after it took the last units is not sent to the writer; its parts were
    taken as the latest ones holding its lines, which a later order at another store, under the same
    id and with the same lines, could be (found by review). They are those its command's key names."""
    s1, other, sku = unique("s1"), unique("s9"), unique("SKU")
    api.record(client, ev.receipt(s1, (sku, 2)))
    rid = unique("R")
    placing: dict[str, Any] = {"lines": ev.lines((sku, 2)), "reserve": {"reservation_id": rid}}
    if named:
        placing["stores"] = [s1]
    placed = client.post("/v1/sourcing", json=placing)
    assert placed.status_code == 200, placed.text
    assert placed.json()["allocations"] == [{"store": s1, "lines": ev.lines((sku, 2))}]
    api.record(client, ev.receipt(other, (sku, 2)))
    elsewhere = client.post(
        f"/v1/stores/{other}/reservations", json={"reservation_id": rid, "lines": ev.lines((sku, 2))}
    )
    assert elsewhere.status_code == 201, elsewhere.text

    again = client.post("/v1/sourcing", json=placing)
    assert again.status_code == 200, again.text
    assert again.json() == placed.json()


def test_a_reservation_held_at_more_stores_than_a_read_takes_is_refused_whole_not_answered_in_part(
    client: httpx.Client,
) -> None:
    """GET and release of /v1/reservations/{id} read every store's reservation under the id, at most
    LEDGER_RESERVATION_STORES_MAX of them: with more, they answered (and released) the first ones
    by store id only, as if those were all, and left the rest reserved."""
    rid = unique("R")
    base = _holding_the_id_elsewhere(client, rid)
    last = f"{base}-z1"
    stock(client, last, ("A", 5))
    assert (
        client.post(
            f"/v1/stores/{last}/reservations", json={"reservation_id": rid, "lines": ev.lines(("A", 2))}
        ).status_code
        == 201
    )
    for response in (
        client.get(f"/v1/reservations/{rid}"),
        client.post(f"/v1/reservations/{rid}/release", json={}),
    ):
        problem = api.assert_problem(response, 422, "too-many-stores")
        assert "LEDGER_RESERVATION_STORES_MAX" in problem["detail"]
    assert reserved(client, last, "A") == 2
    assert reserved(client, f"{base}-a00", "OTHER") == 1  # nothing was released anywhere


def _codes_by_sku(client: httpx.Client, store: str, reservation_id: str) -> dict[str, list[str] | None]:
    entries = api.history(client, store, reservation_id=reservation_id, type="stock.reservation")
    return {entry["sku"]: entry.get("codes") for entry in entries}


def test_sourcing_reserves_a_lines_codes_at_the_store_that_takes_the_line_whole(client: httpx.Client) -> None:
    """A sourcing line's codes (the units the order asks for, which the WMS's picking order carries)
    were dropped from the reservation it placed. A code names a unit at one store: a line taken whole
    from one store keeps them there; a line taken from several stores carries none."""
    s1, s2 = unique("s1"), unique("s2")
    stock(client, s1, ("A", 2), ("B", 5))
    stock(client, s2, ("A", 5))
    alone = unique("R")
    placed = client.post(
        "/v1/sourcing",
        json={
            "lines": [{"sku": "B", "qty": 2, "codes": ["b1", "b2"]}],
            "stores": [s1, s2],
            "reserve": {"reservation_id": alone},
        },
    )
    assert placed.status_code == 200, placed.text
    assert _codes_by_sku(client, s1, alone) == {"B": ["b1", "b2"]}

    split = unique("R")
    placed = client.post(
        "/v1/sourcing",
        json={
            "lines": [{"sku": "A", "qty": 3, "codes": ["a1"]}, {"sku": "B", "qty": 2, "codes": ["b3"]}],
            "stores": [s1, s2],
            "reserve": {"reservation_id": split},
        },
    )
    assert placed.status_code == 200, placed.text
    assert placed.json()["allocations"] == [
        {"store": s1, "lines": ev.lines(("A", 2), ("B", 2))},
        {"store": s2, "lines": ev.lines(("A", 1))},
    ]
    assert _codes_by_sku(client, s1, split) == {"A": None, "B": ["b3"]}
    assert _codes_by_sku(client, s2, split) == {"A": None}
    assert [e["type"] for e in api.history(client, s1, code="b3")] == ["stock.reservation"]
