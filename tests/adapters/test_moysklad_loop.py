"""The whole MoySklad loop (issue #14, item 3): demands created, corrected and deleted; orders cleared
when their reservation ends; the ledger's writes not echoed; stock notifications as reconciliation
reports; the documented Accept header and time zone. The webhooks, registered and delivered:
test_moysklad_webhooks.py."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import FAST, event
from moysklad_setup import (
    OTHER_STORE_UUID,
    PRODUCT,
    SECRET,
    STORE_UUID,
    VARIANT,
    client_for,
    moysklad_inbox,
    on_hand,
)

from adapters import masking
from adapters.db import transaction
from adapters.http import ForeignUrl, HttpClient
from adapters.mappings import MappingError
from adapters.moysklad import ACCEPT, WEBHOOK_DISABLE_HEADER
from adapters.moysklad_demands import DemandsRefused, DemandSync
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.moysklad_stock import StockWebhook, run_id_for
from adapters.moysklad_webhooks import register_webhooks
from adapters.outbound import OutboundWorker
from adapters.runner import Runner, build_adapters
from adapters.sink import LedgerSink, SinkError
from ledger.cli import main
from ledger.config import Settings
from ledger.domain.model import EventType
from ledger.projections.queries import HistoryFilter

RECEIPT, RESERVATION, RELEASE = EventType.RECEIPT, EventType.RESERVATION, EventType.RESERVATION_RELEASE
RELEASED_STATE = "5a5a0000-0000-0000-0000-00000000000e"


@pytest.fixture
def account(moysklad_account: Any) -> Any:
    return moysklad_account


def history(ledger: Any, store: str) -> list[tuple[str, str, str | None, int]]:
    ledger.refresh()
    return [
        (row["event_id"], row["type"], row["sku"], row["on_hand_delta"])
        for row in ledger.history(HistoryFilter(store), 1000)
        if row["source"] == "moysklad"
    ]


@pytest.fixture
def sync(account: Any, recorder: Any, mappings: Any, ledger: Any) -> DemandSync:
    _, server = account
    return DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))


# -- demands: created, corrected, deleted -----------------------------------------------------------


def test_a_corrected_demand_records_the_difference_and_a_redelivered_update_changes_nothing(
    account, sync, ledger, record
):
    fake, _ = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 5), (PRODUCT, 2)])
    assert sync.handle(fake.webhook_body(demand, "CREATE")) == 1
    assert on_hand(ledger, "shop-1", "SKU-1", "SKU-2") == [5, 8]

    fake.update_demand(demand, positions=[(VARIANT, 3), (PRODUCT, 4)])  # 2 fewer of one, 2 more of the other
    update = fake.webhook_body(demand, "UPDATE")
    assert sync.handle(update) == 2
    assert sync.handle(update) == 0  # the same notification again: the demand is as recorded
    assert sync.handle(fake.webhook_body(demand, "CREATE")) == 0  # a late CREATE neither

    assert on_hand(ledger, "shop-1", "SKU-1", "SKU-2") == [7, 6]
    assert history(ledger, "shop-1") == [
        (f"demand:{demand}", "stock.shipment", "SKU-1", -5),
        (f"demand:{demand}", "stock.shipment", "SKU-2", -2),
        (f"demand:{demand}:r2:return", "stock.return", "SKU-1", 2),
        (f"demand:{demand}:r2:ship", "stock.shipment", "SKU-2", -2),
    ]


def test_a_demand_of_a_product_mapped_from_two_ledger_skus_is_held_not_shipped_from_one_of_them(
    account, sync, recorder, ledger, record
):
    """Mapped before loading refused it (an older database): the demand shipped from whichever SKU
    the product's last row named. Held now, as a demand of an unmapped product is, naming it."""
    fake, _ = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10), ("SKU-X", 5)))
    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('moysklad', 'sku', 'SKU-X', %s, 'product', '2026-12-01T00:00:00Z')",
            (PRODUCT,),
        )
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    create = fake.webhook_body(demand, "CREATE")

    with pytest.raises(DemandsRefused, match=rf"moysklad sku {PRODUCT} is mapped from 2 ledger skus"):
        sync.handle(create)
    assert on_hand(ledger, "shop-1", "SKU-2", "SKU-X") == [10, 5]

    with transaction(recorder) as tx:  # put right
        tx.execute("DELETE FROM adapter_mappings WHERE local_id = 'SKU-X'")
    assert sync.handle(create) == 1
    assert on_hand(ledger, "shop-1", "SKU-2", "SKU-X") == [7, 5]


