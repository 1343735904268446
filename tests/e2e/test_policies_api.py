"""Availability policies over HTTP (CONTRACT §6): PUT, GET and clear a policy, the refusals (422,
403), the figures every stock answer carries, and channels on reservations, sales and the history,
against a `ledger serve` with access control on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from support import api
from support import events as ev
from support.access import bearer, new_token, wait_until_taken
from support.ids import unique
from support.server import LedgerServer

ONLINE_30 = {"safety_stock": 2, "channels": {"online": {"quota_pct": 30}}}


@dataclass
class Served:
    server: LedgerServer
    database_url: str
    operator: httpx.Client  # the token named "ops"

    def client(self, role: str, name: str, **scopes: Any) -> httpx.Client:
        token = new_token(self.database_url, name, role, **scopes)
        wait_until_taken(self.server.url, token)
        client = self.server.client()
        client.headers.update(bearer(token))
        return client

    def head(self) -> int:
        return int(self.operator.get("/readyz").json()["position"])


@pytest.fixture(scope="module")
def served(module_serve, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('policies') / 'ledger.db'}"
    token = new_token(database_url, "ops", "operator")
    server = module_serve(database_url)
    with server.client() as operator:
        operator.headers.update(bearer(token))
        yield Served(server, database_url, operator)


def _policy(client: httpx.Client, store: str, sku: str) -> dict[str, Any]:
    response = client.get(f"/v1/stores/{store}/policies/{sku}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _figures(level: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    return level["safety_stock"], level["sellable"], level["channels"]


def test_a_policy_is_set_read_inherited_and_cleared(served: Served) -> None:
    store, ops = unique("store"), served.operator
    assert _policy(ops, store, "A") == {
        "store_id": store,
        "sku": "A",
        "safety_stock": 0,
        "channels": {},
        "inherited": False,
    }
    set_default = api.put_policy(ops, store, "*", ONLINE_30)
    assert set_default["position"] > 0 and set_default["inherited"] is False
    assert _policy(ops, store, "A") | {"sku": "A"} == {
        "store_id": store,
        "sku": "A",
        **ONLINE_30,
        "inherited": True,
    }
    own = {"safety_stock": 1, "channels": {"marketplace": {"quota_units": 5}}}
    api.put_policy(ops, store, "A", own)
    assert _policy(ops, store, "A") == {"store_id": store, "sku": "A", **own, "inherited": False}
    assert _policy(ops, store, "B")["inherited"] is True

    cleared = api.put_policy(ops, store, "A", {})
    assert cleared["inherited"] is True and cleared["safety_stock"] == 2  # the default again
    api.put_policy(ops, store, "*", {})
    assert _policy(ops, store, "A") == {
        "store_id": store,
        "sku": "A",
        "safety_stock": 0,
        "channels": {},
        "inherited": False,
    }

    # Every change is in the store's history, with its position and principal, zero deltas.
    changes = api.history(ops, store, type="stock.policy_changed")
    assert [(e["sku"], e["policy"]) for e in changes] == [
        ("*", ONLINE_30),
        ("A", own),
        ("A", None),
        ("*", None),
    ]
    assert changes[0]["position"] == set_default["position"]
    for change in changes:
        assert change["principal"] == "ops" and change["outcome"] == "accepted"
        assert (change["on_hand_delta"], change["reserved_delta"], change["incoming_delta"]) == (0, 0, 0)


def test_clearing_what_was_never_set_or_setting_the_same_again_records_nothing(served: Served) -> None:
    store, ops = unique("store"), served.operator
    head = served.head()
    assert "position" not in api.put_policy(ops, store, "A", {})
    assert served.head() == head
    api.put_policy(ops, store, "A", ONLINE_30)
    head = served.head()
    assert "position" not in api.put_policy(ops, store, "A", ONLINE_30)
    assert served.head() == head
    assert len(api.history(ops, store)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"safety_stock": -1}, "safety_stock"),
        ({"safety_stock": "2"}, "safety_stock"),
        ({"safety_stock": 1.5}, "safety_stock"),
        ({"safety_stock": True}, "safety_stock"),
        ({"channels": {"online": {"quota_pct": 101}}}, "channels.online.quota_pct"),
        ({"channels": {"online": {"quota_pct": -1}}}, "channels.online.quota_pct"),
        ({"channels": {"online": {"quota_units": -1}}}, "channels.online.quota_units"),
        ({"channels": {"online": {"quota_pct": 10, "quota_units": 3}}}, "channels.online"),
        ({"channels": {"online": {}}}, "channels.online"),
        ({"channels": {"on line": {"quota_pct": 10}}}, "channels.on line"),
        ({"channels": ["online"]}, "channels"),
        ({"safety_stock": 1, "quota": 3}, "quota"),
        ([{"safety_stock": 1}], ""),
    ],
)
def test_an_invalid_policy_answers_422_naming_the_field_and_records_nothing(
    served: Served, body: object, field: str
) -> None:
    store = unique("store")
    head = served.head()
    response = served.operator.put(f"/v1/stores/{store}/policies/A", json=body)
    problem = api.assert_problem(response, 422, "invalid-request")
    assert field in [error["field"] for error in problem["errors"]], problem
    assert served.head() == head


def test_a_producer_may_not_change_a_policy_nor_an_operator_at_another_store(served: Served) -> None:
    store, other = unique("store"), unique("store")
    head = served.head()
    with served.client("producer", unique("producer")) as producer:
        refused = producer.put(f"/v1/stores/{store}/policies/A", json=ONLINE_30)
        assert api.assert_problem(refused, 403, "forbidden")["role"] == "operator"
        assert _policy(producer, store, "A")["safety_stock"] == 0  # a reader may look
    with served.client("operator", unique("scoped"), stores=(store,)) as scoped:
        refused = scoped.put(f"/v1/stores/{other}/policies/A", json=ONLINE_30)
        assert api.assert_problem(refused, 403, "forbidden")["store"] == other
        assert "position" in api.put_policy(scoped, store, "A", ONLINE_30)
    assert served.head() == head + 1


def test_an_online_quota_refuses_online_reservations_past_it_while_the_till_sells_on(served: Served) -> None:
    """The README's walkthrough: 100 on hand, a 30% online quota and a safety stock of 2."""
    store, ops = unique("store"), served.operator
    api.record(ops, ev.receipt(store, ("SKU-1", 100)))
    api.put_policy(ops, store, "SKU-1", ONLINE_30)
    for number in range(30):
        placed = api.reserve(ops, store, f"web-{number}", ("SKU-1", 1), channel="online")
        assert placed.status_code == 201, placed.text
    assert placed.json()["channel"] == "online"
    refused = api.reserve(ops, store, "web-30", ("SKU-1", 1), channel="online")
    shortfall = api.assert_problem(refused, 409, "insufficient-stock")["shortfall"]
    assert shortfall == [{"sku": "SKU-1", "requested": 1, "available": 0}]
    level = api.level(ops, store, "SKU-1")
    assert (level["on_hand"], level["reserved"], level["available"]) == (100, 30, 70)
    assert _figures(level) == (2, 68, {"online": {"quota": 30, "reserved": 30, "sellable": 0}})

    # The till is never refused; the quota shrinks with on_hand, and online stays refused.
    api.record(ops, ev.pos_sale(store, ("SKU-1", 60)))
    level = api.level(ops, store, "SKU-1")
    assert _figures(level) == (2, 8, {"online": {"quota": 12, "reserved": 30, "sellable": -18}})
    # A sale under the channel is limited like a reservation; without a channel, by sellable only.
    [sale] = api.post_events(ops, ev.sale(store, ("SKU-1", 1), channel="online"))
    assert (sale["outcome"], sale["shortfall"]) == (
        "rejected",
        [{"sku": "SKU-1", "requested": 1, "available": -18}],
    )
    [sale] = api.post_events(ops, ev.sale(store, ("SKU-1", 9)))
    assert sale["shortfall"] == [{"sku": "SKU-1", "requested": 9, "available": 8}]
    api.record(ops, ev.sale(store, ("SKU-1", 8)))

    # Shipping and releasing online reservations gives the channel its units back, exactly.
    api.record(ops, ev.shipment(store, ("SKU-1", 1), reservation_id="web-0"))
    released = ops.post(f"/v1/stores/{store}/reservations/web-1/release", json={})
    assert released.status_code == 200 and released.json()["channel"] == "online"
    level = api.level(ops, store, "SKU-1")
    assert level["channels"]["online"]["reserved"] == 28
    assert ops.get(f"/v1/stores/{store}/reservations/web-2").json()["channel"] == "online"
    placed_entries = api.history(ops, store, reservation_id="web-2")
    assert [(e["type"], e.get("channel")) for e in placed_entries] == [("stock.reservation", "online")]


