"""MoySklad: customer orders from reservations, demand webhooks into shipments."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import FAST, event
from moysklad_setup import client_for

from adapters.db import transaction
from adapters.httpserver import Reply
from adapters.inbound import InboxWorker, WebhookAccess, WebhookReceiver, store_delivery
from adapters.moysklad import format_moment, parse_moment
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.outbound import OutboundWorker, SimulatedCrash
from adapters.sink import LedgerSink
from adapters.webhook_server import WebhookServer
from adapters.wms import WmsClient, WmsConfig, WmsPickingTarget
from adapters.wms_statuses import WmsStatusProcessor
from ledger.domain.model import EventType

RECEIPT, RESERVATION, RELEASE = EventType.RECEIPT, EventType.RESERVATION, EventType.RESERVATION_RELEASE
STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
VARIANT = "0b3c0000-0000-0000-0000-0000000000a1"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"


@pytest.fixture
def account(moysklad: Any, mapped: Any) -> Any:
    fake, _ = moysklad
    fake.stores.add(STORE_UUID)
    fake.products.update({VARIANT: "variant", PRODUCT: "product"})
    mapped(
        ("moysklad", "store", "shop-1", STORE_UUID),
        ("moysklad", "sku", "SKU-1", VARIANT, "variant"),
        ("moysklad", "sku", "SKU-2", PRODUCT, "product"),
    )
    return moysklad


def test_a_reservation_for_an_order_becomes_one_customerorder_keyed_by_the_order_id(
    account, recorder, mappings, record
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), ("SKU-2", 1), reservation_id="res-1", order_id="B-1001"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)

    worker.run_until_idle()

    (order,) = fake.orders.values()
    assert order["externalCode"] == "B-1001"
    assert order["organization"]["meta"]["href"].endswith("/entity/organization/org-1")
    assert [(p["quantity"], p["reserve"], p["assortment"]["meta"]["type"]) for p in order["positions"]] == [
        (2, 2, "variant"),
        (1, 1, "product"),
    ]


def test_the_fake_answers_an_orders_positions_by_reference_unless_expanded(
    account, recorder, mappings, record
):
    """md/documents/_customerOrder.md: positions are a MetaArray; the rows come with expand or from
    their own resource, which the orders target reads."""
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-1", order_id="B-1001"),
    )
    OutboundWorker(
        recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
    ).run_until_idle()
    (order_id,) = fake.orders
    client = client_for(server)

    plain = client.request("GET", f"entity/customerorder/{order_id}").json()
    expanded = client.request(
        "GET", f"entity/customerorder/{order_id}", params={"expand": "positions"}
    ).json()

    assert plain["positions"]["meta"]["size"] == 1 and "rows" not in plain["positions"]
    assert plain["positions"]["meta"]["href"].endswith(f"/customerorder/{order_id}/positions")
    assert [p["quantity"] for p in expanded["positions"]] == [2]
    assert [p["reserve"] for p in client.order_positions({"id": order_id})] == [2]


def test_a_reservation_across_stores_is_an_order_at_each_store_and_one_part_is_released_alone(
    account, recorder, mappings, mapped, record
):
    """CONTRACT §6: one reservation id with a part at each store. Looked up by the order id alone,
    the second store found the first's order as its own: its part was never reserved in
    MoySklad, and releasing one part cleared the other's reserve."""
    fake, server = account
    other = "7a1f0000-0000-0000-0000-000000000002"
    fake.stores.add(other)
    mapped(("moysklad", "store", "shop-2", other))
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 5)),
        event(RECEIPT, "shop-2", ("SKU-2", 5)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-9", order_id="B-9"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)
    worker.run_until_idle()
    record(event(RESERVATION, "shop-2", ("SKU-2", 3), reservation_id="r-9", order_id="B-9"))
    worker.run_until_idle()  # a push of its own: in one push the two parts raced past the lookup

    def reserved() -> dict[str, list[int]]:
        return {
            o["store"]["meta"]["href"].split("/")[-1]: [p["reserve"] for p in o["positions"]]
            for o in fake.orders.values()
        }

    assert sorted(o["externalCode"] for o in fake.orders.values()) == ["B-9", "B-9"]
    assert reserved() == {STORE_UUID: [2], other: [3]}
    record(event(RELEASE, "shop-1", reservation_id="r-9"))
    worker.run_until_idle()
    assert reserved() == {STORE_UUID: [0], other: [3]}
    worker.run_until_idle()  # pushed again: nothing new is made
    assert len(fake.orders) == 2


def test_a_retry_after_a_crash_finds_the_order_by_its_external_code_and_creates_no_duplicate(
    account, recorder, mappings, record
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-1", order_id="B-1"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)

    def crash() -> None:
        raise SimulatedCrash

    worker.before_save_hook = crash
    with pytest.raises(SimulatedCrash):
        worker.run_once()
    worker.before_save_hook = None
    worker.run_until_idle()

    assert len(fake.orders) == 1


def test_an_order_with_an_unmapped_sku_is_parked_at_once_and_the_others_are_created(
    account, recorder, mappings, record
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-9", 10)),
        event(RESERVATION, "shop-1", ("SKU-9", 1), reservation_id="res-1", order_id="B-1"),
        event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-2", order_id="B-2"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)

    report = worker.run_once()

    assert report.parked_keys == ["order:shop-1|res-1"]
    assert [o["externalCode"] for o in fake.orders.values()] == ["B-2"]
    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT attempts, reason FROM adapter_parked")
    assert row is not None and row["attempts"] == 1 and "SKU-9" in row["reason"]


def test_requests_beyond_the_window_are_answered_429_and_retried_after_the_reset(
    account, recorder, mappings, record
):
    fake, server = account
    fake.requests_per_window, fake.window_s = 3, 0.3
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        *[
            event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id=f"r-{n}", order_id=f"B-{n}")
            for n in range(3)
        ],
    )
    # A client that believes it may send more than the account allows.
    worker = OutboundWorker(
        recorder,
        MoySkladOrdersTarget(recorder, mappings, client_for(server)),
        dataclasses.replace(FAST, request_retries_max=40),
    )

    worker.run_until_idle()

    assert sorted(o["externalCode"] for o in fake.orders.values()) == ["B-0", "B-1", "B-2"]
    assert fake.rate_limited > 0


def test_the_client_keeps_within_the_documented_window_by_itself(account):
    fake, server = account
    fake.requests_per_window, fake.window_s = 5, 0.5
    client = client_for(server, requests_per_window=5, window_s=0.5)

    for _ in range(12):
        client.find_order("nothing", STORE_UUID)

    assert fake.rate_limited == 0


def post_json(url: str, body: Any) -> tuple[int, float]:
    started = time.monotonic()
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.status, time.monotonic() - started


def test_demand_webhooks_are_stored_and_answered_before_processing_and_redelivery_changes_nothing(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-1", order_id="B-1"),
    )
    OutboundWorker(
        recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
    ).run_until_idle()
    receiver = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret="s3cret"))).start()
    fake.delay_s = 1.0  # MoySklad itself is slow now: the answer must not wait for it
    try:
        first = fake.add_demand(STORE_UUID, [(VARIANT, 3)], order_external_code="B-1")
        url = f"{receiver.url}/moysklad/webhook/s3cret?requestId=req-1"
        status, elapsed_s = post_json(url, fake.webhook_body(first))
        again, _ = post_json(url, fake.webhook_body(first))
    finally:
        receiver.stop()
    assert status == again == 200 and elapsed_s < 1.0
    with transaction(recorder) as tx:
        assert tx.fetchone("SELECT COUNT(*) AS n FROM adapter_inbox")["n"] == 1  # type: ignore[index]
    fake.delay_s = 0.0

    demands = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(recorder, {"moysklad": demands.handle})
    assert inbox.run_once() == (1, 0)
    assert ledger.reservation("shop-1", "res-1").reservation.status.value == "partially_shipped"
    second = fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code="B-1")
    assert store_delivery(recorder, "moysklad", "req-2", fake.webhook_body(second))
    assert inbox.run_once() == (1, 0)

    view = ledger.reservation("shop-1", "res-1")
    assert view.reservation.status.value == "shipped"
    (level,) = ledger.levels("shop-1", ["SKU-1"])
    assert (level.level.on_hand_units, level.level.reserved_units) == (5, 0)