def test_a_deleted_demand_is_returned_once_however_often_the_delete_comes(account, sync, ledger, record):
    fake, _ = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 4)])
    create = fake.webhook_body(demand, "CREATE")
    sync.handle(create)
    fake.delete_demand(demand)
    delete = fake.webhook_body(demand, "DELETE")

    assert sync.handle(delete) == 1
    assert sync.handle(delete) == 0
    assert sync.handle(create) == 0  # the CREATE processed again after the deletion: 404, holds nothing
    assert on_hand(ledger, "shop-1", "SKU-1") == [10]
    assert history(ledger, "shop-1")[-1] == (f"demand:{demand}:r2:return", "stock.return", "SKU-1", 4)


def test_a_demand_moved_to_another_store_or_unconducted_moves_the_stock_with_it(
    account, sync, ledger, record
):
    fake, _ = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)), event(RECEIPT, "shop-2", ("SKU-1", 10)))
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 3)])
    sync.handle(fake.webhook_body(demand))

    fake.update_demand(demand, store=OTHER_STORE_UUID)
    sync.handle(fake.webhook_body(demand, "UPDATE"))
    assert (on_hand(ledger, "shop-1", "SKU-1"), on_hand(ledger, "shop-2", "SKU-1")) == ([10], [7])

    fake.update_demand(demand, applicable=False)  # no longer conducted: it moves no stock
    sync.handle(fake.webhook_body(demand, "UPDATE"))
    assert (on_hand(ledger, "shop-1", "SKU-1"), on_hand(ledger, "shop-2", "SKU-1")) == ([10], [10])


def test_a_correction_shipped_more_under_the_order_consumes_its_reservation(
    account, sync, ledger, record, recorder, mappings
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-1", order_id="B-1"),
    )
    OutboundWorker(
        recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
    ).run_until_idle()
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code="B-1")
    sync.handle(fake.webhook_body(demand))
    fake.update_demand(demand, positions=[(VARIANT, 5)])

    sync.handle(fake.webhook_body(demand, "UPDATE"))

    view = ledger.reservation("shop-1", "res-1")
    assert view.reservation.status.value == "shipped"
    (level,) = ledger.levels("shop-1", ["SKU-1"])
    assert (level.level.on_hand_units, level.level.reserved_units) == (5, 0)


def test_an_order_without_its_organization_and_counterparty_is_refused_as_moysklad_refuses_it(
    account, ledger, record, recorder, mappings, database_url, monkeypatch, capsys
):
    """Seed 001: both are required to create a customer order. The fake took an order without
    them, and `ledger adapters run` started without them: every order would have been parked."""
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-1", order_id="B-1"),
    )
    client = client_for(server, organization_id=None, agent_id=None)
    report = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client), FAST).run_until_idle()
    assert fake.orders == {}
    with transaction(recorder) as tx:
        (parked,) = tx.fetchall("SELECT reason FROM adapter_parked")
    assert "поле 'organization' не может быть пустым" in parked["reason"], report
    assert "поле 'agent' не может быть пустым" in parked["reason"]

    for name, value in {
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_MOYSKLAD_BASE_URL": server.url + "/api/remap/1.2",
        "LEDGER_MOYSKLAD_TOKEN": fake.token,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LEDGER_MOYSKLAD_ORGANIZATION_ID", raising=False)
    monkeypatch.setattr(masking._KNOWN, "values", masking._KNOWN.values)  # the command adds secrets
    capsys.readouterr()  # the pushes' log lines, when an earlier command set logging to stderr
    assert main(["adapters", "run", "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert "LEDGER_MOYSKLAD_ORGANIZATION_ID and LEDGER_MOYSKLAD_AGENT_ID are required" in err
    assert "\n" not in err and "Traceback" not in err


class FailingOnce:
    """A ledger that does not answer the first time (the process dies between storing and submitting)."""

    def __init__(self, sink: LedgerSink) -> None:
        self.sink, self.calls = sink, 0

    def record(self, events: list[Any]) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            raise SinkError("the ledger did not answer")
        return self.sink.record(events)


def test_a_revision_stored_but_not_submitted_is_submitted_first_by_the_next_notification(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    sync = DemandSync(recorder, mappings, client_for(server), FailingOnce(LedgerSink(ledger)))
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 4)])
    with pytest.raises(SinkError):
        sync.handle(fake.webhook_body(demand))
    fake.update_demand(demand, positions=[(VARIANT, 1)])  # and it changed meanwhile

    sync.handle(fake.webhook_body(demand, "UPDATE"))

    assert on_hand(ledger, "shop-1", "SKU-1") == [9]
    assert [row[0] for row in history(ledger, "shop-1")] == [f"demand:{demand}", f"demand:{demand}:r2:return"]


def test_a_demand_shipped_before_corrections_were_followed_is_read_back_from_the_history(
    account, sync, ledger, record
):
    fake, _ = account
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 4)])
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        dataclasses.replace(
            event(EventType.SHIPMENT, "shop-1", ("SKU-1", 4), source="moysklad"), event_id=f"demand:{demand}"
        ),
    )
    fake.update_demand(demand, positions=[(VARIANT, 3)])

    assert sync.handle(fake.webhook_body(demand, "UPDATE")) == 1

    assert on_hand(ledger, "shop-1", "SKU-1") == [7]


