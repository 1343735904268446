"""The WMS loop on both databases: reconciliation against GET /api/v1/stock that never destroys,
marking codes sent with the picking order and read back on shipment (seed 002, CONTRACT §10), and
transfers into a WMS warehouse expected there and received when it counts them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from conftest import BOTH_DATABASES, FAST, either_database, event
from ledger_stand_ins import RefusingLedger

from adapters import masking
from adapters.db import transaction
from adapters.mappings import MappingError
from adapters.outbound import OutboundWorker, SimulatedCrash
from adapters.reconcile import make_report
from adapters.reconcile_apply import ApplyLimits, apply_report
from adapters.reconcile_runs import save_report
from adapters.sink import LedgerSink
from adapters.snapshots import UnreadStores
from adapters.wms import WmsClient, WmsConfig, WmsPickingTarget
from adapters.wms_inbound import WmsArrivals, WmsInboundTarget
from adapters.wms_statuses import WmsStatusProcessor
from adapters.wms_stock import StockReadRefused, read_wms_snapshot
from devtools.fakes.wms import STOCK_PER_PAGE_MAX
from ledger.cli import main
from ledger.domain.model import EventType, Line, StockEvent
from ledger.projections.queries import HistoryFilter

RECEIPT, RESERVATION = EventType.RECEIPT, EventType.RESERVATION
LIMITS = ApplyLimits(line_units_max=100, changed_share_max=0.5, share_min_skus=20)
CIS = [f"0104601234567890215AB{n:03d}" for n in range(10)]  # Честный знак codes
SSCC = "003456789012345678"


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def warehouse(wms: Any, mapped: Any) -> Any:
    mapped(
        ("wms", "store", "shop-1", "main"),
        ("wms", "sku", "SKU-1", "ART-1"),
        ("wms", "status", "SHIPPED", "D", "ship"),
    )
    return wms


def client_for(server: Any, **limits: Any) -> WmsClient:
    return WmsClient(
        WmsConfig(server.url + "/", "fake-wms-key", requests_per_s=1000, timeout_s=2.0, **limits)
    )


def on_hand(ledger: Any, store: str, *skus: str) -> dict[str, int]:
    ledger.refresh()
    return {v.sku: v.level.on_hand_units for v in ledger.levels(store, list(skus))}


def report_lines(report: Any) -> list[tuple[str, int, int]]:
    return [(d.sku, d.ledger_units, d.external_units) for d in report.discrepancies]


# -- reconciliation --------------------------------------------------------------------------------


def test_a_fully_reserved_and_picked_item_is_read_as_its_on_hand_not_left_out(
    warehouse, recorder, mappings, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-1", ("SKU-1", 12), ("SKU-2", 4)))
    fake.put_stock("main", "ART-1", on_hand=12, reserved=8, in_picking=4)  # available 0
    fake.put_stock("main", "SKU-2", on_hand=3, reserved=1)

    snapshot = read_wms_snapshot(client_for(server), mappings)

    assert snapshot.on_hand == {("shop-1", "SKU-1"): 12, ("shop-1", "SKU-2"): 3}
    report = make_report(recorder, snapshot, run_id="w-1")
    assert report_lines(report) == [("SKU-2", 4, 3)]  # SKU-1 agrees: nothing to change


def test_the_fake_leaves_out_rows_with_nothing_available_unless_told_not_to(warehouse):
    fake, server = warehouse
    fake.put_stock("main", "ART-1", on_hand=5, reserved=5)
    client = client_for(server)
    asked = client.request("GET", "api/v1/stock", params={"warehouse": "main", "available_only": "true"})
    assert asked.json()["items"] == [] and asked.json()["total"] == 0
    # Unsent, it hides them too (the default that hides the most: no document gives it).
    default = client.request("GET", "api/v1/stock", params={"warehouse": "main"})
    assert default.json()["items"] == []
    unhidden = {"warehouse": "main", "available_only": "false"}
    everything = client.request("GET", "api/v1/stock", params=unhidden)
    assert [row["sku"] for row in everything.json()["items"]] == ["ART-1"]
    too_big = {"warehouse": "main", "per_page": str(STOCK_PER_PAGE_MAX + 1)}
    assert client.request("GET", "api/v1/stock", params=too_big).status == 422
    assert client.request("GET", "api/v1/stock", params={}).status == 422
    assert client.request("GET", "api/v1/stock", params={"warehouse": "nowhere"}).status == 404


def test_the_whole_report_is_read_page_by_page_and_zones_are_summed(warehouse, mappings):
    fake, server = warehouse
    for n in range(7):
        fake.put_stock("main", f"SKU-{n + 10}", on_hand=n, zone="A")
    fake.put_stock("main", "SKU-10", on_hand=5, zone="B")

    snapshot = read_wms_snapshot(client_for(server, stock_per_page=3), mappings)

    assert fake.stock_requests == 3  # 8 rows, 3 a page
    assert snapshot.on_hand[("shop-1", "SKU-10")] == 0 + 5
    assert len(snapshot.on_hand) == 7
    with pytest.raises(
        StockReadRefused, match="more than 2 pages of 3 rows: raise LEDGER_WMS_STOCK_PAGES_MAX"
    ):
        read_wms_snapshot(client_for(server, stock_per_page=3, stock_pages_max=2), mappings)


def test_a_report_that_moves_while_it_is_paged_is_refused_not_read_short(warehouse, mappings, monkeypatch):
    fake, server = warehouse
    for n in range(6):
        fake.put_stock("main", f"SKU-{n + 10}", on_hand=1)
    original = fake._stock

    def moving(query: dict[str, list[str]]) -> Any:
        reply = original(query)
        if query.get("page") == ["1"]:
            fake.stock.pop(("main", "SKU-10", "A"))  # the first row leaves: page 2 starts one later
        return reply

    monkeypatch.setattr(fake, "_stock", moving)
    with pytest.raises(StockReadRefused, match="changed while it was read"):
        read_wms_snapshot(client_for(server, stock_per_page=3), mappings)


def test_what_the_wms_does_not_list_or_lists_untrusted_is_never_zeroed(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5), ("SKU-3", 7), ("SKU-4", 2)))
    fake.put_stock("main", "ART-1", on_hand=9)
    fake.put_stock("main", "SKU-3", on_hand=0)
    fake.stock[("main", "SKU-3", "A")]["available"] = 5  # not on_hand - reserved - in_picking
    fake.put_stock("main", "SKU-4", on_hand=2, zone="A")
    fake.put_stock("main", "SKU-4", on_hand=-1, zone="B")  # a bin gone negative counts in the sum

    snapshot = read_wms_snapshot(client_for(server), mappings)
    report = make_report(recorder, snapshot, run_id="w-partial", stores=["shop-1"])
    assert report_lines(report) == [("SKU-1", 10, 9), ("SKU-4", 2, 1)]
    assert {(u.sku, u.ledger_units) for u in report.untouched} == {("SKU-2", 5), ("SKU-3", 7)}
    assert "1 SKU(s) left out" in report.description

    complete = make_report(recorder, snapshot.absent_as_zero(["shop-1"]), run_id="w-all", stores=["shop-1"])
    assert report_lines(complete) == [
        ("SKU-1", 10, 9),
        ("SKU-2", 5, 0),
        ("SKU-4", 2, 1),
    ]  # SKU-3: still unknown
    save_report(recorder, report)
    assert apply_report(recorder, report, LedgerSink(ledger), LIMITS) == 1
    assert on_hand(ledger, "shop-1", "SKU-1", "SKU-2", "SKU-3", "SKU-4") == {
        "SKU-1": 9,
        "SKU-2": 5,
        "SKU-3": 7,
        "SKU-4": 1,
    }


def test_a_wms_article_mapped_from_two_ledger_skus_is_refused_and_not_reconciled_into_one_of_them(
    warehouse, recorder, mappings, mapped, record
):
    """The stock report is read back by article, which maps back to one SKU (the last row): 10 + 5
    in the ledger and 15 in the WMS moved one SKU to 15 and kept the other's 5 (20 out of 15), or,
    absent as zero, zeroed the other."""
    fake, server = warehouse
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-X", 5)))
    fake.put_stock("main", "ART-1", on_hand=15)
    shared = r"wms sku ART-1 is mapped from 2 ledger skus \(SKU-1, SKU-X\)"

    with pytest.raises(MappingError, match=shared + ".*nothing loaded"):
        mapped(("wms", "store", "shop-2", "second"), ("wms", "sku", "SKU-X", "ART-1"))
    assert mappings.external("wms", "store", "shop-2") is None  # nothing of it is kept
    assert sorted(mappings.all("wms", "sku")) == ["SKU-1"]

    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('wms', 'sku', 'SKU-X', 'ART-1', NULL, '2026-12-01T00:00:00Z')"
        )
    with pytest.raises(MappingError, match=shared):
        read_wms_snapshot(client_for(server), mappings)


def test_an_unmapped_sku_named_as_another_skus_article_is_not_reconciled_into_that_sku(
    warehouse, recorder, mappings, mapped, record
):
    """SKU-2 has no wms,sku row, so its picking orders went out as article SKU-2; SKU-3 was mapped
    to the article SKU-2 (loaded before SKU-2 was in the ledger). The WMS's row of article SKU-2
    was read back as SKU-3's: SKU-3 moved to SKU-2's count and SKU-2, vouched complete, to 0.
    Neither is compared until a mapping says which is which."""
    fake, server = warehouse
    mapped(("wms", "sku", "SKU-3", "SKU-2"))
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5), ("SKU-3", 7)))
    fake.put_stock("main", "ART-1", on_hand=9)
    fake.put_stock("main", "SKU-2", on_hand=5)

    snapshot = read_wms_snapshot(client_for(server), mappings)
    report = make_report(recorder, snapshot, run_id="w-collide", stores=["shop-1"])
    complete = make_report(
        recorder, snapshot.absent_as_zero(["shop-1"]), run_id="w-collide-all", stores=["shop-1"]
    )

    assert report_lines(report) == [("SKU-1", 10, 9)]
    assert report_lines(complete) == [("SKU-1", 10, 9)]  # SKU-2 and SKU-3: unknown, never zeroed
    assert {("shop-1", "SKU-2"), ("shop-1", "SKU-3")} <= snapshot.unknown
    assert "2 SKU(s) left out" in report.description


def test_a_receipt_of_an_article_that_is_also_an_unmapped_skus_name_is_held_with_an_alert(
    warehouse, recorder, mappings, mapped, ledger, record
):
    """SKU-2 has no wms,sku row, so its expected receipt went out as article SKU-2; then SKU-3 was
    mapped to the article SKU-2. Counted in, article SKU-2 was recorded as SKU-3's, a surplus of a
    SKU the transfer never sent, and SKU-2's units stayed incoming."""
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-2", 10)), transfer("shop-9", "shop-1", "T-6", ("SKU-2", 2)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    expected = fake.inbound_by_external("shop-1:T-6")
    assert expected is not None and expected["lines"][0]["sku"] == "SKU-2"
    fake.receive(expected["id"], {"SKU-2": 2})
    mapped(("wms", "sku", "SKU-3", "SKU-2"))  # loaded after the receipt was expected
    arrivals = WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server))

    assert arrivals.poll() == 0  # left open, with an alert naming the collision
    assert levels_of(ledger, "shop-1", "SKU-3") == (0, 0)
    assert levels_of(ledger, "shop-1", "SKU-2") == (0, 2)
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
        tx.execute("DELETE FROM adapter_mappings WHERE local_id = 'SKU-3'")  # put right
    assert "wms article SKU-2 is the mapped article of ledger sku SKU-3" in alert["detail"]
    assert arrivals.poll() == 1
    assert levels_of(ledger, "shop-1", "SKU-2") == (2, 0)


