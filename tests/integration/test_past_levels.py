"""Levels as they were at a past position or time, and one SKU's totals across stores."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support import api, db
from support import events as ev
from support.ids import unique

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.sql import SqlTx


def _levels(body: dict) -> tuple[int, int, int, int]:
    return api.levels_tuple(body)


def test_levels_at_a_past_position_or_time_are_the_levels_as_they_were_then(database_url, serve):
    server = serve(database_url)
    store, other = unique("shop"), unique("wh")
    steps = [
        ev.receipt(store, ("A", 10), ("B", 4)),
        ev.sale(store, ("A", 3), order_id="O-1"),
        ev.sale(store, ("B", 40)),  # rejected: changes nothing
        ev.reservation(store, "R-1", ("A", 2)),
        ev.receipt(other, ("A", 1000)),  # another store
        ev.transfer(other, store, "T-1", ("A", 50)),
        ev.pos_sale(store, ("B", 6)),  # oversold
        ev.count(store, ("A", 1)),
        ev.shipment(store, ("A", 1), reservation_id="R-1"),
    ]
    timeline: list[tuple[int, dict[str, tuple[int, int, int, int]]]] = []
    with server.client() as client:
        for step in steps:
            [result] = api.post_events(client, step)
            now = {sku: api.level(client, store, sku, min_position=result["position"]) for sku in "AB"}
            # The position a stock answer gives says which events it includes: this one, the
            # last recorded (a transfer's incoming half included: it shares the transfer's).
            assert now["A"]["position"] == now["B"]["position"] == result["position"]
            timeline.append((now["A"]["position"], {sku: _levels(body) for sku, body in now.items()}))
        history = {(e["position"], e["sku"]): e for e in api.history(client, store)}
        assert timeline[-1][1] == {"A": (0, 1, -1, 50), "B": (-2, 0, -2, 0)}

        for position, then in timeline:
            for sku in "AB":
                past = api.level(client, store, sku, position=position)
                assert _levels(past) == then[sku], (position, sku)
                assert past["position"] == position
            response = client.get(
                f"/v1/stores/{store}/stock", params={"sku": ["A", "B"], "position": position}
            )
            assert response.status_code == 200, response.text
            assert {i["sku"]: _levels(i) for i in response.json()["items"]} == then

        for position, then in timeline:
            recorded = [e["recorded_at"] for (p, _), e in history.items() if p == position]
            if not recorded:
                continue  # an event at the other store
            moment = datetime.fromisoformat(recorded[0].replace("Z", "+00:00"))
            # The same instant written with another offset gives the same answer.
            as_of = moment.astimezone(timezone(timedelta(hours=3))).isoformat()
            for sku in "AB":
                assert _levels(api.level(client, store, sku, as_of=as_of)) == then[sku], (as_of, sku)

        before = api.level(client, store, "A", as_of="2000-01-01T00:00:00+00:00")
        assert _levels(before) == (0, 0, 0, 0)
        assert _levels(api.level(client, store, "A", position=0)) == (0, 0, 0, 0)
        both = client.get(
            f"/v1/stores/{store}/stock/A", params={"position": 1, "as_of": "2000-01-01T00:00:00Z"}
        )
        api.assert_problem(both, 422)
        bad_time = client.get(f"/v1/stores/{store}/stock/A", params={"as_of": "yesterday"})
        api.assert_problem(bad_time, 422)


def test_a_skus_total_across_stores_is_the_sum_of_its_store_levels(database_url, serve):
    server = serve(database_url)
    sku = unique("SKU")
    stores = sorted(unique(f"store{i}") for i in range(3))
    with server.client() as client:
        api.record(client, ev.receipt(stores[0], (sku, 30)))
        api.record(client, ev.receipt(stores[1], (sku, 7)))
        api.record(client, ev.transfer(stores[0], stores[2], "T-1", (sku, 10)))
        api.record(client, ev.reservation(stores[1], "R-1", (sku, 5)))
        api.record(client, ev.pos_sale(stores[1], (sku, 4)))
        [last] = api.record(client, ev.receipt(stores[2], (sku, 6), transfer_id="T-1"))

        response = client.get(f"/v1/stock/{sku}")
        assert response.status_code == 200, response.text
        body = response.json()
        per_store = {s: api.level(client, s, sku, min_position=last["position"]) for s in stores}

    assert body["sku"] == sku
    assert [s["store_id"] for s in body["stores"]] == stores
    for row in body["stores"]:
        assert _levels(row) == _levels(per_store[row["store_id"]]), row["store_id"]
    expected = {
        key: sum(per_store[s][key] for s in stores)
        for key in ("on_hand", "reserved", "available", "incoming")
    }
    expected |= {"safety_stock": 0, "sellable": expected["available"], "channels": {}}  # no policy
    assert body["total"] == expected
    assert body["total"] == {
        "on_hand": 29,
        "reserved": 5,
        "available": 24,
        "incoming": 4,
        "safety_stock": 0,
        "sellable": 24,
        "channels": {},
    }
    recorded = db.query(database_url, "SELECT * FROM ledger_totals WHERE sku = %s", (sku,))
    assert [(r["on_hand"], r["reserved"], r["incoming"]) for r in recorded] == [(29, 5, 4)]

    with server.client() as client:
        never = client.get("/v1/stock/NEVER-SEEN")
        assert never.status_code == 200
        assert never.json()["total"] == {
            "on_hand": 0,
            "reserved": 0,
            "available": 0,
            "incoming": 0,
            "safety_stock": 0,
            "sellable": 0,
            "channels": {},
        }
        assert never.json()["stores"] == []


def _in_process(database_url: str) -> Any:
    settings = Settings(database_url=database_url)
    ledger = build_ledger(settings)
    ledger.start()
    return ledger


def _landing_between_statements(
    ledger: Any, store: str, sku: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[int]]:
    """Once armed (the function returned arms it), a receipt of one unit is committed (by another
    connection: the writer's) just before this thread's second statement: between the reads of
    one answer. The function returned gives the receipt's position once it landed."""
    landed: list[int] = []
    sent: list[int] = []
    within: list[bool] = []  # a deferred read that runs as fetchall (SQLite) is one statement
    thread = threading.get_ident()

    def landing(send: Callable[..., Any]) -> Callable[..., Any]:
        def sent_after_a_receipt(tx: SqlTx, *args: Any, **kwargs: Any) -> Any:
            if sent and not landed and not within and threading.get_ident() == thread:
                sent[0] += 1
                if sent[0] == 3:  # armed at 1: this is the second statement
                    receipt = ev.stock_event(unique("r"), "stock.receipt", store, [(sku, 1)])
                    [result] = ledger.submit_and_wait([receipt])
                    landed.append(result.position)
            within.append(True)
            try:
                return send(tx, *args, **kwargs)
            finally:
                within.pop()

        return sent_after_a_receipt

    monkeypatch.setattr(SqlTx, "fetchall", landing(SqlTx.fetchall))
    monkeypatch.setattr(SqlTx, "defer", landing(SqlTx.defer))

    def armed() -> list[int]:
        if not sent:
            sent.append(1)
        return landed

    return armed


def test_a_write_between_the_reads_of_a_levels_answer_is_in_it_only_with_its_position(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The levels of a store not in memory are read from the database (its head, the levels, the
    policies): a receipt committed between those reads was in the levels of an answer whose
    position said it was not (PostgreSQL read each statement at its own moment)."""
    ledger = _in_process(database_url)
    store, sku = unique("shop"), unique("SKU")
    try:
        [first] = ledger.submit_and_wait([ev.stock_event(unique("r"), "stock.receipt", store, [(sku, 10)])])
        ledger.cache.clear(ledger.cache.head)  # the store's levels and policies are read, not remembered
        arm = _landing_between_statements(ledger, store, sku, monkeypatch)
        arm()
        [view] = ledger.levels(store, [sku])
        [landed] = arm()
    finally:
        ledger.stop()
    assert landed > first.position
    # Either the receipt is in the answer, and so is its position, or neither is.
    assert (view.level.on_hand_units, view.position >= landed) in {(10, False), (11, True)}, view


def test_a_write_between_the_reads_of_a_skus_totals_is_in_them_only_with_its_position(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the levels: GET /v1/stock/{sku} read the head, then every store's level of the SKU."""
    ledger = _in_process(database_url)
    store, sku = unique("shop"), unique("SKU")
    try:
        [first] = ledger.submit_and_wait([ev.stock_event(unique("r"), "stock.receipt", store, [(sku, 10)])])
        arm = _landing_between_statements(ledger, store, sku, monkeypatch)
        arm()
        total, position, _ = ledger.sku_totals(sku)
        [landed] = arm()
    finally:
        ledger.stop()
    assert landed > first.position
    assert (total.on_hand_units, position >= landed) in {(10, False), (11, True)}, (total, position)