def test_moysklad_times_go_in_utc_to_the_ledger(account, sync, ledger, record):
    fake, _ = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    moment = datetime(2026, 11, 22, 7, 15, 0, 250000, tzinfo=UTC)
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 1)], moment=moment)
    assert fake.demands[demand]["moment"] == "2026-11-22 10:15:00.250"  # on the wire: Moscow time

    sync.handle(fake.webhook_body(demand))

    ledger.refresh()
    (row,) = [r for r in ledger.history(HistoryFilter("shop-1"), 10) if r["source"] == "moysklad"]
    assert row["time"] == "2026-11-22T07:15:00.250000+00:00"


# -- customer orders when the reservation ends ---------------------------------------------------------


def test_a_released_reservation_clears_its_orders_reserve_and_sets_the_mapped_state(
    account, recorder, mappings, mapped, record
):
    fake, server = account
    mapped(("moysklad", "status", "released", RELEASED_STATE))
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), ("SKU-2", 1), reservation_id="res-1", order_id="B-1"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)
    worker.run_until_idle()
    (order,) = fake.orders.values()
    assert [p["reserve"] for p in order["positions"]] == [2, 1]

    record(event(RELEASE, "shop-1", reservation_id="res-1"))
    worker.run_until_idle()
    writes_after_release = sum(1 for method, *_ in fake.request_log if method == "PUT")
    worker.run_once(full=False)
    worker.target.push(worker.target.load(["order:shop-1|res-1"]))  # a retried push

    assert [p["reserve"] for p in order["positions"]] == [0, 0]
    assert order["state"]["meta"]["href"].endswith(f"/entity/customerorder/metadata/states/{RELEASED_STATE}")
    assert writes_after_release == 3  # two positions and the state
    assert sum(1 for method, *_ in fake.request_log if method == "PUT") == 3  # the retry changed nothing


def test_an_expired_reservation_clears_its_orders_reserve(account, recorder, mappings, ledger, record):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(
            RESERVATION,
            "shop-1",
            ("SKU-1", 3),
            reservation_id="res-2",
            order_id="B-2",
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
        ),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)
    worker.run_until_idle()
    deadline = time.monotonic() + 20
    while ledger.reservation("shop-1", "res-2").reservation.status.value != "expired":
        assert time.monotonic() < deadline, "the ledger did not expire the reservation"
        time.sleep(0.05)

    worker.run_until_idle()

    (order,) = fake.orders.values()
    assert [p["reserve"] for p in order["positions"]] == [0]
    assert "state" not in order  # no state mapped for `expired`


# -- echoes, the Accept header ------------------------------------------------------------------------


