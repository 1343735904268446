"""A customer order a person cancels in MoySklad (moved to the state mapped as `released`) releases
what its reservation still holds in the ledger, once, unless the cancel came before the reservation
was placed; nothing else an order does there moves stock, or costs a request
(adapters/moysklad_order_ends.py)."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import BOTH_DATABASES, FAST, either_database, event
from moysklad_setup import STORE_UUID, VARIANT, client_for, on_hand
from placed_orders import (
    CANCELLED,
    OTHER_STATE,
    order_ends_of,
    order_of_two_stores_sharing_one,
    placed_order,
    reserved,
)

from adapters import moysklad_orders
from adapters.db import transaction
from adapters.httpserver import Reply
from adapters.moysklad_demands import DemandsRefused, DemandSync
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.moysklad_webhooks import register_webhooks
from adapters.outbound import OutboundWorker, TargetUnavailable
from adapters.sink import LedgerSink
from devtools.fakes.moysklad_wire import MOSCOW
from ledger.domain.model import EventType

RECEIPT, RESERVATION, RELEASE = EventType.RECEIPT, EventType.RESERVATION, EventType.RESERVATION_RELEASE


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def account(moysklad_account: Any, mapped: Any) -> Any:
    mapped(("moysklad", "status", "released", CANCELLED))
    return moysklad_account


def state_changed(fake: Any, order_id: str, ago_s: float = 0.0, fields: Any = ("state",)) -> dict[str, Any]:
    """The notification of a change of the order's `fields` (diffType FIELDS), made `ago_s` ago."""
    body = fake.notification_body("customerorder", order_id, "UPDATE")
    when = datetime.now(MOSCOW) - timedelta(seconds=ago_s)
    body["auditContext"]["moment"] = when.strftime("%Y-%m-%d %H:%M:%S")
    if fields is not None:
        body["events"][0]["updatedFields"] = list(fields)
    return body


def test_an_order_cancelled_in_moysklad_releases_its_reservation_once(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    cancels = order_ends_of(server, recorder, mappings, ledger)
    assert reserved(ledger) == 5

    fake.set_order_state(order_id, CANCELLED)
    notice = state_changed(fake, order_id)
    assert cancels.handle(notice) == 1
    assert reserved(ledger) == 0
    assert on_hand(ledger, "shop-1", "SKU-1") == [10]
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"

    assert cancels.handle(notice) == 0  # delivered again: the reservation holds nothing any more


def test_a_cancelled_order_partly_shipped_releases_only_what_is_still_held(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    demands = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    demands.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code="B-9")))
    assert reserved(ledger) == 3

    fake.set_order_state(order_id, CANCELLED)
    order_ends_of(server, recorder, mappings, ledger).handle(state_changed(fake, order_id))

    assert reserved(ledger) == 0
    assert on_hand(ledger, "shop-1", "SKU-1") == [8]  # the 2 shipped stay shipped