def test_a_demand_processed_twice_is_recorded_once(account, recorder, mappings, ledger, record):
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 4)])
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))

    first = sync.handle(fake.webhook_body(demand))
    second = sync.handle(fake.webhook_body(demand))

    assert (first, second) == (1, 0)  # the second finds the demand as recorded: nothing to submit
    assert ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units == 6


def test_a_demand_of_more_positions_than_its_answer_expands_is_recorded_whole(
    account, recorder, mappings, ledger, record
):
    """A document's answer expands its first 1000 positions; a larger one (positions added through
    their resource) holds the rest there. Read from the expanded answer alone, the last position's
    units were never shipped, and on hand stayed too high (an oversell)."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 2000)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 1)] * 1000 + [(VARIANT, 3)])
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))

    sync.handle(fake.webhook_body(demand))
    sync.handle(fake.webhook_body(demand, "UPDATE"))  # read again: nothing more

    assert [v.level.on_hand_units for v in ledger.levels("shop-1", ["SKU-1", "SKU-2"])] == [7, 1000]


def test_a_demand_with_a_service_line_ships_its_goods(account, recorder, mappings, ledger, record):
    """A delivery charge is a service, which keeps no stock and is mapped to no SKU: taken for an
    unmapped product, it held the demand's goods back until the demand was given up."""
    fake, server = account
    service = "0b3c0000-0000-0000-0000-0000000000c3"
    fake.products[service] = "service"
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 4), (service, 1)])
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))

    assert sync.handle(fake.webhook_body(demand)) == 1

    assert ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units == 6


