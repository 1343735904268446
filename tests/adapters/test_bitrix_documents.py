"""Bitrix inventory documents as the portal expects them: receipts with a supplier, documented filters."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import FAST, event

import adapters.bitrix
from adapters.bitrix import BitrixConfig, BitrixTarget, Supplier
from adapters.bitrix_client import BitrixClient
from adapters.db import transaction
from adapters.outbound import OutboundWorker
from devtools.fakes.bitrix import CommandError
from ledger.domain.model import EventType

RECEIPT = EventType.RECEIPT


@pytest.fixture
def portal(bitrix: Any, mapped: Any) -> Any:
    fake, _ = bitrix
    fake.inventory_management = True
    fake.add_product("101")
    mapped(("bitrix", "store", "shop-1", "1"), ("bitrix", "sku", "SKU-1", "101", "product"))
    return bitrix


def documents_worker(recorder: Any, mappings: Any, portal: Any, supplier: Supplier) -> OutboundWorker:
    fake, server = portal
    config = BitrixConfig(
        webhook_url=server.url + fake.webhook_path,
        push=frozenset({"documents"}),
        burst_requests_max=1000,
        requests_per_s=1000.0,
        receipt_supplier=supplier,
    )
    return OutboundWorker(recorder, BitrixTarget(recorder, mappings, config), FAST)


def receipts(fake: Any) -> list[dict[str, Any]]:
    return [d for d in fake.documents.values() if d["docType"] == "A"]


def test_a_receipt_on_a_bitrix24_portal_is_bound_to_the_configured_crm_vendor(
    portal, recorder, mappings, record
):
    fake, _ = portal
    fake.contractor_provider = "crm"
    fake.crm_vendors.add((4, 12))
    record(event(RECEIPT, "shop-1", ("SKU-1", 6)))

    documents_worker(recorder, mappings, portal, Supplier("company", 12)).run_until_idle()

    (receipt,) = receipts(fake)
    assert (receipt["status"], receipt["crm_vendors"]) == ("Y", [(4, 12)])
    assert fake.store_amounts[("101", "1")] == 6.0


def test_a_receipt_on_a_site_management_portal_names_the_default_contractor(
    portal, recorder, mappings, record
):
    fake, _ = portal  # the fake's default: a site-management portal where contractor 1 exists
    record(event(RECEIPT, "shop-1", ("SKU-1", 6)))

    documents_worker(recorder, mappings, portal, Supplier.parse("contractor:1")).run_until_idle()

    (receipt,) = receipts(fake)
    assert (receipt["status"], receipt["contractorId"]) == ("Y", 1)


def test_a_receipt_without_a_supplier_the_portal_knows_is_refused_and_parked_with_its_reason(
    portal, recorder, mappings, record
):
    fake, _ = portal
    fake.contractor_provider = "crm"  # a Bitrix24 portal: contractorId names no supplier there
    record(event(RECEIPT, "shop-1", ("SKU-1", 6)))

    reports = documents_worker(recorder, mappings, portal, Supplier("contractor", 1)).run_until_idle()

    assert [r.parked_keys for r in reports if r.parked_keys] == [["sku:SKU-1"]]
    assert fake.store_amounts == {} and [r["status"] for r in receipts(fake)] == ["N"] * FAST.retries_max
    with transaction(recorder) as tx:
        (parked,) = tx.fetchall("SELECT reason FROM adapter_parked")
    assert "Supplier not specified" in parked["reason"]


def test_store_amounts_are_read_with_the_documented_in_filter_and_a_bare_array_is_refused(portal):
    fake, server = portal
    fake.store_amounts.update({("101", "1"): 3.0, ("101", "2"): 4.0, ("102", "1"): 5.0})
    client = BitrixClient(BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0))

    answer = client.batch(
        {
            "in": ("catalog.storeproduct.list", {"filter": {"@productId": ["101"], "@storeId": ["1", "2"]}}),
            "bare": ("catalog.storeproduct.list", {"filter": {"productId": ["101"]}}),
        }
    )

    assert [row["amount"] for row in answer.results["in"]["storeProducts"]] == [3.0, 4.0]
    assert answer.totals["in"] == 2
    assert "needs the @ (IN) prefix" in answer.errors["bare"]


def test_a_list_longer_than_its_page_stops_the_push_instead_of_moving_by_a_wrong_difference(
    portal, recorder, mappings, record, monkeypatch
):
    fake, _ = portal
    fake.contractor_provider = "crm"
    fake.crm_vendors.add((4, 12))
    fake.stores.update(str(n) for n in range(1, 61))
    fake.store_amounts.update({("101", str(n)): 1.0 for n in range(1, 61)})
    record(event(RECEIPT, "shop-1", ("SKU-1", 6)))
    monkeypatch.setattr(adapters.bitrix, "STORE_PRODUCT_PAGE", 100)  # ask for more than a page holds
    target_stores = {str(n): str(n) for n in range(1, 61)}
    worker = documents_worker(recorder, mappings, portal, Supplier("company", 12))
    monkeypatch.setattr(worker.target, "_stores", lambda: {"shop-1": "1", **target_stores})

    report = worker.run_once()

    assert report.aborted and "60 rows, 50 read" in report.aborted
    assert fake.documents == {}


def test_the_portals_inventory_mode_is_checked_at_start_and_a_mismatch_raises_an_alert(
    portal, recorder, mappings, caplog
):
    fake, server = portal
    product_push = BitrixTarget(
        recorder, mappings, BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0)
    )

    with caplog.at_level(logging.INFO, logger="adapters.bitrix"):
        assert product_push.check_mode() == "Y"

    assert "inventory management (catalog.document.mode.status) is on" in caplog.text
    with transaction(recorder) as tx:
        (alert,) = tx.fetchall("SELECT adapter, detail FROM adapter_journal WHERE kind = 'alert'")
    assert alert["adapter"] == "bitrix" and "LEDGER_BITRIX_PUSH=documents" in alert["detail"]


def test_a_write_off_that_keeps_failing_leaves_the_site_showing_no_more_than_it_did(
    portal, recorder, mappings, mapped, record, monkeypatch
):
    """Receipts went first: SKU-1 sold 6 at shop-1 and received 3 at shop-2, the receipt at store 2
    was conducted and the write-off at store 1 refused, so the site showed 13 where the ledger held
    7 (and the push was retried, each time refused the same way). Write-offs go first now, and an
    item whose write-off is refused moves no store up: the site keeps its 10 until it can show 7."""
    fake, _ = portal
    mapped(("bitrix", "store", "shop-2", "2"))
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    worker = documents_worker(recorder, mappings, portal, Supplier("contractor", 1))
    worker.run_until_idle()
    assert fake.products["101"]["quantity"] == 10

    conduct = fake._conduct

    def refusing_write_offs(params: Any) -> Any:
        if fake.documents[int(params["id"])]["docType"] == "D":
            raise CommandError("0", "Document conducting error: write-offs refused here")
        return conduct(params)

    monkeypatch.setattr(fake, "_conduct", refusing_write_offs)
    record(event(EventType.SALE, "shop-1", ("SKU-1", 6)), event(RECEIPT, "shop-2", ("SKU-1", 3)))
    reports = worker.run_until_idle()

    assert [r.parked_keys for r in reports if r.parked_keys] == [["sku:SKU-1"]]
    assert fake.store_amounts.get(("101", "2"), 0.0) == 0.0  # no receipt while the write-off fails
    assert fake.products["101"]["quantity"] == 10  # never more than it showed, nor than the ledger's 7