def test_another_state_or_no_mapping_row_releases_nothing(
    account, recorder, mappings, mapped, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    cancels = order_ends_of(server, recorder, mappings, ledger)

    fake.set_order_state(order_id, OTHER_STATE)
    assert cancels.handle(state_changed(fake, order_id)) == 0
    assert reserved(ledger) == 5

    mapped(("moysklad", "status", "released", OTHER_STATE))  # the row now names the other state
    fake.set_order_state(order_id, CANCELLED)
    assert cancels.handle(state_changed(fake, order_id)) == 0
    assert reserved(ledger) == 5


def test_a_cancel_from_before_a_reservation_was_placed_does_not_release_it(
    account, recorder, mappings, ledger, record
):
    """A customer order is reused by a later reservation of the same order id, still cancelled; a
    cancel's notification delivered late, or again, must not release the new reservation."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    cancels = order_ends_of(server, recorder, mappings, ledger)
    fake.set_order_state(order_id, CANCELLED)
    assert cancels.handle(state_changed(fake, order_id)) == 1
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()  # the order's customer order found, still cancelled, and reused

    assert cancels.handle(state_changed(fake, order_id, ago_s=3600)) == 0  # a cancel from before it
    assert reserved(ledger) == 2

    fake.set_order_state(order_id, OTHER_STATE)  # a person takes the order up again
    assert cancels.handle(state_changed(fake, order_id)) == 0
    fake.set_order_state(order_id, CANCELLED)  # and cancels it once more: that releases
    assert cancels.handle(state_changed(fake, order_id)) == 1
    assert reserved(ledger) == 0


def test_the_ledgers_own_release_sets_the_state_without_a_notification(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    fake.outbox.clear()
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()

    assert fake.orders[order_id]["state"]["meta"]["href"].endswith(CANCELLED)
    assert fake.outbox == []  # asked for no notification of the ledger's own change
    record(event(RESERVATION, "shop-1", ("SKU-1", 3), reservation_id="res-9c", order_id="B-9"))
    orders.run_until_idle()
    cancels = order_ends_of(server, recorder, mappings, ledger)
    assert cancels.handle(state_changed(fake, order_id, ago_s=3600)) == 0  # before res-9c was placed
    assert reserved(ledger) == 3


def test_the_order_id_names_its_own_reservation_not_another_whose_id_it_is(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)  # res-9, order B-9
    record(event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="B-9", order_id="B-2000"))
    assert reserved(ledger) == 6

    fake.set_order_state(order_id, CANCELLED)
    order_ends_of(server, recorder, mappings, ledger).handle(state_changed(fake, order_id))

    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-1", "B-9").reservation.status.value == "active"  # order B-2000's


def test_a_notification_not_naming_the_state_costs_no_request(account, recorder, mappings, ledger, record):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    fake.outbox.clear()
    fake.set_order_state(order_id, CANCELLED)  # a person, in the app
    [(_, moved)] = fake.outbox
    assert moved["events"][0]["updatedFields"] == ["state"]  # diffType FIELDS, as subscribed
    cancels = order_ends_of(server, recorder, mappings, ledger)
    before = fake.requests

    for fields in (["description"], [], None):  # other fields; none named; no list (diffType NONE)
        assert cancels.handle(state_changed(fake, order_id, fields=fields)) == 0
    undated = copy.deepcopy(moved)
    del undated["auditContext"]  # no moment: whether it came after the reservation is unknown
    assert cancels.handle(undated) == 0
    assert fake.requests == before and reserved(ledger) == 5
    assert cancels.handle(moved) == 1 and fake.requests == before + 1
    assert reserved(ledger) == 0


def test_an_order_the_token_may_not_read_is_refused_and_any_other_403_is_an_outage(
    account, recorder, mappings, ledger, record, monkeypatch
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    notice = state_changed(fake, order_id)
    cancels = order_ends_of(server, recorder, mappings, ledger)
    for code, raised in ((1016, DemandsRefused), (1056, TargetUnavailable)):
        refusal = Reply(403, {"errors": [{"error": "forbidden", "code": code}]})
        monkeypatch.setattr(type(fake), "handle", lambda self, request, refusal=refusal: refusal)
        with pytest.raises(raised):
            cancels.handle(notice)
    assert reserved(ledger) == 5


def test_the_ledger_subscribes_to_customer_order_updates_and_a_person_s_change_is_notified(
    account, recorder, mappings, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    url = "http://ledger.example/moysklad/webhook/s"
    done = register_webhooks(client_for(server), url)
    assert any(line.startswith("customerorder UPDATE: subscribed") for line in done), done
    fake.outbox.clear()

    fake.set_order_state(order_id, CANCELLED)  # in the app

    [(to, body)] = fake.outbox
    assert to == url and body["events"][0]["meta"]["type"] == "customerorder"
    assert body["events"][0]["action"] == "UPDATE"


def test_registering_again_sets_field_diffs_on_an_order_subscription_made_without_them(account):
    fake, server = account
    client = client_for(server)
    url = "http://ledger.example/moysklad/webhook/s"
    made = client.request(
        "POST", "entity/webhook", json_body={"url": url, "entityType": "customerorder", "action": "UPDATE"}
    )
    assert made.json()["diffType"] == "NONE"  # MoySklad's default

    done = register_webhooks(client, url)

    assert any(line.startswith("customerorder UPDATE: updated") for line in done), done
    (hook,) = [
        h for h in fake.webhooks.values() if (h["entityType"], h["action"]) == ("customerorder", "UPDATE")
    ]
    assert hook["diffType"] == "FIELDS"
    refused = client.request(
        "POST",
        "entity/webhook",
        json_body={"url": url, "entityType": "demand", "action": "CREATE", "diffType": "FIELDS"},
    )
    assert refused.status == 400  # diffType is for UPDATE only (the fake's assumption)


def test_an_order_reused_by_a_holding_reservation_stays_open_until_the_last_one_ends(
    account, recorder, mappings, ledger, record
):
    """Order B-9's first reservation ends while a second one of the same order id (res-9b) holds
    the one customer order: the order keeps its reserve and state, so a person's later change of
    another state, notified after the ledger's worker ran, releases nothing; res-9b's end closes it."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    time.sleep(1.1)  # a second after the placement: not the rule's same-second case
    fake.outbox.clear()
    fake.set_order_state(order_id, OTHER_STATE)
    [(_, notified)] = fake.outbox
    orders.run_until_idle()  # the inbox is behind the orders' worker

    order = fake.orders[order_id]
    assert order["state"]["meta"]["href"].endswith(OTHER_STATE)
    assert [p["reserve"] for p in order["positions"]] == [5]
    assert order_ends_of(server, recorder, mappings, ledger).handle(notified) == 0
    assert reserved(ledger) == 2

    record(event(RELEASE, "shop-1", ("SKU-1", 2), reservation_id="res-9b"))
    orders.run_until_idle()
    assert order["state"]["meta"]["href"].endswith(CANCELLED)
    assert [p["reserve"] for p in order["positions"]] == [0]


def test_a_cancel_releases_every_reservation_the_order_carries_placed_before_it(
    account, recorder, mappings, ledger, record
):
    """Two reservations of order B-9 at shop-1 share its one customer order (the second reuses
    it); the newer ends first, so the order stays open for the older. A person's cancel then
    releases the older one: not only the newest reservation counts."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    record(event(RELEASE, "shop-1", ("SKU-1", 2), reservation_id="res-9b"))
    orders.run_until_idle()
    assert reserved(ledger) == 5
    record(event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-9c", order_id="B-9"))
    assert reserved(ledger) == 6

    fake.set_order_state(order_id, CANCELLED)
    assert order_ends_of(server, recorder, mappings, ledger).handle(state_changed(fake, order_id)) == 2
    assert reserved(ledger) == 0
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-1", "res-9c").reservation.status.value == "released"


def test_a_demand_of_an_order_ships_under_the_reservation_that_still_holds(
    account, recorder, mappings, ledger, record
):
    """Order B-9's newer reservation (res-9b, reusing the customer order) ended; its older one
    holds. A demand of the order ships under the one that holds, so its units are reserved no more."""
    fake, server = account
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    record(event(RELEASE, "shop-1", ("SKU-1", 2), reservation_id="res-9b"))
    demands = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))

    demands.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code="B-9")))
    assert reserved(ledger) == 3
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "partially_shipped"


def test_an_order_kept_open_is_cleared_when_its_last_reservation_ships_and_a_plain_shipment_costs_nothing(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()
    order = fake.orders[order_id]
    assert [p["reserve"] for p in order["positions"]] == [5]  # kept open for res-9b
    state_before = order.get("state")

    record(event(EventType.SHIPMENT, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "shipped"
    assert [p["reserve"] for p in order["positions"]] == [0]  # nothing holds it any more
    assert order.get("state") == state_before  # shipped, not released: its state is MoySklad's

    # An order's own shipment (no earlier reservation of it ended) asks MoySklad nothing.
    record(
        event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-7", order_id="B-7"),
    )
    orders.run_until_idle()
    requests = fake.requests
    record(event(EventType.SHIPMENT, "shop-1", ("SKU-1", 1), reservation_id="res-7", order_id="B-7"))
    orders.run_until_idle()
    assert fake.requests == requests


def test_a_reservation_placed_while_its_order_is_being_closed_keeps_the_orders_state(
    account, recorder, mappings, ledger, record
):
    """res-9c of order B-9 is placed between the close's check and its move of the order's state:
    the state is checked again just before it is moved, and left."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    client = orders.target.client
    listing = client.order_positions

    def placed_meanwhile(order: Any) -> Any:
        record(event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-9c", order_id="B-9"))
        client.order_positions = listing
        return listing(order)

    client.order_positions = placed_meanwhile
    orders.run_until_idle()

    order = fake.orders[order_id]
    assert [p["reserve"] for p in order["positions"]] == [0]
    assert not (order.get("state") or {}).get("meta", {}).get("href", "").endswith(CANCELLED)


def test_a_demand_of_an_order_two_reservations_hold_ships_under_the_oldest(
    account, recorder, mappings, ledger, record
):
    """res-9 (5) made order B-9's customer order, and its positions; res-9b (2) reuses it. A demand
    of the order's 5 ships res-9's units, not 3 units nothing reserved."""
    fake, server = account
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    demands = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))

    demands.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 5)], order_external_code="B-9")))
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "shipped"
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "active"
    assert reserved(ledger) == 2