UNMAPPED = "0b3c0000-0000-0000-0000-0000000000ff"


def _inbox_rows(recorder: Any) -> dict[str, dict[str, Any]]:
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT delivery_id, attempts, processed_at, last_error FROM adapter_inbox")
    return {row["delivery_id"]: dict(row) for row in rows}


def test_one_demand_that_cannot_be_recorded_does_not_lose_the_others_of_its_delivery(
    account, recorder, mappings, ledger, record
):
    """A delivery may hold several demands (_webhook.md): one whose product is not mapped yet was
    retried with the rest, and the whole delivery given up, the valid shipments with it."""
    fake, server = account
    fake.products[UNMAPPED] = "product"
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)))
    bad = fake.add_demand(STORE_UUID, [(UNMAPPED, 1)])
    good = fake.add_demand(STORE_UUID, [(PRODUCT, 4)])
    body = fake.webhook_body(bad)
    body["events"] += fake.webhook_body(good)["events"]
    assert store_delivery(recorder, "moysklad", "req-1", body)
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(recorder, {"moysklad": sync.handle}, retries_max=3, retry_first_s=0)

    for _ in range(4):
        inbox.run_once()

    assert ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units == 6  # recorded once, not lost
    row = _inbox_rows(recorder)["req-1"]
    assert row["processed_at"] is not None and row["attempts"] == 3  # given up, with an alert
    assert bad in row["last_error"] and good not in row["last_error"]


