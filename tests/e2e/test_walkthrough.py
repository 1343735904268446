"""The README walkthrough over HTTP: receive, reserve online, sell at the till, refuse, ship, read history."""

from __future__ import annotations

from datetime import datetime, timedelta

from support import api
from support import events as ev
from support.ids import unique

ENTRY_FIELDS = {
    "position",
    "event_id",
    "source",
    "type",
    "time",
    "recorded_at",
    "sku",
    "outcome",
    "reason",
    "on_hand_delta",
    "reserved_delta",
    "incoming_delta",
    "on_hand",
    "reserved",
    "available",
    "oversold",
    "unknown_reservation",
}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_readme_walkthrough(client):
    store, sku = unique("store"), "SKU-1"
    receipt = ev.envelope(
        "stock.receipt",
        store,
        {"lines": ev.lines((sku, 5)), "reference": "GRN 7"},
        event_id="grn-7",
        source="wms/main",
        time="2026-11-22T09:00:00+03:00",
    )
    [received] = api.post_events(client, receipt)
    assert received == {
        "id": "grn-7",
        "source": "wms/main",
        "outcome": "accepted",
        "position": received["position"],
    }

    placed = api.reserve(client, store, "web-1", (sku, 2), order_id="order-1")
    assert placed.status_code == 201, placed.text
    assert placed.headers["content-type"].startswith("application/json")
    reservation = placed.json()
    assert {k: reservation[k] for k in ("reservation_id", "order_id", "status", "expires_at")} == {
        "reservation_id": "web-1",
        "order_id": "order-1",
        "status": "active",
        "expires_at": None,
    }
    assert [(line["sku"], line["qty"], line["remaining"]) for line in reservation["lines"]] == [(sku, 2, 2)]
    level = api.level(client, store, sku)
    assert {k: level[k] for k in ("store_id", "sku", "on_hand", "reserved", "available", "incoming")} == {
        "store_id": store,
        "sku": sku,
        "on_hand": 5,
        "reserved": 2,
        "available": 3,
        "incoming": 0,
    }
    assert level["position"] >= reservation["position"] and level["updated_at"]

    till = ev.envelope(
        "stock.pos_sale",
        store,
        {"lines": ev.lines((sku, 3)), "reference": "receipt 000123"},
        event_id="pos-12-000123",
        source="pos/store-12",
        time="2026-11-22T10:15:00+03:00",
    )
    [sold] = api.post_events(client, till)
    assert sold["outcome"] == "accepted" and sold["position"] > reservation["position"]
    assert api.levels_tuple(api.level(client, store, sku)) == (2, 2, 0, 0)

    refused = api.reserve(client, store, "web-2", (sku, 1), order_id="order-2")
    problem = api.assert_problem(refused, 409, "insufficient-stock")
    assert problem["shortfall"] == [{"sku": sku, "requested": 1, "available": 0}]
    missing = client.get(f"/v1/stores/{store}/reservations/web-2")
    api.assert_problem(missing, 404)

    shipment = ev.envelope(
        "stock.shipment",
        store,
        {"lines": ev.lines((sku, 2)), "reservation_id": "web-1", "order_id": "order-1"},
        event_id="ship-1",
        source="wms/main",
        time="2026-11-22T11:00:00+03:00",
    )
    [shipped] = api.post_events(client, shipment)
    assert shipped["outcome"] == "accepted"
    assert api.levels_tuple(api.level(client, store, sku)) == (0, 0, 0, 0)
    after = client.get(f"/v1/stores/{store}/reservations/web-1")
    assert after.status_code == 200
    assert after.json()["status"] == "shipped"
    assert [(line["sku"], line["qty"], line["remaining"]) for line in after.json()["lines"]] == [(sku, 2, 0)]

    _assert_walkthrough_history(
        client,
        store,
        sku,
        [received["position"], reservation["position"], sold["position"], shipped["position"]],
    )


def _assert_walkthrough_history(client, store: str, sku: str, answered_positions: list[int]) -> None:
    """Every field of every history entry the walkthrough left (CONTRACT §3)."""
    received_position, reservation_position, sold_position, shipped_position = answered_positions
    response = client.get(f"/v1/stores/{store}/history")
    assert response.status_code == 200
    page = response.json()
    assert page["next"] is None
    entries = page["entries"]
    for entry in entries:
        assert set(entry) >= ENTRY_FIELDS
        assert entry["sku"] == sku
        assert entry["available"] == entry["on_hand"] - entry["reserved"]
        recorded = _instant(entry["recorded_at"])
        assert recorded.utcoffset() == timedelta(0)
        assert isinstance(entry["event_id"], str) and isinstance(entry["source"], str)
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert [e["recorded_at"] for e in entries] == sorted(e["recorded_at"] for e in entries)
    summary = [
        (
            e["type"],
            e["outcome"],
            e["reason"],
            e["on_hand_delta"],
            e["reserved_delta"],
            e["incoming_delta"],
            e["on_hand"],
            e["reserved"],
            e["available"],
            e["oversold"],
            e["unknown_reservation"],
        )
        for e in entries
    ]
    assert summary == [
        ("stock.receipt", "accepted", None, 5, 0, 0, 5, 0, 5, False, False),
        ("stock.reservation", "accepted", None, 0, 2, 0, 5, 2, 3, False, False),
        ("stock.pos_sale", "accepted", None, -3, 0, 0, 2, 2, 0, False, False),
        ("stock.reservation", "rejected", "insufficient_stock", 0, 0, 0, 2, 2, 0, False, False),
        ("stock.shipment", "accepted", None, -2, -2, 0, 0, 0, 0, False, False),
    ]
    grn, online, pos, refused_entry, ship = entries
    assert (grn["position"], grn["event_id"], grn["source"]) == (received_position, "grn-7", "wms/main")
    assert _instant(grn["time"]) == _instant("2026-11-22T09:00:00+03:00")
    assert grn["reference"] == "GRN 7"
    assert (online["position"], online["reservation_id"], online["order_id"]) == (
        reservation_position,
        "web-1",
        "order-1",
    )
    assert (pos["position"], pos["event_id"], pos["source"]) == (
        sold_position,
        "pos-12-000123",
        "pos/store-12",
    )
    assert _instant(pos["time"]) == _instant("2026-11-22T10:15:00+03:00")
    assert pos["reference"] == "receipt 000123"
    assert (refused_entry["reservation_id"], refused_entry["order_id"]) == ("web-2", "order-2")
    assert (ship["position"], ship["event_id"]) == (shipped_position, "ship-1")
    assert (ship["reservation_id"], ship["order_id"]) == ("web-1", "order-1")
    assert _instant(ship["time"]) == _instant("2026-11-22T11:00:00+03:00")
    # order_id, reservation_id and reference appear where the event gave them.
    assert not {"order_id", "reservation_id"} & set(grn) and not {"order_id", "reservation_id"} & set(pos)
    assert "reference" not in online and "reference" not in ship


def test_a_till_sale_of_a_reserved_unit_is_flagged_oversold(client):
    store, sku = unique("store"), "SKU-1"
    api.record(client, ev.receipt(store, (sku, 1)))
    assert api.reserve(client, store, "web-1", (sku, 1)).status_code == 201
    api.record(client, ev.pos_sale(store, (sku, 1)))
    assert api.levels_tuple(api.level(client, store, sku)) == (0, 1, -1, 0)
    [entry] = api.history(client, store, type="stock.pos_sale")
    assert entry["oversold"] is True and entry["available"] == -1