def test_the_ledgers_own_writes_do_not_come_back_as_webhooks_and_would_without_the_header(
    account, recorder, mappings, record
):
    fake, server = account
    client = client_for(server)
    for action in ("CREATE", "UPDATE"):
        client.request(
            "POST",
            "entity/webhook",
            json_body={
                "url": "https://ledger.example.com/h",
                "action": action,
                "entityType": "customerorder",
            },
        )
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-1", order_id="B-1"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client), FAST)
    worker.run_until_idle()
    record(event(RELEASE, "shop-1", reservation_id="res-1"))
    worker.run_until_idle()

    assert fake.outbox == [] and fake.notifications_suppressed == 2  # the create and the reserve cleared
    writes = [headers for method, _, headers in fake.request_log if method in ("POST", "PUT")]
    assert all(any(k.lower() == WEBHOOK_DISABLE_HEADER.lower() for k in headers) for headers in writes), (
        writes
    )

    # The same write without the header is notified: the header is what kept the echo away.
    (order,) = fake.orders.values()
    plain = HttpClient(client.http.base_url, 2.0, {"Authorization": f"Bearer {fake.token}", "Accept": ACCEPT})
    answer = plain.request("PUT", f"entity/customerorder/{order['id']}", json_body={"description": "by hand"})
    assert answer.status == 200
    assert [body["events"][0]["action"] for _, body in fake.outbox] == ["UPDATE"]


def test_the_fake_notifies_a_demand_deleted_through_the_api_unless_the_request_says_not_to(account):
    fake, server = account
    client = client_for(server)
    register_webhooks(client, "https://ledger.example.com/moysklad/webhook/s")
    kept, gone = fake.add_demand(STORE_UUID, [(VARIANT, 1)]), fake.add_demand(STORE_UUID, [(VARIANT, 2)])
    fake.outbox.clear()
    plain = HttpClient(client.http.base_url, 2.0, {"Authorization": f"Bearer {fake.token}", "Accept": ACCEPT})

    assert client.request("PUT", f"entity/demand/{kept}", json_body={"applicable": False}).status == 200
    assert plain.request("DELETE", f"entity/demand/{gone}").status == 200

    assert [(body["events"][0]["action"], body["events"][0]["meta"]["href"]) for _, body in fake.outbox] == [
        ("DELETE", fake.href("demand", gone))
    ]
    assert fake.notifications_suppressed == 1 and fake.demands[kept]["applicable"] is False


def test_every_request_carries_the_documented_accept_and_the_fake_refuses_another(
    account, recorder, mappings, ledger, record, receiver
):
    fake, server = account
    client = client_for(server)
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    register_webhooks(client, f"{receiver.url}/moysklad/webhook/{SECRET}")
    DemandSync(recorder, mappings, client, LedgerSink(ledger)).handle(
        fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 1)]))
    )
    fake.set_stock(VARIANT, STORE_UUID, 9)
    StockWebhook(recorder, mappings, client).handle(
        fake.stock_webhook_body(datetime.now(UTC) - timedelta(minutes=5))
    )

    accepts = {
        next(v for k, v in headers.items() if k.lower() == "accept") for _, _, headers in fake.request_log
    }
    assert accepts == {ACCEPT}
    plain = HttpClient(
        client.http.base_url, 2.0, {"Authorization": f"Bearer {fake.token}"}
    )  # application/json
    answer = plain.request("GET", "entity/webhook")
    assert answer.status == 400 and answer.json()["errors"][0]["code"] == 1062


# -- stock notifications --------------------------------------------------------------------------------