def test_a_delivery_its_handler_fails_on_unexpectedly_is_given_up_and_the_deliveries_behind_it_go_on(
    account, recorder, mappings, ledger, record
):
    """An `events` entry that is not an object (stored before the receiver refused it) made the
    handler raise AttributeError on every round: the inbox retried that first row for ever."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)))
    assert store_delivery(recorder, "moysklad", "odd", {"events": [1]})
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 4)])
    assert store_delivery(recorder, "moysklad", "good", fake.webhook_body(demand))
    assert store_delivery(recorder, "wms", "w-1", {"id": "PO-1", "status": "X"})
    seen: list[Any] = []
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(
        recorder, {"moysklad": sync.handle, "wms": seen.append}, retries_max=2, retry_first_s=0
    )

    for _ in range(3):
        inbox.run_once()

    rows = _inbox_rows(recorder)
    assert rows["odd"]["processed_at"] is not None and rows["odd"]["attempts"] == 2  # given up
    assert "AttributeError" in rows["odd"]["last_error"]
    assert rows["good"]["processed_at"] is not None and rows["w-1"]["processed_at"] is not None
    assert ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units == 6
    with transaction(recorder) as tx:
        alerts = tx.fetchall("SELECT subject FROM adapter_journal WHERE kind = 'alert'")
    assert [alert["subject"] for alert in alerts] == ["delivery odd"]


def test_a_refused_delivery_is_tried_again_spaced_in_time_so_a_mapping_loaded_meanwhile_is_seen(
    account, recorder, mappings, mapped, ledger, record
):
    """Counted in rounds, a busy inbox gave a demand whose product was not mapped yet up within a
    second, before the next read of the mappings: its shipment was never recorded."""
    fake, server = account
    fake.products[UNMAPPED] = "product"
    record(event(RECEIPT, "shop-1", ("SKU-9", 10)))
    demand = fake.add_demand(STORE_UUID, [(UNMAPPED, 2)])
    assert store_delivery(recorder, "moysklad", "req-1", fake.webhook_body(demand))
    now = [datetime.now(UTC) + timedelta(seconds=1)]
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(recorder, {"moysklad": sync.handle}, retries_max=3, clock=lambda: now[0])

    for _ in range(20):  # a busy inbox's rounds, all within the first 5 s
        inbox.run_once()
    assert _inbox_rows(recorder)["req-1"]["attempts"] == 1
    now[0] += timedelta(seconds=5)
    inbox.run_once()
    assert _inbox_rows(recorder)["req-1"]["attempts"] == 2  # then 10 s before the third
    mapped(("moysklad", "sku", "SKU-9", UNMAPPED, "product"))
    now[0] += timedelta(seconds=10)
    inbox.run_once()

    row = _inbox_rows(recorder)["req-1"]
    assert row["processed_at"] is not None and row["attempts"] == 3
    assert ledger.levels("shop-1", ["SKU-9"])[0].level.on_hand_units == 8


def test_a_demand_the_token_may_not_read_holds_no_other_delivery_back(
    account, wms, mapped, recorder, mappings, ledger, record, monkeypatch
):
    """MoySklad answers 403 (error 1016) for a document the token may not read: no retry changes
    that. Taken for an outage, it held every later delivery of every source back, for good."""
    fake, server = account
    wms_fake, wms_server = wms
    mapped(("wms", "store", "shop-1", "main"), ("wms", "status", "SHIPPED", "D", "ship"))
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-2", 2), reservation_id="r-1", order_id="B-7"),
    )
    wms_client = WmsClient(
        WmsConfig(wms_server.url + "/", "fake-wms-key", requests_per_s=1000, timeout_s=2.0)
    )
    OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, wms_client), FAST).run_until_idle()
    picking = wms_fake.by_external("shop-1:r-1:default")
    forbidden = fake.add_demand(STORE_UUID, [(PRODUCT, 1)])
    serve_demand = type(fake)._demand

    def demand(self: Any, demand_id: str, request: Any) -> Reply:
        if demand_id == forbidden:
            return Reply(403, {"errors": [{"error": "Нет прав на просмотр документа", "code": 1016}]})
        return serve_demand(self, demand_id, request)

    monkeypatch.setattr(type(fake), "_demand", demand)
    store_delivery(recorder, "moysklad", "req-1", fake.webhook_body(forbidden))
    wms_fake.set_status(picking["id"], "SHIPPED")
    store_delivery(recorder, "wms", "w-1", {"id": picking["id"], "status": "SHIPPED"})
    store_delivery(
        recorder, "moysklad", "req-2", fake.webhook_body(fake.add_demand(STORE_UUID, [(PRODUCT, 3)]))
    )
    inbox = InboxWorker(
        recorder,
        {
            "moysklad": DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger)).handle,
            "wms": WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), wms_client).handle_delivery,
        },
        retries_max=3,
        retry_first_s=0,
    )

    for _ in range(4):
        inbox.run_once()

    rows = _inbox_rows(recorder)
    assert all(row["processed_at"] is not None for row in rows.values()), rows
    assert "403" in rows["req-1"]["last_error"] and rows["req-1"]["attempts"] == 3
    assert ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units == 10 - 2 - 3


@pytest.mark.parametrize(
    "answer",
    [Reply(503, {}), Reply(403, {"errors": [{"error": "Доступ запрещен", "code": 1002}]})],
    ids=["down", "no-rights"],
)
def test_an_unavailable_system_holds_back_its_own_deliveries_only(
    account, recorder, mappings, ledger, record, monkeypatch, answer
):
    """MoySklad down, or refusing the account (a 403 that is not about one document): its
    deliveries wait, in their order, and are never given up, however many wait; another source's
    go on meanwhile."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)))
    for n in range(1, 4):
        demand = fake.add_demand(STORE_UUID, [(PRODUCT, n)])
        store_delivery(recorder, "moysklad", f"req-{n}", fake.webhook_body(demand))
    store_delivery(recorder, "wms", "w-1", {"n": 1})
    seen: list[int] = []
    monkeypatch.setattr(type(fake), "_demand", lambda self, demand_id, request: answer)
    down = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(
        recorder,
        {"moysklad": down.handle, "wms": lambda body: seen.append(body["n"])},
        retries_max=2,
        batch_max=2,  # fewer than the deliveries waiting behind the first
    )

    for _ in range(3):
        inbox.run_once()

    rows = _inbox_rows(recorder)
    assert seen == [1] and rows["w-1"]["processed_at"] is not None
    assert rows["req-1"]["processed_at"] is None and rows["req-1"]["attempts"] == 3  # never given up
    assert rows["req-2"]["attempts"] == rows["req-3"]["attempts"] == 0  # wait behind it, in order


def test_moysklad_times_are_moscow_time():
    moment = parse_moment("2026-11-22 10:15:00.250")
    assert moment.astimezone(UTC) == datetime(2026, 11, 22, 7, 15, 0, 250000, tzinfo=UTC)
    assert format_moment(datetime(2026, 11, 22, 7, 15, tzinfo=UTC)) == "2026-11-22 10:15:00.000"
