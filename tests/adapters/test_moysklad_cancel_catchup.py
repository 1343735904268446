"""A customer order cancelled in MoySklad while its notification was lost still releases its
reservation: the catch-up reads the orders' state changes from MoySklad's audit
(adapters/moysklad_order_ends_catchup.py), under the same rule as a notification; other updates cost
no request, and a cancel from before the reservation was placed releases nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import BOTH_DATABASES, either_database, event
from moysklad_setup import client_for
from placed_orders import CANCELLED, OTHER_STATE, placed_order, reserved

from adapters.db import transaction
from adapters.httpserver import Reply
from adapters.moysklad_audit import SETTLE_S
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_order_ends_catchup import CancelCatchUp
from adapters.moysklad_webhooks import register_webhooks
from adapters.outbound import TargetUnavailable
from adapters.runner import build_adapters
from adapters.sink import LedgerSink
from devtools.fakes.moysklad_audit import API_LOGIN, APP_LOGIN
from devtools.fakes.moysklad_wire import MOSCOW
from ledger.config import Settings
from ledger.domain.model import EventType

RECEIPT, RESERVATION, RELEASE = EventType.RECEIPT, EventType.RESERVATION, EventType.RESERVATION_RELEASE
SETTLED = timedelta(seconds=SETTLE_S + 5)  # a clock this far ahead sees a change just made


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def account(moysklad_account: Any, mapped: Any) -> Any:
    mapped(("moysklad", "status", "released", CANCELLED))
    return moysklad_account


def catch_up(
    server: Any, recorder: Any, mappings: Any, ledger: Any, cancels: OrderEnds | None = None
) -> MoySkladCatchUp:
    client = client_for(server)
    sink = LedgerSink(ledger)
    catching_up = MoySkladCatchUp(
        recorder,
        client,
        DemandSync(recorder, mappings, client, sink),
        cancels or OrderEnds(recorder, mappings, client, sink),
    )
    catching_up.clock = lambda: datetime.now(UTC) + SETTLED
    return catching_up


def order_reads(fake: Any, order_id: str) -> int:
    return sum(1 for method, path, _ in fake.request_log if method == "GET" and path.endswith(order_id))


def test_a_cancel_whose_notification_was_lost_releases_its_reservation_once(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    fake.outbox.clear()  # MoySklad gave up delivering it: the adapters were away
    catching_up = catch_up(server, recorder, mappings, ledger)

    assert catching_up.run_once() == 1
    assert reserved(ledger) == 0
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"

    reads = order_reads(fake, order_id)
    assert catching_up.run_once() == 0  # read again in the overlap: remembered, no request
    assert order_reads(fake, order_id) == reads
    again = catch_up(server, recorder, mappings, ledger)  # a restarted process reads it again
    again.cancels._start = lambda end: end - timedelta(minutes=5)  # type: ignore[union-attr, method-assign]
    assert again.run_once() == 0
    assert reserved(ledger) == 0


def test_a_cancel_its_notification_brought_costs_the_catch_up_no_request(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    fake.outbox.clear()
    fake.set_order_state(order_id, CANCELLED)
    [(_, notified)] = fake.outbox
    cancels = OrderEnds(recorder, mappings, client_for(server), LedgerSink(ledger))
    assert cancels.handle(notified) == 1
    reads = order_reads(fake, order_id)

    assert catch_up(server, recorder, mappings, ledger, cancels).run_once() == 0
    assert order_reads(fake, order_id) == reads  # the same change, by its audit context
    assert reserved(ledger) == 0


def test_updates_of_other_fields_and_other_states_release_nothing_and_the_others_cost_no_request(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    client = client_for(server)
    order_href = fake.href("customerorder", order_id)
    assert client.request("PUT", order_href, json_body={"description": "call first"}).status == 200
    fake.set_order_state(order_id, OTHER_STATE)
    fake.outbox.clear()
    reads = order_reads(fake, order_id)

    assert catch_up(server, recorder, mappings, ledger).run_once() == 0
    assert reserved(ledger) == 5
    assert order_reads(fake, order_id) == reads + 1  # the state change read, the description's not


def test_a_cancel_from_before_the_reservation_was_placed_does_not_release_it(
    account, recorder, mappings, ledger, record
):
    """The customer order of B-9 is cancelled, then reused, still cancelled, by a new reservation of
    the same order id; the old cancel, read from the audit after, must not release the new one."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(EventType.RESERVATION_RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    fake.set_order_state(order_id, CANCELLED)
    [cancel] = [c for c in fake.audit if c["eventType"] == "update" and "state" in c["_events"][0]["diff"]]
    earlier = (datetime.now(MOSCOW) - timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    cancel["moment"] = cancel["_events"][0]["moment"] = earlier
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()  # the order's customer order found, still cancelled, and reused
    fake.outbox.clear()

    assert catch_up(server, recorder, mappings, ledger).run_once() == 0
    assert reserved(ledger) == 2


def test_the_orders_states_are_read_though_the_deletions_could_not_be(
    account, recorder, mappings, ledger, record, caplog
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)

    def unavailable(*_: Any, **__: Any) -> int:
        raise TargetUnavailable("moysklad audit: HTTP 502")

    catching_up.deletions.run_once = unavailable  # type: ignore[method-assign]
    with pytest.raises(TargetUnavailable, match="HTTP 502"):
        catching_up.run_once()
    assert reserved(ledger) == 0  # released all the same


def test_the_fake_audit_names_an_updates_fields_with_their_values_before_and_after(
    account, recorder, mappings, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    [change] = [c["_events"][0] for c in fake.audit if c["eventType"] == "update"]
    assert set(change["diff"]) == {"state"}
    assert change["diff"]["state"]["newValue"]["meta"]["href"].endswith(CANCELLED)
    assert change["diff"]["state"]["oldValue"] != change["diff"]["state"]["newValue"]
    created = next(c["_events"][0] for c in fake.audit if c["eventType"] == "create")
    assert "diff" not in created  # the audit's page: a creation has none


def test_adapters_run_catches_up_the_orders_states_with_the_demands(account, database_url, recorder, ledger):
    fake, server = account
    settings = Settings(
        database_url=database_url,
        moysklad_base_url=server.url + "/api/remap/1.2",
        moysklad_token=fake.token,
        moysklad_organization_id="org-1",
        moysklad_agent_id="agent-1",
    )
    adapters = build_adapters(settings, LedgerSink(ledger), recorder)
    try:
        assert adapters.moysklad_catch_up is not None
        assert isinstance(adapters.moysklad_catch_up.cancels, CancelCatchUp)
    finally:
        adapters.close_connections()


def test_the_ledgers_own_move_of_an_order_to_the_released_state_is_passed_unread(
    account, recorder, mappings, ledger, record
):
    """The ledger releases order B-9's reservation and moves its customer order to the released
    state, which the audit records like a person's cancel; a new reservation of B-9 (res-9b) then
    reuses the order. Dated in res-9b's second (the rule's grain: it would count as after the
    placement), the ledger's own move must not release res-9b, and its contexts cost no request."""
    fake, server = account
    _, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    orders.run_until_idle()
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    own = [c for c in fake.audit if c["eventType"] == "update" and "state" in c["_events"][0]["diff"]]
    assert own and all(c["uid"] == API_LOGIN for c in own)  # the ledger's state move is in the audit
    in_the_placements_second = (datetime.now(MOSCOW) + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")
    for context in own:
        context["moment"] = context["_events"][0]["moment"] = in_the_placements_second
    assert reserved(ledger) == 2

    assert catch_up(server, recorder, mappings, ledger).run_once() == 0
    assert reserved(ledger) == 2
    asked = [path for method, path, _ in fake.request_log if method == "GET" and path.endswith("/events")]
    assert not any(c["id"] in path for c in own for path in asked)


def test_an_update_without_its_diff_is_alerted_and_releases_nothing(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    fake.outbox.clear()
    [cancel] = [c for c in fake.audit if c["eventType"] == "update" and c["uid"] == APP_LOGIN]
    del cancel["_events"][0]["diff"]

    assert catch_up(server, recorder, mappings, ledger).run_once() == 0
    assert reserved(ledger) == 5
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'")
    assert "without the fields it changed" in alert["detail"] and "release" in alert["detail"]


def test_a_persons_other_state_change_then_the_ledgers_move_releases_nothing(
    account, recorder, mappings, ledger, record
):
    """Order B-9's first reservation ends, its second (res-9b) reuses the customer order; a person
    moves the order to another state (no cancel), its notification lost; then the orders' worker
    catches up. The order must not end up in the released state while res-9b holds, or the
    person's change would read as a cancel of it."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", ("SKU-1", 5), reservation_id="res-9"))
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    time.sleep(1.1)  # a second after the placement: not the rule's same-second case
    fake.set_order_state(order_id, OTHER_STATE)
    fake.outbox.clear()
    orders.run_until_idle()

    assert fake.orders[order_id]["state"]["meta"]["href"].endswith(OTHER_STATE)  # left open
    assert catch_up(server, recorder, mappings, ledger).run_once() == 0
    assert reserved(ledger) == 2


def test_the_ledgers_login_unknown_ends_the_catch_up_without_releasing_and_it_reads_on_later(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.set_order_state(order_id, CANCELLED)
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)
    fake.next_replies.append(Reply(403, {"errors": [{"error": "Нет прав", "code": 1016}]}))
    with pytest.raises(TargetUnavailable, match="context/employee"):
        catching_up.cancels.run_once()  # type: ignore[union-attr]
    assert reserved(ledger) == 5

    assert catching_up.run_once() == 1  # asked again at the next catch-up
    assert reserved(ledger) == 0