def test_a_stock_notification_makes_a_report_of_what_changed_and_changes_nothing(
    account, receiver, recorder, mappings, ledger, record
):
    fake, server = account
    client = client_for(server)
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5)))
    register_webhooks(client, f"{receiver.url}/moysklad/webhook/{SECRET}")
    since = datetime.now(UTC) - timedelta(minutes=5)
    fake.set_stock(VARIANT, STORE_UUID, 8)  # the ledger says 10
    inbox = moysklad_inbox(recorder, mappings, client, ledger)

    assert fake.notify_stock_changes(since) == 1
    (outcome,) = fake.deliver_webhooks()
    assert outcome.delivered and inbox.run_once() == (1, 0)
    body = fake.stock_webhook_body(since)
    assert " " in body["reportUrl"]  # as documented: changedSince with a raw space
    assert StockWebhook(recorder, mappings, client).handle(body) is None  # made once

    with transaction(recorder) as tx:
        (run,) = tx.fetchall("SELECT run_id, applied_at FROM adapter_reconcile_runs")
        lines = tx.fetchall("SELECT store_id, sku, ledger_units, external_units FROM adapter_reconcile_lines")
        note = tx.fetchone("SELECT detail FROM adapter_journal WHERE kind = 'reconcile'")
    assert run["run_id"] == run_id_for(body["reportUrl"]) and run["applied_at"] is None
    assert [dict(line) for line in lines] == [
        {"store_id": "shop-1", "sku": "SKU-1", "ledger_units": 10, "external_units": 8}
    ]
    assert note is not None and f"ledger reconcile --apply {run['run_id']}" in note["detail"]
    assert on_hand(ledger, "shop-1", "SKU-1", "SKU-2") == [10, 5]  # a report, not an apply


def test_a_product_archived_with_stock_on_the_shelf_is_not_reported_at_zero(
    account, recorder, mappings, ledger, record
):
    """The short report lists a product archived in its interval at 0, whatever its stock; taken as
    the figure, the report's line (ledger 5, MoySklad 0) wrote the shelf's units off once applied.
    A product sold out reads 0 in the full report as well, and is reported."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5)))
    since = datetime.now(UTC) - timedelta(minutes=5)
    fake.set_stock(PRODUCT, STORE_UUID, 5)
    fake.archived.add(PRODUCT)  # archived in the interval, its 5 units still there
    fake.set_stock(VARIANT, STORE_UUID, 0)  # sold out (the ledger says 10)

    short = client_for(server).request("GET", fake.stock_webhook_body(since)["reportUrl"].replace(" ", "%20"))
    assert sorted((row["assortmentId"], row["stock"]) for row in short.json()) == [(VARIANT, 0), (PRODUCT, 0)]
    report = StockWebhook(recorder, mappings, client_for(server)).handle(fake.stock_webhook_body(since))

    assert report is not None
    assert [(d.sku, d.ledger_units, d.external_units) for d in report.discrepancies] == [("SKU-1", 10, 0)]
    assert report.compared == 2  # SKU-2 at 5 on both sides


def test_a_store_deleted_in_moysklad_but_still_mapped_is_reported_not_read_as_zero(
    account, recorder, mappings, ledger, record
):
    """The short report lists every row of a store deleted in its interval at 0; the full report
    lists nothing of it. The pair was left out (nothing wrong proposed), but nobody was told that a
    mapped store was gone: its figures were never compared again. An alert names it, once."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)), event(RECEIPT, "shop-2", ("SKU-2", 5)))
    since = datetime.now(UTC) - timedelta(minutes=5)
    fake.set_stock(VARIANT, STORE_UUID, 10)
    fake.set_stock(PRODUCT, OTHER_STORE_UUID, 4)
    fake.delete_store(STORE_UUID)
    stock = StockWebhook(recorder, mappings, client_for(server))

    report = stock.handle(fake.stock_webhook_body(since))

    assert report is not None  # shop-2's line, and nothing of shop-1
    assert [(d.store_id, d.sku, d.external_units) for d in report.discrepancies] == [("shop-2", "SKU-2", 4)]
    assert on_hand(ledger, "shop-1", "SKU-1") == [10]
    with transaction(recorder) as tx:
        alerts = tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'")
    assert [a["subject"] for a in alerts] == [f"moysklad store {STORE_UUID}"]
    assert "deleted in MoySklad but still mapped from shop-1" in alerts[0]["detail"]
    fake.set_stock(PRODUCT, OTHER_STORE_UUID, 3)
    stock.handle(fake.stock_webhook_body(since - timedelta(seconds=1)))  # another notification
    with transaction(recorder) as tx:
        assert len(tx.fetchall("SELECT 1 AS said FROM adapter_journal WHERE kind = 'alert'")) == 1