def test_every_stock_answer_carries_the_figures_now_and_as_they_were(served: Served) -> None:
    store, other, ops = unique("store"), unique("store"), served.operator
    sku = unique("SKU")
    [before] = api.record(ops, ev.receipt(store, (sku, 10)), ev.receipt(other, (sku, 20)))[-1:]
    api.put_policy(ops, store, "*", {"safety_stock": 3, "channels": {"online": {"quota_units": 4}}})
    api.put_policy(ops, other, sku, {"safety_stock": 1, "channels": {"online": {"quota_pct": 50}}})
    assert api.reserve(ops, store, "R-1", (sku, 1), channel="online").status_code == 201
    [last] = api.record(ops, ev.receipt(other, (sku, 1)))

    level = api.level(ops, store, sku)
    assert _figures(level) == (3, 6, {"online": {"quota": 4, "reserved": 1, "sellable": 3}})
    many = ops.get(f"/v1/stores/{store}/stock", params={"sku": [sku, "never-seen"]}).json()["items"]
    assert [_figures(item) for item in many] == [
        _figures(level),
        (3, -3, {"online": {"quota": 4, "reserved": 0, "sellable": -3}}),
    ]

    across = ops.get(f"/v1/stock/{sku}").json()
    assert {s["store_id"]: _figures(s) for s in across["stores"]} == {
        store: _figures(level),
        other: (1, 20, {"online": {"quota": 10, "reserved": 0, "sellable": 10}}),
    }
    total = across["total"]
    assert _figures(total) == (4, 26, {"online": {"quota": 14, "reserved": 1, "sellable": 13}})

    # As it was: at the receipts' position no policy existed yet; at the last, everything above.
    then = api.level(ops, store, sku, position=before["position"])
    assert _figures(then) == (0, 10, {})
    assert _figures(api.level(ops, store, sku, position=last["position"])) == _figures(level)
    now_as_of = ops.get(f"/v1/stores/{store}/stock/{sku}", params={"as_of": ev.now_rfc3339(5)}).json()
    assert _figures(now_as_of) == _figures(level)


def test_a_channel_on_an_event_of_any_type_is_kept_in_the_history(served: Served) -> None:
    store, ops = unique("store"), served.operator
    api.record(ops, ev.receipt(store, ("A", 5), channel="marketplace"))
    api.record(ops, ev.sale(store, ("A", 1), channel="online"))
    assert [e.get("channel") for e in api.history(ops, store)] == ["marketplace", "online"]
    refused = ops.post("/v1/events", json=ev.sale(store, ("A", 1), channel="not a channel"))
    assert [error["field"] for error in api.assert_problem(refused, 422)["errors"]] == ["data.channel"]
