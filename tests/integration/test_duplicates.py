"""An event or a reservation sent again, to the same or another instance, changes nothing twice."""

from __future__ import annotations

from support import api, db
from support import events as ev
from support.ids import unique


def test_the_same_event_sent_again_to_either_instance_is_a_duplicate_of_the_first(database_url, serve):
    a, b = serve(database_url), serve(database_url)
    store = unique("store")
    first = ev.receipt(store, ("SKU-1", 5), event_id="grn-1", reference="GRN 1")
    with a.client() as client_a, b.client() as client_b:
        [accepted] = api.post_events(client_a, first)
        assert accepted["outcome"] == "accepted"
        assert (accepted["id"], accepted["source"]) == ("grn-1", ev.SOURCE)
        original = {"outcome": "accepted", "reason": None, "position": accepted["position"]}
        for client in (client_a, client_b, client_b):
            [again] = api.post_events(client, first)
            assert again["outcome"] == "duplicate", again
            assert again["original"] == original
            assert (again["id"], again["source"]) == ("grn-1", ev.SOURCE)
        # The pair (source, id) decides, whatever the body says now.
        changed = ev.receipt(store, ("SKU-1", 500), event_id="grn-1")
        [again] = api.post_events(client_b, changed)
        assert again["outcome"] == "duplicate" and again["original"] == original
        # The same id from another source is another event.
        other_source = {**first, "source": "tests/another-producer"}
        [other] = api.post_events(client_b, other_source)
        assert other["outcome"] == "accepted"

        [rejected] = api.post_events(
            client_a, ev.sale(store, ("SKU-1", 100), event_id="order-9", order_id="o-9")
        )
        assert rejected["outcome"] == "rejected" and rejected["reason"] == "insufficient_stock"
        assert rejected["shortfall"] == [{"sku": "SKU-1", "requested": 100, "available": 10}]
        [again] = api.post_events(client_b, ev.sale(store, ("SKU-1", 1), event_id="order-9"))
        assert again["outcome"] == "duplicate"
        assert again["original"] == {
            "outcome": "rejected",
            "reason": "insufficient_stock",
            "position": rejected["position"],
        }

        # Twice in one batch: the second is a duplicate of the first.
        twice = ev.receipt(store, ("SKU-2", 3), event_id="grn-2")
        results = api.post_events(client_b, twice, twice)
        assert [r["outcome"] for r in results] == ["accepted", "duplicate"]
        assert results[1]["original"] == {
            "outcome": "accepted",
            "reason": None,
            "position": results[0]["position"],
        }

    assert (
        db.scalar(database_url, "SELECT COUNT(*) AS n FROM ledger_event_keys WHERE event_id = 'grn-1'") == 2
    )
    levels = db.level_rows(database_url, store)
    assert (levels["SKU-1"]["on_hand"], levels["SKU-2"]["on_hand"]) == (10, 3)
    history = db.history_rows(database_url, store)
    assert [(row["event_id"], row["outcome"]) for row in history] == [
        ("grn-1", "accepted"),
        ("grn-1", "accepted"),
        ("order-9", "rejected"),
        ("grn-2", "accepted"),
    ]
    assert db.event_count(database_url) == 4


def test_the_same_reservation_again_answers_the_reservation_and_other_lines_conflict(database_url, serve):
    a, b = serve(database_url), serve(database_url)
    store = unique("store")
    with a.client() as client_a, b.client() as client_b:
        api.record(client_a, ev.receipt(store, ("SKU-1", 5), ("SKU-2", 5)))
        lines = (("SKU-1", 2), ("SKU-2", 1))
        placed = api.reserve(client_a, store, "web-1", *lines, order_id="o-1")
        assert placed.status_code == 201, placed.text
        body = placed.json()
        assert body["status"] == "active" and body["order_id"] == "o-1"
        for client in (client_a, client_b):
            again = api.reserve(client, store, "web-1", *lines, order_id="o-1")
            assert again.status_code == 200, again.text
            same = again.json()
            for key in ("reservation_id", "order_id", "status", "lines", "expires_at"):
                assert same[key] == body[key], key
        for other_lines in (
            (("SKU-1", 3), ("SKU-2", 1)),
            (("SKU-1", 2),),
            (("SKU-1", 2), ("SKU-2", 1), ("SKU-3", 1)),
        ):
            conflict = api.reserve(client_b, store, "web-1", *other_lines)
            problem = api.assert_problem(conflict, 409, "reservation-conflict")
            assert "web-1" in problem["detail"]
        # The same reservation as an event from a producer is a duplicate too.
        [again] = api.post_events(client_b, ev.reservation(store, "web-1", *lines, order_id="o-1"))
        assert again["outcome"] == "duplicate", again
        [conflict] = api.post_events(client_b, ev.reservation(store, "web-1", ("SKU-1", 1)))
        assert (conflict["outcome"], conflict["reason"]) == ("rejected", "reservation_conflict")

    levels = db.level_rows(database_url, store)
    assert {sku: (row["on_hand"], row["reserved"]) for sku, row in levels.items()} == {
        "SKU-1": (5, 2),
        "SKU-2": (5, 1),
    }
    accepted = db.query(
        database_url,
        "SELECT COUNT(DISTINCT position) AS n FROM ledger_history "
        "WHERE store_id = %s AND type = 'stock.reservation' AND outcome = 'accepted'",
        (store,),
    )
    assert accepted[0]["n"] == 1
