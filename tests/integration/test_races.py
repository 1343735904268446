"""Real processes racing two `ledger serve` instances on one database: no unit is ever claimed twice."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support import api, db
from support import events as ev
from support.clients import Request, send_from_processes
from support.ids import unique

pytestmark = pytest.mark.slow

SEED_SKUS = 50
STORM_STOCK_UNITS = 300
STORM_PROCESSES = 8
STORM_ATTEMPTS_PER_PROCESS = 75


def _reservation_body(reservation_id: str, sku: str, qty: int = 1) -> dict[str, Any]:
    return {"reservation_id": reservation_id, "lines": [{"sku": sku, "qty": qty}]}


def test_online_reservation_and_till_sale_racing_for_the_last_unit_never_both_claim_it(database_url, serve):
    a, b = serve(database_url), serve(database_url)
    store = unique("store")
    skus = [f"SKU-{i:03d}" for i in range(SEED_SKUS)]
    with a.client() as client:
        api.record(client, ev.receipt(store, *((sku, 1) for sku in skus)))

    def reservation(sku: str, url: str) -> Request:
        return (url, f"/v1/stores/{store}/reservations", _reservation_body(f"web-{sku}", sku))

    def till_sale(sku: str, url: str) -> Request:
        return (url, "/v1/events", ev.pos_sale(store, (sku, 1), event_id=f"till-{sku}", reference=f"r-{sku}"))

    even, odd = skus[0::2], skus[1::2]
    answers = send_from_processes(
        [
            [reservation(sku, a.url) for sku in even],
            [reservation(sku, b.url) for sku in odd],
            [till_sale(sku, b.url) for sku in even],
            [till_sale(sku, a.url) for sku in odd],
        ]
    )
    reserved_answers = dict(zip(even + odd, answers[0] + answers[1], strict=True))
    till_answers = dict(zip(even + odd, answers[2] + answers[3], strict=True))

    levels = db.level_rows(database_url, store)
    history = db.history_rows(database_url, store)
    for sku in skus:
        status, body = reserved_answers[sku]
        till_status, till_body = till_answers[sku]
        assert till_status == 200, till_body
        [till_result] = till_body["results"]
        assert till_result["outcome"] == "accepted", till_result
        entries = {row["type"]: row for row in history if row["sku"] == sku}
        assert set(entries) == {"stock.receipt", "stock.reservation", "stock.pos_sale"}, entries
        till_entry, reservation_entry = entries["stock.pos_sale"], entries["stock.reservation"]
        assert till_entry["position"] == till_result["position"]
        level = levels[sku]
        assert level["on_hand"] == 0
        if status == 201:
            # The reservation came first: the till sale took a unit promised online.
            assert body["status"] == "active" and body["lines"][0]["remaining"] == 1, body
            assert reservation_entry["outcome"] == "accepted"
            assert reservation_entry["position"] < till_entry["position"]
            assert till_entry["oversold"] == 1
            assert (level["reserved"], level["on_hand"] - level["reserved"]) == (1, -1)
        else:
            assert status == 409, body
            assert body["type"] == "insufficient-stock", body
            assert body["shortfall"] == [{"sku": sku, "requested": 1, "available": 0}]
            assert reservation_entry["outcome"] == "rejected"
            assert reservation_entry["reason"] == "insufficient_stock"
            assert reservation_entry["position"] > till_entry["position"]
            assert till_entry["oversold"] == 0
            assert level["reserved"] == 0
    # Both instances answer the same levels once they have caught up with each other.
    head = max(row["position"] for row in history)
    for server in (a, b):
        with server.client() as client:
            response = client.get(f"/v1/stores/{store}/stock", params={"sku": skus, "min_position": head})
            assert response.status_code == 200, response.text
            for item in response.json()["items"]:
                level = levels[item["sku"]]
                assert (item["on_hand"], item["reserved"]) == (level["on_hand"], level["reserved"])
                assert item["available"] == level["on_hand"] - level["reserved"]


def test_a_storm_of_reservations_on_a_hot_sku_reserves_exactly_the_stock(database_url, serve):
    servers = [serve(database_url), serve(database_url)]
    store, sku = unique("store"), "HOT-1"
    with servers[0].client() as client:
        api.record(client, ev.receipt(store, (sku, STORM_STOCK_UNITS)))

    path = f"/v1/stores/{store}/reservations"
    answers = send_from_processes(
        [
            [
                (servers[p % 2].url, path, _reservation_body(f"r-{p}-{i}", sku))
                for i in range(STORM_ATTEMPTS_PER_PROCESS)
            ]
            for p in range(STORM_PROCESSES)
        ]
    )

    flat = [answer for per_process in answers for answer in per_process]
    placed = [body for status, body in flat if status == 201]
    refused = [body for status, body in flat if status == 409]
    assert len(placed) == STORM_STOCK_UNITS
    assert len(refused) == len(flat) - STORM_STOCK_UNITS
    assert all(body["status"] == "active" for body in placed)
    for body in refused:
        assert body["type"] == "insufficient-stock", body
        assert body["shortfall"] == [{"sku": sku, "requested": 1, "available": 0}]
    recorded = db.level_rows(database_url, store)[sku]
    assert (recorded["on_hand"], recorded["reserved"]) == (STORM_STOCK_UNITS, STORM_STOCK_UNITS)
    with servers[1].client() as client:
        reservations = api.history(client, store, type="stock.reservation")
    accepted = [e for e in reservations if e["outcome"] == "accepted"]
    assert len(accepted) == STORM_STOCK_UNITS
    assert len(reservations) == len(flat)
    assert len({e["reservation_id"] for e in accepted}) == STORM_STOCK_UNITS
    assert sum(e["reserved_delta"] for e in reservations) == STORM_STOCK_UNITS
    assert [e["reserved"] for e in accepted] == list(range(1, STORM_STOCK_UNITS + 1))
    # Each instance, once it has applied the last answer's position, reads the same levels.
    head = max(body["position"] for _, body in flat)
    for server in servers:
        with server.client() as client:
            level = api.level(client, store, sku, min_position=head)
        assert api.levels_tuple(level) == (STORM_STOCK_UNITS, STORM_STOCK_UNITS, 0, 0), server.url


QUOTA_STOCK_UNITS = 200
QUOTA_SAFETY_UNITS = 5
QUOTA_PCT = 30  # of 200 on hand: 60 units online
ONLINE_PROCESSES = 6
ONLINE_ATTEMPTS_PER_PROCESS = 40
PLAIN_PROCESSES = 2
PLAIN_ATTEMPTS_PER_PROCESS = 80


def test_a_race_for_an_online_quota_never_reserves_more_than_the_quota_nor_the_safety_stock(
    database_url, serve
):
    """CONTRACT §6 under load: online reservations and plain ones from several processes through two
    instances (each with its writer process). Instance b learns of the policy set through a from the
    log (it has decided for the store before, without a policy)."""
    a, b = serve(database_url), serve(database_url)
    store, sku = unique("store"), "HOT-1"
    with b.client() as client:
        api.record(client, ev.receipt(store, (sku, QUOTA_STOCK_UNITS)))
        assert api.reserve(client, store, "warm-up", (sku, 1), channel="online").status_code == 201
        assert client.post(f"/v1/stores/{store}/reservations/warm-up/release", json={}).status_code == 200
    quota_units = QUOTA_STOCK_UNITS * QUOTA_PCT // 100
    sellable_units = QUOTA_STOCK_UNITS - QUOTA_SAFETY_UNITS
    with a.client() as client:
        policy = {"safety_stock": QUOTA_SAFETY_UNITS, "channels": {"online": {"quota_pct": QUOTA_PCT}}}
        api.put_policy(client, store, sku, policy)

    path = f"/v1/stores/{store}/reservations"
    online = [
        [
            (
                (a, b)[p % 2].url,
                path,
                _reservation_body(f"web-{p}-{i}", sku) | {"channel": "online"},
            )
            for i in range(ONLINE_ATTEMPTS_PER_PROCESS)
        ]
        for p in range(ONLINE_PROCESSES)
    ]
    plain = [
        [
            ((a, b)[p % 2].url, path, _reservation_body(f"shop-{p}-{i}", sku))
            for i in range(PLAIN_ATTEMPTS_PER_PROCESS)
        ]
        for p in range(PLAIN_PROCESSES)
    ]
    answers = send_from_processes(online + plain)

    online_answers = [answer for per_process in answers[:ONLINE_PROCESSES] for answer in per_process]
    plain_answers = [answer for per_process in answers[ONLINE_PROCESSES:] for answer in per_process]
    online_placed = [body for status, body in online_answers if status == 201]
    plain_placed = [body for status, body in plain_answers if status == 201]
    for status, body in online_answers + plain_answers:
        assert status in (201, 409), body
        if status == 409:
            assert body["type"] == "insufficient-stock", body
            assert body["shortfall"] == [{"sku": sku, "requested": 1, "available": 0}], body
    assert all(body["channel"] == "online" for body in online_placed)
    assert 0 < len(online_placed) <= quota_units
    # Plain reservations always outnumber what the safety stock leaves: the store ends sold out.
    assert len(online_placed) + len(plain_placed) == sellable_units

    recorded = db.level_rows(database_url, store)[sku]
    assert (recorded["on_hand"], recorded["reserved"]) == (QUOTA_STOCK_UNITS, sellable_units)
    assert orjson.loads(recorded["channels"]) == {"online": len(online_placed)}
    head = max(body["position"] for _, body in online_answers + plain_answers)
    for server in (a, b):
        with server.client() as client:
            level = api.level(client, store, sku, min_position=head)
        assert (level["safety_stock"], level["sellable"]) == (QUOTA_SAFETY_UNITS, 0), server.url
        assert level["channels"] == {
            "online": {
                "quota": quota_units,
                "reserved": len(online_placed),
                "sellable": 0,
            }
        }, server.url