def wms_command_env(monkeypatch: Any, database_url: str, server: Any) -> None:
    """What `ledger reconcile --source wms` reads from the environment, for the fake WMS."""
    # The command remembers the database URL's user as a secret for the rest of the process; on
    # PostgreSQL that is `postgres`, which would mask other modules' `postgresql://` afterwards.
    monkeypatch.setattr(masking._KNOWN, "values", masking._KNOWN.values)
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_WMS_BASE_URL", server.url + "/")
    monkeypatch.setenv("LEDGER_WMS_API_KEY", "fake-wms-key")


def test_the_command_reads_the_wms_reports_first_and_applies_the_reviewed_run(
    tmp_path, monkeypatch, database_url, warehouse, ledger, record, capsys
):
    fake, server = warehouse
    wms_command_env(monkeypatch, database_url, server)
    monkeypatch.setenv("LEDGER_WMS_STOCK_PER_PAGE", "2")
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5), ("SKU-3", 1)))
    fake.put_stock("main", "ART-1", on_hand=8, reserved=2)
    fake.put_stock("main", "SKU-3", on_hand=1)
    out = tmp_path / "out"

    command = ["reconcile", "--source", "wms", "--out-dir", str(out), "--quiet", "--run-id", "wms-1"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "shop-1       SKU-1                  10         8       -2" in printed
    assert "not in the snapshot, left untouched: shop-1/SKU-2 (5)" in printed
    assert on_hand(ledger, "shop-1", "SKU-1") == {"SKU-1": 10}  # a report changes nothing
    assert json.loads((out / "reconcile-wms-wms-1.json").read_text())["source"] == "wms"
    assert main(["reconcile", "--apply", "wms-1"]) == 0
    assert main(["reconcile", "--apply", "wms-1"]) == 0
    assert on_hand(ledger, "shop-1", "SKU-1", "SKU-2", "SKU-3") == {"SKU-1": 8, "SKU-2": 5, "SKU-3": 1}

    fake.put_stock("main", "SKU-3", on_hand=900)  # past the 100-unit limit: --force, after review
    assert main([*command[:-1], "wms-2"]) == 0
    capsys.readouterr()
    assert main(["reconcile", "--apply", "wms-2"]) == 2
    assert on_hand(ledger, "shop-1", "SKU-3") == {"SKU-3": 1}
    monkeypatch.setenv("LEDGER_WMS_API_KEY", "wrong")
    assert main([*command[:-1], "wms-3"]) == 2
    assert "reading the WMS's stock failed" in capsys.readouterr().err


def test_absent_as_zero_is_refused_for_a_store_the_wms_was_not_read_for(
    tmp_path, monkeypatch, database_url, warehouse, ledger, record, mappings, capsys
):
    """shop-9 is mapped to no warehouse: --store shop-9 --absent-as-zero zeroed its stock, under
    the limits that ask for --force (two small lines)."""
    fake, server = warehouse
    wms_command_env(monkeypatch, database_url, server)
    record(event(RECEIPT, "shop-9", ("SKU-1", 40), ("SKU-2", 60)))
    fake.put_stock("main", "ART-1", on_hand=3)
    snapshot = read_wms_snapshot(client_for(server), mappings)
    with pytest.raises(UnreadStores, match=r"not read for store\(s\) shop-9"):
        snapshot.absent_as_zero(["shop-1", "shop-9"])
    command = ["reconcile", "--source", "wms", "--store", "shop-9", "--absent-as-zero", "--quiet"]
    assert main([*command, "--out-dir", str(tmp_path / "out")]) == 2
    assert "--absent-as-zero: the wms snapshot was not read for store(s) shop-9" in capsys.readouterr().err
    assert on_hand(ledger, "shop-9", "SKU-1", "SKU-2") == {"SKU-1": 40, "SKU-2": 60}
    assert not (tmp_path / "out").exists()  # no report made


# -- marking codes ------------------------------------------------------------------------------------


def reservation_with_codes(store: str, reservation_id: str, *lines: Line, order_id: str) -> StockEvent:
    return dataclasses.replace(
        event(RESERVATION, store, reservation_id=reservation_id, order_id=order_id), lines=lines
    )


def test_the_picking_order_carries_the_codes_and_the_shipment_keeps_those_the_wms_used(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        reservation_with_codes(
            "shop-1", "r-1", Line("SKU-1", 3, tuple(CIS[:3])), Line("SKU-2", 1, (SSCC,)), order_id="B-1"
        ),
    )
    OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    order = fake.by_external("shop-1:r-1:default")
    assert order is not None
    assert order["lines"] == [
        {"sku": "ART-1", "qty": 3, "uom": "unit", "codes": CIS[:3]},
        {"sku": "SKU-2", "qty": 1, "uom": "unit", "codes": [SSCC]},
    ]
    # The picker could not find CIS[1] and took CIS[5] instead; the WMS reports what it used.
    fake.scanned_codes[order["id"]] = {"ART-1": [CIS[0], CIS[5], CIS[2]]}
    fake.set_status(order["id"], "SHIPPED")
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))

    processor.handle_delivery({"id": order["id"], "status": "SHIPPED"})
    processor.apply(order["id"], "SHIPPED")  # redelivered: recorded once

    shipped = ledger.history(HistoryFilter("shop-1", type="stock.shipment"), 10)
    assert [(row["sku"], json.loads(row["codes"] or "null")) for row in shipped] == [
        ("SKU-1", [CIS[0], CIS[5], CIS[2]]),
        ("SKU-2", [SSCC]),  # used as sent
    ]
    found = ledger.history(HistoryFilter("shop-1", code=CIS[5]), 10)
    assert [(row["type"], row["sku"], row["order_id"]) for row in found] == [
        ("stock.shipment", "SKU-1", "B-1")
    ]
    assert on_hand(ledger, "shop-1", "SKU-1") == {"SKU-1": 7}


