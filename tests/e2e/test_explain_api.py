"""GET /v1/stores/{store}/stock/{sku}/explain over HTTP (CONTRACT §8): the README's example, a count,
transfers both ways, a SKU never seen, and the refusals a stock read makes."""

from __future__ import annotations

from support import api
from support import events as ev
from support.ids import unique

FIGURES = ("on_hand", "reserved", "available", "incoming")


def explain(client, store: str, sku: str) -> dict:
    response = client.get(f"/v1/stores/{store}/stock/{sku}/explain")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict = response.json()
    return body


def assert_adds_up(body: dict) -> None:
    count = body["on_hand_from"]["count"]
    since = body["on_hand_from"]["since"]
    assert body["on_hand"] == (count["qty"] if count else 0) + sum(group["units"] for group in since)
    assert body["reserved"] == sum(hold["remaining"] for hold in body["reserved_by"])
    assert body["incoming"] == sum(transfer["remaining"] for transfer in body["incoming_from"])
    assert body["available"] == body["on_hand"] - body["reserved"]
    for channel, shown in body["channels"].items():
        held = sum(hold["remaining"] for hold in body["reserved_by"] if hold["channel"] == channel)
        assert shown["reserved"] == held


def test_the_readme_example_explains_what_is_left_after_the_till_sale(client):
    store, sku = unique("store"), "SKU-1"
    api.record(client, ev.receipt(store, (sku, 5), reference="delivery 77"))
    assert api.reserve(client, store, "order-1001", (sku, 2), order_id="1001").status_code == 201
    [sold] = api.record(client, ev.pos_sale(store, (sku, 3)))

    body = explain(client, store, sku)
    assert body == {
        "store_id": store,
        "sku": sku,
        "position": body["position"],
        "on_hand": 2,
        "reserved": 2,
        "available": 0,
        "incoming": 0,
        "safety_stock": 0,
        "sellable": 0,
        "channels": {},
        "on_hand_from": {
            "count": None,
            "since": [
                {"type": "stock.pos_sale", "units": -3, "entries": 1},
                {"type": "stock.receipt", "units": 5, "entries": 1},
            ],
        },
        "reserved_by": [
            {
                "reservation_id": "order-1001",
                "order_id": "1001",
                "channel": None,
                "remaining": 2,
                "expires_at": None,
            }
        ],
        "incoming_from": [],
    }
    assert body["position"] >= sold["position"]
    level = api.level(client, store, sku)
    assert {k: body[k] for k in FIGURES} == {k: level[k] for k in FIGURES}


def test_a_count_resets_what_on_hand_is_made_of_and_transfers_show_until_received(client):
    shop, warehouse, sku = unique("shop"), unique("wh"), "SKU-1"
    api.record(client, ev.receipt(shop, (sku, 7)), ev.pos_sale(shop, (sku, 1)))
    [counted] = api.record(client, ev.count(shop, (sku, 4), reference="inventory 3"))
    api.record(
        client,
        ev.adjustment(shop, "damage", (sku, -1)),
        ev.stock_return(shop, (sku, 2)),
        ev.receipt(warehouse, (sku, 20)),
        ev.transfer(warehouse, shop, "T-1", (sku, 6)),
        ev.transfer(warehouse, shop, "T-2", (sku, 3)),
        ev.transfer(shop, warehouse, "T-3", (sku, 1)),
    )
    api.record(
        client, ev.receipt(shop, (sku, 6), transfer_id="T-1"), ev.receipt(shop, (sku, 1), transfer_id="T-2")
    )

    body = explain(client, shop, sku)
    assert body["on_hand_from"]["count"] == {
        "position": counted["position"],
        "time": body["on_hand_from"]["count"]["time"],
        "recorded_at": body["on_hand_from"]["count"]["recorded_at"],
        "qty": 4,
    }
    assert body["on_hand_from"]["since"] == [
        {"type": "stock.adjustment", "units": -1, "entries": 1},
        {"type": "stock.receipt", "units": 7, "entries": 2},
        {"type": "stock.return", "units": 2, "entries": 1},
        {"type": "stock.transfer", "units": -1, "entries": 1},
    ]
    # T-1 is received in full, so only T-2 is still on its way.
    assert body["incoming_from"] == [{"transfer_id": "T-2", "from_store": warehouse, "remaining": 2}]
    assert (body["on_hand"], body["incoming"]) == (11, 2)
    assert_adds_up(body)
    level = api.level(client, shop, sku)
    assert {k: body[k] for k in FIGURES} == {k: level[k] for k in FIGURES}

    sent = explain(client, warehouse, sku)
    assert sent["incoming_from"] == [{"transfer_id": "T-3", "from_store": shop, "remaining": 1}]
    assert sent["on_hand_from"]["since"] == [
        {"type": "stock.receipt", "units": 20, "entries": 1},
        {"type": "stock.transfer", "units": -9, "entries": 2},
    ]
    assert_adds_up(sent)


def test_a_sku_never_seen_is_explained_as_zeros_with_nothing_behind_them(client):
    store = unique("store")
    body = explain(client, store, "NEVER-SEEN")
    assert body == {
        "store_id": store,
        "sku": "NEVER-SEEN",
        "position": body["position"],
        "on_hand": 0,
        "reserved": 0,
        "available": 0,
        "incoming": 0,
        "safety_stock": 0,
        "sellable": 0,
        "channels": {},
        "on_hand_from": {"count": None, "since": []},
        "reserved_by": [],
        "incoming_from": [],
    }
    assert body["position"] >= 0


def test_a_malformed_store_or_sku_is_refused_like_a_stock_read(client):
    for path in (
        "/v1/stores/s/stock/" + "x" * 65,
        "/v1/stores/" + "x" * 65 + "/stock/A",
        "/v1/stores/s/stock/a*b",
    ):
        stock = api.assert_problem(client.get(path), 422, "invalid-request")
        explained = api.assert_problem(client.get(path + "/explain"), 422, "invalid-request")
        assert explained["errors"] == stock["errors"]
    api.assert_problem(client.get("/v1/stores/s/stock/A/explain/more"), 404)
    api.assert_problem(client.post("/v1/stores/s/stock/A/explain", json={}), 405)


def test_a_policy_and_a_channel_show_in_the_explanation_as_in_the_stock_answer(client):
    """CONTRACT §6 and §8: safety stock and sellable are the policy's, and each reservation that holds
    stock names its channel."""
    store, sku = unique("store"), "SKU-P"
    api.record(client, ev.receipt(store, (sku, 10)))
    api.put_policy(client, store, "*", {"safety_stock": 2, "channels": {"online": {"quota_pct": 50}}})
    assert api.reserve(client, store, "web-1", (sku, 3), channel="online").status_code == 201
    assert api.reserve(client, store, "till-1", (sku, 1)).status_code == 201

    body = explain(client, store, sku)
    stock = client.get(f"/v1/stores/{store}/stock/{sku}").json()
    assert_adds_up(body)
    assert (body["safety_stock"], body["sellable"]) == (2, 4)
    assert body["channels"] == {"online": {"quota": 5, "reserved": 3, "sellable": 2}}
    policy_figures = ("safety_stock", "sellable", "channels")
    assert {k: body[k] for k in policy_figures} == {k: stock[k] for k in policy_figures}
    assert [(hold["reservation_id"], hold["channel"]) for hold in body["reserved_by"]] == [
        ("web-1", "online"),
        ("till-1", None),
    ]