@pytest.mark.parametrize(
    ("kind", "local_id", "external_id", "shared"),
    [
        ("sku", "SKU-X", PRODUCT, rf"moysklad sku {PRODUCT} is mapped from 2 ledger skus \(SKU-2, SKU-X\)"),
        ("store", "shop-9", STORE_UUID, rf"moysklad store {STORE_UUID} is mapped from 2 ledger stores"),
    ],
)
def test_a_stock_notification_against_a_shared_store_or_product_makes_no_report(
    account, recorder, mappings, ledger, record, kind, local_id, external_id, shared
):
    """Mapped before loading refused it (an older database): the notification's rows were read back
    to one of the two (whichever row came last), and its report gave that one the stock of both
    (10 + 5 in the ledger, 15 in MoySklad: applied, 30 units out of 15)."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10), ("SKU-X", 5)), event(RECEIPT, "shop-9", ("SKU-2", 5)))
    since = datetime.now(UTC) - timedelta(minutes=5)
    fake.set_stock(PRODUCT, STORE_UUID, 15)
    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('moysklad', %s, %s, %s, NULL, '2026-12-01T00:00:00Z')",
            (kind, local_id, external_id),
        )

    with pytest.raises(MappingError, match=shared):
        StockWebhook(recorder, mappings, client_for(server)).handle(fake.stock_webhook_body(since))

    with transaction(recorder) as tx:
        assert tx.fetchall("SELECT run_id FROM adapter_reconcile_runs") == []


def test_a_report_url_outside_the_configured_base_url_is_not_followed(account, recorder, mappings):
    fake, server = account
    requests_before = fake.requests
    forged = {**fake.stock_webhook_body(datetime.now(UTC)), "reportUrl": "https://evil.example/report"}

    with pytest.raises(ForeignUrl):
        StockWebhook(recorder, mappings, client_for(server)).handle(forged)

    assert fake.requests == requests_before


# -- the whole loop, as `ledger adapters run` wires it -------------------------------------------------


def wait_until(check: Any, deadline_s: float = 20.0) -> None:
    until = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < until, "the condition was not met before the deadline"
        time.sleep(0.02)


def test_the_runner_follows_an_order_its_demands_their_correction_and_the_stock(
    account, database_url, ledger, recorder, record
):
    fake, server = account
    settings = Settings(
        database_url=database_url,
        moysklad_base_url=server.url + "/api/remap/1.2",
        moysklad_token=fake.token,
        moysklad_organization_id="org-1",
        moysklad_agent_id="agent-1",
        moysklad_webhook_secret=SECRET,
        moysklad_requests_per_window=1000,
        adapters_http_port=0,
        adapters_poll_interval_ms=20,
        adapters_mappings_refresh_s=0,
        adapters_inbox_settle_ms=0,
    )
    runner = Runner(build_adapters(settings, LedgerSink(ledger), recorder), settings).start()
    try:
        assert runner.server is not None
        register_webhooks(client_for(server), f"{runner.server.url}/moysklad/webhook/{SECRET}")
        record(
            event(RECEIPT, "shop-1", ("SKU-1", 10)),
            event(RESERVATION, "shop-1", ("SKU-1", 4), reservation_id="res-1", order_id="B-7"),
        )
        wait_until(lambda: len(fake.orders) == 1)
        demand = fake.add_demand(STORE_UUID, [(VARIANT, 1)], order_external_code="B-7")
        fake.update_demand(demand, positions=[(VARIANT, 3)])
        assert all(o.delivered for o in fake.deliver_webhooks())
        wait_until(lambda: on_hand(ledger, "shop-1", "SKU-1") == [7])
        record(event(RELEASE, "shop-1", reservation_id="res-1"))
        (order,) = fake.orders.values()
        wait_until(lambda: [p["reserve"] for p in order["positions"]] == [0])
        since = datetime.now(UTC) - timedelta(minutes=1)
        fake.set_stock(VARIANT, STORE_UUID, 6)
        fake.notify_stock_changes(since)
        assert all(o.delivered for o in fake.deliver_webhooks())

        def reported() -> bool:
            with transaction(recorder) as tx:
                return tx.fetchone("SELECT run_id FROM adapter_reconcile_runs") is not None

        wait_until(reported)
    finally:
        runner.stop()
    assert fake.outbox == []  # nothing the ledger wrote came back
    assert ledger.reservation("shop-1", "res-1").reservation.status.value == "released"
    assert on_hand(ledger, "shop-1", "SKU-1") == [7]  # the stock report changed nothing
