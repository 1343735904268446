"""The outbound mechanism against a fake Bitrix: positions, coalescing, retries, parking, crash recovery."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conftest import FAST, bitrix_target, event

from adapters.bitrix import BitrixConfig, BitrixTarget, Supplier
from adapters.bitrix_client import BitrixClient
from adapters.db import transaction
from adapters.http import HttpClient
from adapters.httpserver import Reply
from adapters.mappings import MappingError
from adapters.outbound import (
    OutboundWorker,
    SimulatedCrash,
    TargetUnavailable,
    enqueue,
    read_position,
    request_parked_retry,
)
from adapters.status import metrics_text, read_status
from ledger.domain.model import EventType

RECEIPT, SALE, RESERVATION = EventType.RECEIPT, EventType.SALE, EventType.RESERVATION


@pytest.fixture
def site(mapped: Any) -> None:
    mapped(
        ("bitrix", "store", "shop-1", "1"),
        ("bitrix", "store", "shop-2", "2"),
        ("bitrix", "sku", "SKU-1", "101", "product"),
        ("bitrix", "sku", "SKU-2", "102", "offer"),
        ("bitrix", "sku", "SKU-3", "103", "product"),
    )


def make_worker(recorder: Any, mappings: Any, server: Any, fake: Any, **config: Any) -> OutboundWorker:
    limits = config.pop("limits", FAST)
    return OutboundWorker(recorder, bitrix_target(recorder, mappings, (fake, server), **config), limits)


def products(fake: Any) -> dict[str, tuple[float, float]]:
    return {pid: (p["quantity"], p["quantityReserved"]) for pid, p in fake.products.items()}


def test_levels_of_mapped_stores_are_summed_into_one_product_update_per_sku(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    for pid, kind in (("101", "product"), ("102", "offer"), ("103", "product")):
        fake.add_product(pid, kind)
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 4)),
        event(RECEIPT, "shop-2", ("SKU-1", 5)),
        event(RECEIPT, "warehouse-9", ("SKU-1", 100)),  # not mapped to the site: not counted
        event(RESERVATION, "shop-1", ("SKU-1", 3), reservation_id="r-1"),
    )
    worker = make_worker(recorder, mappings, server, fake)

    reports = worker.run_until_idle()

    assert products(fake) == {"101": (12.0, 3.0), "102": (4.0, 0.0), "103": (0.0, 0.0)}
    assert reports[0].pushed == 2 and fake.requests == 1  # one batch for both SKUs
    assert read_position(recorder, "bitrix") == 4
    assert (
        "catalog.product.offer.update",
        {"id": "102", "fields": {"quantity": "4", "quantityReserved": "0"}},
    ) in fake.calls


def test_many_changes_to_one_sku_are_coalesced_into_one_push_of_the_newest_level(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    record(*[event(RECEIPT, "shop-1", ("SKU-1", 1)) for _ in range(30)], event(SALE, "shop-1", ("SKU-1", 7)))

    make_worker(recorder, mappings, server, fake).run_until_idle()

    assert [m for m, _ in fake.calls] == ["catalog.product.update"]
    assert products(fake)["101"] == (23.0, 0.0)


def test_a_batch_never_holds_more_than_fifty_commands(bitrix, recorder, mappings, mapped, record):
    fake, server = bitrix
    mapped(
        ("bitrix", "store", "shop-1", "1"),
        *[("bitrix", "sku", f"S-{n}", str(1000 + n), "product") for n in range(120)],
    )
    for n in range(120):
        fake.add_product(str(1000 + n))
    record(event(RECEIPT, "shop-1", *[(f"S-{n}", n + 1) for n in range(120)]))

    make_worker(recorder, mappings, server, fake).run_until_idle()

    assert fake.requests == 3  # 50 + 50 + 20
    assert all(p["quantity"] == int(pid) - 999 for pid, p in fake.products.items())


def test_rate_limited_requests_are_retried_with_backoff_until_they_pass(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.burst_requests_max, fake.drain_per_s = 2, 200.0
    fake.add_product("101")
    worker = make_worker(
        recorder, mappings, server, fake, limits=dataclasses.replace(FAST, request_retries_max=50)
    )
    for qty in range(1, 6):
        record(event(RECEIPT, "shop-1", ("SKU-1", qty)))
        worker.run_until_idle()
    fake.next_replies.extend(
        [Reply(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"})] * 3
    )
    record(event(RECEIPT, "shop-1", ("SKU-1", 1)))

    worker.run_until_idle()

    assert products(fake)["101"] == (16.0, 0.0)
    assert read_status(recorder)[0].failures_total >= 3


def test_server_errors_and_timeouts_stop_the_cycle_without_moving_the_position(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 5)))
    worker = make_worker(
        recorder,
        mappings,
        server,
        fake,
        timeout_s=0.2,
        limits=dataclasses.replace(FAST, request_retries_max=2),
    )
    fake.next_replies.extend([Reply(500, {"error": "INTERNAL"}), Reply(502, None)])

    first = worker.run_once()

    assert first.aborted and read_position(recorder, "bitrix") == 0
    fake.delay_s = 1.0  # longer than the client's timeout
    assert worker.run_once().aborted and read_position(recorder, "bitrix") == 0
    fake.delay_s = 0.0
    worker.run_until_idle()
    assert products(fake)["101"] == (5.0, 0.0) and read_position(recorder, "bitrix") == 1
    assert read_status(recorder)[0].failures_total == 4


def test_a_refused_request_whose_error_code_is_zero_stops_the_cycle_and_parks_nothing(
    bitrix, recorder, mappings, site, record
):
    """Bitrix documents 0 as the code of "other errors": read as no error, the 400 was taken for a
    batch answer with no results, and every SKU in it was parked instead of pushed later."""
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 5)))
    worker = make_worker(
        recorder, mappings, server, fake, limits=dataclasses.replace(FAST, request_retries_max=1)
    )
    fake.next_replies.append(Reply(400, {"error": 0, "error_description": "Internal error"}))

    assert worker.run_once().aborted and read_position(recorder, "bitrix") == 0
    worker.run_until_idle()
    assert products(fake)["101"] == (5.0, 0.0) and read_position(recorder, "bitrix") == 1
    assert read_status(recorder)[0].parked_total == 0


def test_a_bitrix_product_mapped_from_two_ledger_skus_is_refused_and_neither_is_pushed_to_it(
    bitrix, recorder, mappings, mapped, site, record
):
    """Each SKU set the product's quantity to its own: 10 + 5 in the ledger showed 10 or 5 on the
    site, whichever was pushed last (with documents, the amount moved back and forth)."""
    fake, server = bitrix
    fake.add_product("101")
    fake.add_product("103")
    shared = r"bitrix sku 101 is mapped from 2 ledger skus \(SKU-1, SKU-9\)"
    with pytest.raises(MappingError, match=shared + ".*nothing loaded"):
        mapped(("bitrix", "sku", "SKU-9", "101", "product"))
    assert mappings.external("bitrix", "sku", "SKU-9") is None

    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('bitrix', 'sku', 'SKU-9', '101', 'product', '2026-12-01T00:00:00Z')"
        )
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-9", 5), ("SKU-3", 2)))

    make_worker(recorder, mappings, server, fake).run_until_idle()

    assert products(fake)["101"] == (0.0, 0.0)  # not 10 or 5: parked, naming the mapping
    assert products(fake)["103"] == (2.0, 0.0)
    with transaction(recorder) as tx:
        parked = tx.fetchall("SELECT item_key, reason FROM adapter_parked ORDER BY item_key")
    assert [p["item_key"] for p in parked] == ["sku:SKU-1", "sku:SKU-9"]
    assert all("bitrix sku 101 is mapped from 2 ledger skus (SKU-1, SKU-9)" in p["reason"] for p in parked)


def test_one_failing_command_in_a_batch_is_parked_with_its_reason_and_the_others_are_pushed(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    fake.add_product("102", "offer")
    fake.add_product("103")
    fake.failing_products["102"] = "Product is locked by another process"
    record(event(RECEIPT, "shop-1", ("SKU-1", 1), ("SKU-2", 2), ("SKU-3", 3)))
    worker = make_worker(recorder, mappings, server, fake)

    report = worker.run_once()

    assert report.parked_keys == ["sku:SKU-2"] and report.pushed == 2
    assert products(fake)["101"] == (1.0, 0.0) and products(fake)["103"] == (3.0, 0.0)
    assert read_position(recorder, "bitrix") == 1
    with transaction(recorder) as tx:
        parked = tx.fetchall("SELECT item_key, reason, attempts FROM adapter_parked")
    assert [(p["item_key"], p["attempts"]) for p in parked] == [("sku:SKU-2", FAST.retries_max)]
    assert "locked by another process" in parked[0]["reason"]
    status = read_status(recorder)[0]
    assert status.parked_now == 1 and status.failures_total == FAST.retries_max
    # The status line says why, not "-" beside the failures (the reasons were only in the list).
    assert status.last_error is not None and status.last_error.startswith("parked sku:SKU-2: ")
    assert "locked by another process" in status.last_error

    del fake.failing_products["102"]
    assert request_parked_retry(recorder, "bitrix") == 1
    worker.run_until_idle()
    assert products(fake)["102"] == (2.0, 0.0) and read_status(recorder)[0].parked_now == 0


def test_a_parked_order_status_is_dropped_once_a_newer_one_is_pushed(bitrix, recorder, mappings, site):
    """An order status is an outbox item: parked, it is pushed again as it was parked. Once a newer
    status of the order has been pushed, a retry of the parked one would set the older status over
    it; the parked one is dropped instead."""
    fake, server = bitrix
    worker = make_worker(recorder, mappings, server, fake)
    with transaction(recorder) as tx:  # picking: the portal does not know order 7 yet, and refuses
        enqueue(tx, "bitrix", "status:7", {"order_id": "7", "status_id": "Q", "wms_status": "PICKING"})
    assert worker.run_once().parked_keys == ["status:7"]
    fake.orders["7"] = {"id": "7", "statusId": "N"}
    with transaction(recorder) as tx:  # shipped, later
        enqueue(tx, "bitrix", "status:7", {"order_id": "7", "status_id": "D", "wms_status": "SHIPPED"})
    assert worker.run_once().pushed == 1

    assert request_parked_retry(recorder, "bitrix") == 0  # nothing parked is left to send
    worker.run_until_idle()
    assert fake.orders["7"]["statusId"] == "D"


def test_a_crash_between_the_push_and_the_position_save_pushes_the_same_level_again(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 8)))
    crashing = make_worker(recorder, mappings, server, fake)

    def crash() -> None:
        raise SimulatedCrash

    crashing.before_save_hook = crash
    with pytest.raises(SimulatedCrash):
        crashing.run_once()
    assert products(fake)["101"] == (8.0, 0.0) and read_position(recorder, "bitrix") == 0
    crashing.release_lease()
    record(event(SALE, "shop-1", ("SKU-1", 2)))

    restarted = make_worker(recorder, mappings, server, fake)
    restarted.run_until_idle()

    assert products(fake)["101"] == (6.0, 0.0) and read_position(recorder, "bitrix") == 2
    assert [m for m, _ in fake.calls] == ["catalog.product.update", "catalog.product.update"]


def test_a_second_worker_does_not_push_while_the_first_holds_the_lease(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 8)))
    first = make_worker(recorder, mappings, server, fake)
    first.run_once()
    second = make_worker(recorder, mappings, server, fake)

    assert second.run_once().aborted == "another worker holds the lease"
    first.release_lease()
    assert second.run_once().aborted is None


def test_order_statuses_queued_in_the_outbox_are_set_with_sale_order_update(bitrix, recorder, mappings, site):
    fake, server = bitrix
    fake.orders["77"] = {"id": "77", "statusId": "N"}
    with transaction(recorder) as tx:
        enqueue(tx, "bitrix", "status:77", {"order_id": "77", "status_id": "P"})
        enqueue(tx, "bitrix", "status:77", {"order_id": "77", "status_id": "Q"})  # newest wins

    make_worker(recorder, mappings, server, fake).run_until_idle()

    assert fake.orders["77"]["statusId"] == "Q"
    assert [m for m, _ in fake.calls] == ["sale.order.update"]
    assert read_status(recorder)[0].outbox_pending == 0


def test_an_order_update_with_no_fields_is_refused_as_the_portal_refuses_it(bitrix):
    """sale-order-update.md: `id` and `fields` are required; missing or empty, HTTP 400 with error
    100, and an order that does not exist 200540400001. A fake that took an empty update would let
    a push that sets no status pass as done."""
    fake, server = bitrix
    fake.orders["7"] = {"id": "7", "statusId": "N"}
    http = HttpClient(server.url + fake.webhook_path, 2.0)

    alone = http.request("POST", "sale.order.update", json_body={"id": "7", "fields": {}})
    http.close()
    assert (alone.status, alone.json()["error"]) == (400, 100)
    assert alone.json()["error_description"] == "Could not find value for parameter {fields}"

    client = BitrixClient(BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0))
    answer = client.batch(
        {
            "empty": ("sale.order.update", {"id": "7", "fields": {}}),
            "missing": ("sale.order.update", {"id": "7"}),
            "no_id": ("sale.order.update", {"fields": {"statusId": "D"}}),
            "unknown": ("sale.order.update", {"id": "8", "fields": {"statusId": "D"}}),
        }
    )
    assert answer.results == {} and answer.unavailable == {}
    assert answer.errors == {
        "empty": "100: Could not find value for parameter {fields}",
        "missing": "100: Could not find value for parameter {fields}",
        "no_id": "100: Could not find value for parameter {id}",
        "unknown": "200540400001: order does not exist",
    }
    assert fake.orders["7"]["statusId"] == "N"


def test_quantities_go_out_in_the_sites_unit_rounded_down(bitrix, recorder, mappings, site, mapped, record):
    fake, server = bitrix
    fake.add_product("101")
    mapped(("bitrix", "unit", "SKU-1", "box", None, 12))
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 30)),
        event(RESERVATION, "shop-1", ("SKU-1", 12), reservation_id="r"),
    )

    make_worker(recorder, mappings, server, fake).run_until_idle()

    assert products(fake)["101"] == (1.0, 1.0)  # 18 available = 1 whole box; 12 reserved = 1 box


def test_a_full_push_sends_every_mapped_sku_even_without_changes(bitrix, recorder, mappings, site):
    fake, server = bitrix
    for pid in ("101", "103"):
        fake.add_product(pid)
    fake.add_product("102", "offer")
    fake.products["101"]["quantity"] = 99.0

    report = make_worker(recorder, mappings, server, fake).run_once(full=True)

    assert report.pushed == 3 and products(fake)["101"] == (0.0, 0.0)


def test_store_amounts_move_by_conducted_documents_and_a_repeated_push_moves_nothing(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.inventory_management = True
    fake.contractor_provider = "crm"
    fake.crm_vendors.add((4, 7))
    fake.add_product("101")
    fake.store_amounts[("101", "2")] = 9.0
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RECEIPT, "shop-2", ("SKU-1", 4)),
        event(RESERVATION, "shop-1", ("SKU-1", 3), reservation_id="r-1"),
    )
    worker = make_worker(
        recorder,
        mappings,
        server,
        fake,
        push=frozenset({"documents"}),
        receipt_supplier=Supplier("company", 7),
    )

    def crash() -> None:
        raise SimulatedCrash

    worker.before_save_hook = crash
    with pytest.raises(SimulatedCrash):
        worker.run_once()
    worker.before_save_hook = None
    worker.run_until_idle()

    assert fake.store_amounts == {("101", "1"): 7.0, ("101", "2"): 4.0}  # available per store
    conducted = [d for d in fake.documents.values() if d["status"] == "Y"]
    assert sorted(d["docType"] for d in conducted) == ["A", "D"]  # the second push found nothing to move
    assert fake.products["101"]["quantity"] == 11.0


def test_bad_webhook_credentials_stop_the_cycle_and_show_in_the_status(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 1)))
    target = BitrixTarget(
        recorder,
        mappings,
        BitrixConfig(webhook_url=server.url + "/rest/1/wrong-token/", requests_per_s=1000.0),
    )
    worker = OutboundWorker(recorder, target, dataclasses.replace(FAST, request_retries_max=1))

    assert worker.run_once().aborted
    status = read_status(recorder)[0]
    assert status.lag_events == 1 and "INVALID_CREDENTIALS" in (status.last_error or "")
    text = metrics_text(recorder).decode()
    assert 'ledger_adapter_lag_events{adapter="bitrix"} 1.0' in text
    assert 'ledger_adapter_failures_total{adapter="bitrix"} 1.0' in text


def blocked_batch() -> Reply:
    """A batch whose one command met a blocked method (429 OPERATION_TIME_LIMIT), with no reset time."""
    error = {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    return Reply(
        200,
        {
            "result": {
                "result": [],
                "result_error": {"p0": error},
                "result_total": [],
                "result_next": [],
                "result_time": {},
            },
            "time": {},
        },
    )


def parked_keys(recorder: Any) -> list[str]:
    with transaction(recorder) as tx:
        return [row["item_key"] for row in tx.fetchall("SELECT item_key FROM adapter_parked")]


def test_a_command_that_meets_the_operating_time_limit_parks_nothing_and_the_site_catches_up(
    bitrix, recorder, mappings, site, record
):
    """A blocked method answers each command of a batch with OPERATION_TIME_LIMIT: taken as the item
    refused, it was parked after retries_max attempts and the site kept selling 5 units no longer there."""
    fake, server = bitrix
    fake.add_product("101")
    record(event(RECEIPT, "shop-1", ("SKU-1", 5)))
    worker = make_worker(recorder, mappings, server, fake)
    worker.run_until_idle()
    record(event(SALE, "shop-1", ("SKU-1", 5)))  # sold out in the shop
    fake.next_replies.extend(blocked_batch() for _ in range(FAST.retries_max))

    worker.run_until_idle()

    assert products(fake)["101"] == (0.0, 0.0), "the site still sells 5 units the ledger no longer has"
    assert parked_keys(recorder) == [] and read_position(recorder, "bitrix") == 2


def test_a_blocked_method_is_pushed_again_once_bitrix_releases_it_and_other_methods_go_through(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.add_product("101")
    fake.orders["7"] = {"id": "7", "statusId": "N"}
    fake.operating_window_s = 0.5  # the block lasts half a second rather than ten minutes
    fake.charge_operating("catalog.product.update", fake.operating_limit_s + 1)  # other applications
    record(event(RECEIPT, "shop-1", ("SKU-1", 5)))
    with transaction(recorder) as tx:
        enqueue(tx, "bitrix", "status:7", {"order_id": "7", "status_id": "D", "wms_status": "SHIPPED"})
    worker = make_worker(recorder, mappings, server, fake)

    # The worker's own backoff (FAST: at most 0.05 s, 4 attempts) is over long before the block is:
    # only waiting for the answer's operating_reset_at gets the level through in this one cycle.
    report = worker.run_once()

    assert report.aborted is None and report.pushed == 2 and parked_keys(recorder) == []
    assert products(fake)["101"] == (5.0, 0.0) and fake.orders["7"]["statusId"] == "D"
    assert [m for m, _ in fake.calls].count("sale.order.update") == 1  # not set again with the retry


def test_a_call_of_a_blocked_method_waits_until_bitrix_releases_part_of_its_limit(bitrix):
    fake, server = bitrix
    fake.charge_operating("catalog.document.mode.status", fake.operating_limit_s + 1)
    client = BitrixClient(BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0))

    with pytest.raises(TargetUnavailable) as blocked:
        client.call("catalog.document.mode.status", {})

    assert "OPERATION_TIME_LIMIT" in str(blocked.value)
    # Not the ordinary backoff of a few seconds, which would only meet the block again.
    retry_after_s = blocked.value.retry_after_s
    assert (
        retry_after_s is not None and fake.operating_window_s - 5 < retry_after_s <= fake.operating_window_s
    )


def test_a_blocked_document_method_parks_no_line_and_the_stores_move_once_it_is_released(
    bitrix, recorder, mappings, site, record
):
    fake, server = bitrix
    fake.inventory_management = True
    fake.add_product("101")
    fake.store_amounts[("101", "2")] = 9.0
    fake.operating_window_s = 0.5
    fake.charge_operating("catalog.document.conduct", fake.operating_limit_s + 1)
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)), event(RECEIPT, "shop-2", ("SKU-1", 4)))
    worker = make_worker(recorder, mappings, server, fake, push=frozenset({"documents"}))

    report = worker.run_once()

    assert report.aborted is None and parked_keys(recorder) == []
    assert fake.store_amounts == {("101", "1"): 10.0, ("101", "2"): 4.0}
    conducted = [d for d in fake.documents.values() if d["status"] == "Y"]
    assert sorted(d["docType"] for d in conducted) == ["A", "D"]  # the drafts left blocked moved nothing
