"""GET /v1/stores/{store}/history: paging with `next`, every filter, and the limits."""

from __future__ import annotations

import pytest
from support import api
from support import events as ev
from support.ids import unique

PAGE = 4


@pytest.fixture
def shop(client) -> str:
    """A store with a varied history: 12 events, 17 entries (some events have several lines)."""
    store = unique("shop")
    api.record(client, ev.receipt(store, ("A", 20), ("B", 10), ("C", 5), reference="GRN-1"))
    api.record(client, ev.sale(store, ("A", 1), order_id="O-1"))
    api.record(client, ev.sale(store, ("B", 2), ("A", 1), order_id="O-2"))
    assert api.reserve(client, store, "R-1", ("A", 3), ("C", 1), order_id="O-3").status_code == 201
    api.record(client, ev.shipment(store, ("A", 2), reservation_id="R-1", order_id="O-3"))
    api.record(client, ev.pos_sale(store, ("C", 1)))
    assert api.post_events(client, ev.sale(store, ("B", 99), order_id="O-4"))[0]["outcome"] == "rejected"
    api.record(client, ev.stock_return(store, ("A", 1), order_id="O-1"))
    api.record(client, ev.adjustment(store, "damaged", ("B", -1)))
    api.record(client, ev.count(store, ("C", 10)))
    assert client.post(f"/v1/stores/{store}/reservations/R-1/release", json={}).status_code == 200
    api.record(client, ev.receipt(store, ("D", 1)))
    return store


def _ids(entries: list[dict]) -> list[tuple[int, str]]:
    return [(e["position"], e["sku"]) for e in entries]


def test_history_pages_follow_next_to_the_end_in_order(client, shop):
    everything = client.get(f"/v1/stores/{shop}/history", params={"limit": 1000}).json()
    assert everything["next"] is None
    entries = everything["entries"]
    assert len(entries) == 17
    # Oldest first; the lines of one event share its position and keep their order.
    assert [(e["position"], e["sku"]) for e in entries[:3]] == [(entries[0]["position"], s) for s in "ABC"]
    assert _ids(entries) == sorted(_ids(entries), key=lambda pair: pair[0])
    paged: list[dict] = []
    params: dict = {"limit": PAGE}
    for _ in range(100):
        response = client.get(f"/v1/stores/{shop}/history", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["entries"]) <= PAGE
        paged += page["entries"]
        if page["next"] is None:
            break
        assert len(page["entries"]) == PAGE
        assert isinstance(page["next"], str)
        params["after"] = page["next"]
    assert paged == entries
    # A page boundary may fall between the lines of one event.
    three = client.get(f"/v1/stores/{shop}/history", params={"limit": 2}).json()
    rest = client.get(f"/v1/stores/{shop}/history", params={"limit": 1000, "after": three["next"]}).json()
    assert three["entries"] + rest["entries"] == entries
    # The default page is 100 entries; this store has fewer.
    assert client.get(f"/v1/stores/{shop}/history").json() == everything


def test_history_filters_by_sku_type_order_and_reservation(client, shop):
    entries = api.history(client, shop)
    for name, value in (("sku", "A"), ("type", "stock.sale"), ("order_id", "O-1"), ("reservation_id", "R-1")):
        filtered = api.history(client, shop, **{name: value})
        assert filtered == [e for e in entries if e.get(name) == value], name
        assert filtered
    assert [e["sku"] for e in api.history(client, shop, order_id="O-2")] == ["B", "A"]
    assert {e["type"] for e in api.history(client, shop, reservation_id="R-1")} == {
        "stock.reservation",
        "stock.shipment",
        "stock.reservation_release",
    }
    combined = api.history(client, shop, sku="A", type="stock.sale")
    assert [e["order_id"] for e in combined] == ["O-1", "O-2"]
    assert api.history(client, shop, sku="NONE") == []
    assert api.history(client, unique("empty-store")) == []


def test_history_filters_by_recorded_time_and_position(client, shop):
    entries = api.history(client, shop)
    middle = entries[len(entries) // 2]
    since = api.history(client, shop, **{"from": middle["recorded_at"]})
    assert since == [e for e in entries if e["recorded_at"] >= middle["recorded_at"]]
    until = api.history(client, shop, to=middle["recorded_at"])
    assert until == [e for e in entries if e["recorded_at"] <= middle["recorded_at"]]
    assert since and until and since[0] == middle and until[-1]["recorded_at"] == middle["recorded_at"]
    window = api.history(
        client, shop, **{"from": entries[0]["recorded_at"], "to": entries[-1]["recorded_at"]}
    )
    assert window == entries
    assert api.history(client, shop, **{"from": "2999-01-01T00:00:00+00:00"}) == []
    after = api.history(client, shop, after=str(middle["position"]))
    assert after == [e for e in entries if e["position"] > middle["position"]]


def test_history_refuses_bad_parameters(client, shop):
    too_many = client.get(f"/v1/stores/{shop}/history", params={"limit": 1001})
    problem = api.assert_problem(too_many, 422, "invalid-request")
    assert "limit" in problem["detail"]
    for params in (
        {"limit": 0},
        {"limit": "many"},
        {"from": "last week"},
        {"to": "2026-11-22"},
        {"after": "not a cursor!"},
    ):
        api.assert_problem(client.get(f"/v1/stores/{shop}/history", params=params), 422)
    api.assert_problem(client.get("/v1/stores/bad store/history"), 422)
    assert client.get(f"/v1/stores/{shop}/history", params={"limit": 1000}).status_code == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sku", "a/b"),
        ("sku", ""),
        ("sku", "x" * 65),
        ("sku", "SKU\x00"),
        ("reservation_id", "R 1"),
        ("reservation_id", ""),
        ("order_id", ""),
        ("order_id", "O" * 257),
        ("order_id", "O-1\x00"),
    ],
)
def test_a_history_filter_no_entry_can_match_is_named(client, shop, name, value):
    """`sku=a/b` answered an empty page: the caller's slip looked like a SKU without history."""
    refused = client.get(f"/v1/stores/{shop}/history", params={name: value})
    problem = api.assert_problem(refused, 422)
    assert [error["field"] for error in problem["errors"]] == [name], problem


def test_the_default_policys_changes_are_found_by_sku_star(client, shop):
    policy = {"safety_stock": 1}
    assert client.put(f"/v1/stores/{shop}/policies/*", json=policy).status_code == 200
    found = client.get(f"/v1/stores/{shop}/history", params={"sku": "*"})
    assert found.status_code == 200, found.text
    assert [entry["type"] for entry in found.json()["entries"]] == ["stock.policy_changed"]


def test_history_finds_the_oversold_entries_and_the_others(client):
    """`?oversold=true` was ignored and answered every entry: the oversells could not be listed."""
    store = unique("shop")
    api.record(client, ev.receipt(store, ("A", 1), ("B", 1)))
    api.record(client, ev.pos_sale(store, ("A", 3), ("B", 1)))
    refused = api.post_events(client, ev.sale(store, ("A", 1), order_id="O-9"))  # nothing available
    assert refused[0]["outcome"] == "rejected"
    oversold = client.get(f"/v1/stores/{store}/history", params={"oversold": "true"}).json()["entries"]
    assert [(e["type"], e["sku"], e["oversold"]) for e in oversold] == [("stock.pos_sale", "A", True)]
    others = client.get(f"/v1/stores/{store}/history", params={"oversold": "false"}).json()["entries"]
    assert len(others) == 4 and not any(e["oversold"] for e in others)
    api.assert_problem(client.get(f"/v1/stores/{store}/history", params={"oversold": "maybe"}), 422)