def test_two_reservations_of_one_order_pushed_at_once_make_one_customer_order(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(
        event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-9", order_id="B-9"),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"),
    )
    target = MoySkladOrdersTarget(recorder, mappings, client_for(server))
    looking_up = target.client.find_order

    def slow_lookup(*args: Any) -> Any:
        found = looking_up(*args)
        time.sleep(0.3)  # both threads would look before either creates
        return found

    target.client.find_order = slow_lookup  # type: ignore[method-assign]
    OutboundWorker(recorder, target, FAST).run_until_idle()
    assert [o["externalCode"] for o in fake.orders.values()] == ["B-9"]


def test_an_order_kept_open_keeps_its_reserve_while_its_last_reservation_is_shipped_in_part(
    account, recorder, mappings, mapped, ledger, record
):
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    mapped(("moysklad", "status", "shipped", OTHER_STATE))  # a state for shipped: not the ledger's to set
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()
    order = fake.orders[order_id]
    state_before = order.get("state")

    record(event(EventType.SHIPMENT, "shop-1", ("SKU-1", 1), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    assert [p["reserve"] for p in order["positions"]] == [5]  # res-9b still holds 1
    record(event(EventType.SHIPMENT, "shop-1", ("SKU-1", 1), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    assert [p["reserve"] for p in order["positions"]] == [0]
    assert order.get("state") == state_before


def test_an_order_kept_open_while_the_worker_was_behind_is_cleared_when_its_reservation_ships(
    account, recorder, mappings, ledger, record
):
    """res-9 ends and res-9b of the same order is placed before the orders' worker runs: the close
    sees res-9b hold and keeps the order open, though res-9 ended first in the ledger."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    order = fake.orders[order_id]
    assert [p["reserve"] for p in order["positions"]] == [5]  # kept open for res-9b

    record(event(EventType.SHIPMENT, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    assert [p["reserve"] for p in order["positions"]] == [0]


def test_an_order_reused_while_closed_in_moysklad_is_alerted_and_one_reused_open_is_not(
    account, recorder, mappings, ledger, record
):
    """Order B-9's reservation expired or was released and its customer order closed; the site
    places B-9 again. The order is reused as it is, cancelled and reserving nothing in MoySklad,
    where staff would pass it by: the journal says so."""
    fake, server = account
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-9x", order_id="B-9"))
    orders.run_until_idle()  # reused while open: nothing to say
    assert _alerts(recorder) == []
    record(event(RELEASE, "shop-1", ("SKU-1", 1), reservation_id="res-9x"))
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()  # closed: nothing holds it

    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    [alert] = _alerts(recorder)
    assert alert["subject"] == "customer order B-9 at shop-1"
    assert "res-9b" in alert["detail"] and "mapped as released or expired" in alert["detail"]


def _alerts(recorder: Any) -> list[Any]:
    with transaction(recorder) as tx:
        return list(tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'"))


def test_an_order_reused_while_closed_without_a_state_row_is_alerted_once_however_often_pushed(
    account, recorder, mappings, ledger, record
):
    """No `released` mapping row: the close only clears the reserve, and the reused order reserves
    nothing. The same key pushed again (a cycle that did not save) says it no more."""
    fake, server = account
    with transaction(recorder) as tx:
        tx.execute("DELETE FROM adapter_status_map WHERE system = 'moysklad'")
    mappings.invalidate()
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    [alert] = _alerts(recorder)
    assert "reserving nothing" in alert["detail"]

    [item] = orders.target.load(["order:shop-1|res-9b"])
    orders.target.push([item])
    assert len(_alerts(recorder)) == 1


def test_a_journal_that_cannot_take_the_reuse_alert_does_not_fail_the_push(
    account, recorder, mappings, ledger, record, monkeypatch, caplog
):
    fake, server = account
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()

    def refused(*_: Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(moysklad_orders, "journal", refused)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()  # raises nothing: the push goes on
    assert "could not take the alert" in caplog.text and "ALERT moysklad" in caplog.text


def test_a_cancel_at_a_store_an_older_release_let_two_ledger_stores_share_releases_both_parts(
    account, recorder, mappings, ledger, record
):
    """shop-3 mapped to shop-1's MoySklad store (loaded before that was refused): shop-3's
    reservation of order B-9 was pushed to the same customer order. The cancel read the order's
    store back as one ledger store and released only its part; the other's only expired."""
    fake, server = account
    order_id, _ = order_of_two_stores_sharing_one(fake, server, recorder, mappings, record)
    assert [o["externalCode"] for o in fake.orders.values()] == ["B-9"]  # the one order carries both

    fake.set_order_state(order_id, CANCELLED)
    assert order_ends_of(server, recorder, mappings, ledger).handle(state_changed(fake, order_id)) == 2

    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-3", "res-3").reservation.status.value == "released"


def test_a_cancel_at_a_shared_store_releases_both_parts_when_they_share_their_reservation_id(
    account, recorder, mappings, ledger, record
):
    """The parts of one order at two stores often share their reservation id (one reservation
    across stores is recorded so, or the id is the order's). Both releases went under one event id
    (`customerorder:<uuid>:<reservation>:release`), so the second was a duplicate of the first and
    recorded nothing: shop-3's part held its units until it expired."""
    fake, server = account
    order_id, _ = order_of_two_stores_sharing_one(
        fake, server, recorder, mappings, record, shop_3_reservation="res-9"
    )

    fake.set_order_state(order_id, CANCELLED)
    order_ends_of(server, recorder, mappings, ledger).handle(state_changed(fake, order_id))

    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-3", "res-9").reservation.status.value == "released"


def test_a_release_at_one_of_two_stores_sharing_a_moysklad_store_keeps_the_order_open_for_the_other(
    account, recorder, mappings, ledger, record
):
    """The same shared store: shop-1's release closed the one customer order (reserve 0, the
    released state) while shop-3's reservation still held its units in it; a person's next change
    of state would then have read as a cancel of shop-3's part too."""
    fake, server = account
    order_id, orders = order_of_two_stores_sharing_one(fake, server, recorder, mappings, record)

    record(event(RELEASE, "shop-1", reservation_id="res-9"))
    orders.run_until_idle()

    state = ((fake.orders[order_id].get("state") or {}).get("meta") or {}).get("href", "")
    assert not state.endswith(CANCELLED)
    assert [p["reserve"] for p in fake.orders[order_id]["positions"]] == [5]  # as shop-1's push made it
    record(event(RELEASE, "shop-3", reservation_id="res-3"))  # the last one closes it
    orders.run_until_idle()
    assert fake.orders[order_id]["state"]["meta"]["href"].endswith(CANCELLED)