def test_codes_used_for_an_article_are_kept_on_the_sku_the_order_sent_under_it(
    warehouse, recorder, mappings, mapped, ledger, record
):
    """SKU-2 (no wms,sku row) went out as article SKU-2; SKU-3 was mapped to that article after the
    order was sent. The codes the WMS used for article SKU-2 were read back as SKU-3's, which the
    order does not hold: SKU-2's shipment was recorded without them. The order's own lines say
    which SKU went under an article."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10)),
        reservation_with_codes("shop-1", "r-7", Line("SKU-2", 1, (SSCC,)), order_id="B-7"),
    )
    OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    order = fake.by_external("shop-1:r-7:default")
    assert order is not None and order["lines"][0]["sku"] == "SKU-2"
    mapped(("wms", "sku", "SKU-3", "SKU-2"))
    fake.set_status(order["id"], "SHIPPED")

    WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server)).handle_delivery(
        {"id": order["id"], "status": "SHIPPED"}
    )

    shipped = ledger.history(HistoryFilter("shop-1", type="stock.shipment"), 10)
    assert [(row["sku"], json.loads(row["codes"] or "null")) for row in shipped] == [("SKU-2", [SSCC])]


def test_codes_the_ledger_would_refuse_are_left_off_the_shipment_with_an_alert(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        reservation_with_codes("shop-1", "r-2", Line("SKU-1", 2, tuple(CIS[:2])), order_id="B-2"),
    )
    OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    order = fake.by_external("shop-1:r-2:default")
    assert order is not None
    fake.scanned_codes[order["id"]] = {"ART-1": [CIS[0], CIS[0], "tab\tcode", CIS[1], CIS[7]]}
    fake.set_status(order["id"], "SHIPPED")

    WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server)).apply(
        order["id"], "SHIPPED"
    )

    [shipped] = ledger.history(HistoryFilter("shop-1", type="stock.shipment"), 10)
    assert json.loads(shipped["codes"]) == [CIS[0], CIS[1]]  # the shipment is recorded all the same
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
    assert "reported twice" in alert["detail"] and "is not a marking code" in alert["detail"]
    assert f"{CIS[7]} is beyond the 2 unit(s) shipped" in alert["detail"]


def test_the_fake_wms_refuses_codes_it_cannot_pick(warehouse):
    _, server = warehouse
    client = client_for(server)
    base = {"external_id": "x-1", "customer_order_id": "o", "warehouse": "main", "zone": "A"}
    for line in (
        {"sku": "A", "qty": 1, "uom": "unit", "codes": ["c1", "c2"]},  # more codes than units
        {"sku": "A", "qty": 1, "uom": "box", "codes": ["c1"]},  # codes on a line of boxes
        {"sku": "A", "qty": 2, "uom": "unit", "codes": ["c1", "c1"]},
        {"sku": "A", "qty": 1, "uom": "unit", "codes": ["c\u00e9"]},
    ):
        assert client.request("POST", "api/v1/orders", json_body={**base, "lines": [line]}).status == 422


# -- transfers into a WMS warehouse -------------------------------------------------------------------


def transfer(store: str, to_store: str, transfer_id: str, *pairs: tuple[str, int]) -> StockEvent:
    return event(EventType.TRANSFER, store, *pairs, to_store=to_store, transfer_id=transfer_id)


def levels_of(ledger: Any, store: str, sku: str) -> tuple[int, int]:
    ledger.refresh()
    [view] = ledger.levels(store, [sku])
    return view.level.on_hand_units, view.level.incoming_units


def test_a_transfer_into_the_warehouse_is_expected_there_once_and_received_when_the_wms_counts_it(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10), ("SKU-2", 4)))
    record(transfer("shop-9", "shop-1", "T-1", ("SKU-1", 6), ("SKU-2", 4)))
    record(transfer("shop-9", "other-store", "T-2", ("SKU-1", 1)))  # not a WMS warehouse: not pushed
    assert levels_of(ledger, "shop-1", "SKU-1") == (0, 6)
    worker = OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST)

    def crash() -> None:
        raise SimulatedCrash

    worker.before_save_hook = crash  # the push reached the WMS, its position was not saved
    with pytest.raises(SimulatedCrash):
        worker.run_once()
    worker.before_save_hook = None
    worker.run_until_idle()

    assert fake.inbound_posts == 2  # the push before the crash, and the retry
    assert len(fake.inbound) == 1  # the retried push found it by external_id
    with transaction(recorder) as tx:
        [row] = tx.fetchall("SELECT wms_inbound_id FROM adapter_wms_inbound WHERE transfer_id = 'T-1'")
    expected = fake.inbound_by_external("shop-1:T-1")
    assert expected is not None and row["wms_inbound_id"] == expected["id"]
    assert (expected["warehouse"], expected["transfer_id"], expected["from"]) == ("main", "T-1", "shop-9")
    assert expected["lines"] == [
        {"sku": "ART-1", "qty": 6, "uom": "unit"},
        {"sku": "SKU-2", "qty": 4, "uom": "unit"},
    ]
    arrivals = WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server))
    assert arrivals.poll() == 0  # not arrived yet: nothing recorded
    assert levels_of(ledger, "shop-1", "SKU-1") == (0, 6)

    fake.receive(expected["id"], {"ART-1": 5})  # one unit short at the dock
    assert arrivals.poll() == 1
    assert arrivals.poll() == 0  # final: not read again

    assert levels_of(ledger, "shop-1", "SKU-1") == (5, 1)  # the missing unit stays incoming
    assert levels_of(ledger, "shop-1", "SKU-2") == (4, 0)
    [receipt] = ledger.history(HistoryFilter("shop-1", type="stock.receipt", sku="SKU-1"), 10)
    assert (receipt["transfer_id"], receipt["principal"]) == ("T-1", "adapters/wms")


def test_more_counted_than_the_transfer_sent_is_on_hand_and_leaves_incoming_at_zero(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10)), transfer("shop-9", "shop-1", "T-4", ("SKU-1", 2)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    expected = fake.inbound_by_external("shop-1:T-4")
    assert expected is not None
    fake.receive(expected["id"], {"ART-1": 5})  # three more than were sent

    assert WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server)).poll() == 1

    assert levels_of(ledger, "shop-1", "SKU-1") == (5, 0)
    receipts = ledger.history(HistoryFilter("shop-1", type="stock.receipt", sku="SKU-1"), 10)
    assert {(r["transfer_id"], r["on_hand_delta"]) for r in receipts} == {("T-4", 2), (None, 3)}


def test_expected_receipts_left_open_do_not_keep_the_others_from_being_read(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10)))
    for number in range(3):
        record(transfer("shop-9", "shop-1", f"T-open-{number}", ("SKU-1", 1)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    last = fake.inbound_by_external("shop-1:T-open-2")
    assert last is not None
    fake.receive(last["id"])  # only the newest arrived; the two before it stay expected
    arrivals = WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server), poll_max=2)

    assert [arrivals.poll() for _ in range(2)] == [0, 1]
    assert levels_of(ledger, "shop-1", "SKU-1") == (1, 2)


def test_a_receipt_the_ledger_refuses_is_alerted_once_and_keeps_no_other_from_being_recorded(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10)))
    for name in ("T-refused", "T-fine"):
        record(transfer("shop-9", "shop-1", name, ("SKU-1", 1)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    for name in ("T-refused", "T-fine"):
        arrived = fake.inbound_by_external(f"shop-1:{name}")
        assert arrived is not None
        fake.receive(arrived["id"])
    refusing = [True]
    ledger_refusing = RefusingLedger(ledger, lambda e: refusing[0] and e.transfer_id == "T-refused")
    arrivals = WmsArrivals(recorder, mappings, LedgerSink(ledger_refusing), client_for(server))

    assert [arrivals.poll(), arrivals.poll()] == [1, 0]  # the other, recorded; the refused one, open
    assert levels_of(ledger, "shop-1", "SKU-1") == (1, 1)
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")  # said once
    assert "refused by the ledger" in alert["detail"] and "invalid" in alert["detail"]
    refusing[0] = False  # put right (a mapping, say): the next poll records it
    assert arrivals.poll() == 1
    assert levels_of(ledger, "shop-1", "SKU-1") == (2, 0)


def test_a_receipt_of_an_article_mapped_from_two_ledger_skus_is_not_recorded_into_one_of_them(
    warehouse, recorder, mappings, ledger, record
):
    """Mapped before loading refused it (an older database): the units counted of ART-1 went to
    whichever SKU its last row named, as a surplus of a SKU the transfer never sent."""
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10)), transfer("shop-9", "shop-1", "T-5", ("SKU-1", 2)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    expected = fake.inbound_by_external("shop-1:T-5")
    assert expected is not None
    fake.receive(expected["id"], {"ART-1": 2})
    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('wms', 'sku', 'SKU-X', 'ART-1', NULL, '2026-12-01T00:00:00Z')"
        )
    arrivals = WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server))

    assert arrivals.poll() == 0  # left open, with an alert naming the mapping
    assert levels_of(ledger, "shop-1", "SKU-1") == (0, 2)
    assert levels_of(ledger, "shop-1", "SKU-X") == (0, 0)
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
        tx.execute("DELETE FROM adapter_mappings WHERE local_id = 'SKU-X'")  # put right
    assert "wms sku ART-1 is mapped from 2 ledger skus (SKU-1, SKU-X)" in alert["detail"]
    assert arrivals.poll() == 1
    assert levels_of(ledger, "shop-1", "SKU-1") == (2, 0)


def test_a_cancelled_expected_receipt_records_nothing_and_raises_an_alert(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(event(RECEIPT, "shop-9", ("SKU-1", 10)), transfer("shop-9", "shop-1", "T-3", ("SKU-1", 2)))
    OutboundWorker(recorder, WmsInboundTarget(recorder, mappings, client_for(server)), FAST).run_until_idle()
    expected = fake.inbound_by_external("shop-1:T-3")
    assert expected is not None
    expected["status"] = "CANCELLED"

    assert WmsArrivals(recorder, mappings, LedgerSink(ledger), client_for(server)).poll() == 1

    assert levels_of(ledger, "shop-1", "SKU-1") == (0, 2)
    with transaction(recorder) as tx:
        [alert] = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
    assert "T-3" in alert["detail"] and "stay incoming" in alert["detail"]
