"""The Inflow-style WMS: picking orders per zone from reservations, statuses through the status table."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import FAST, event

from adapters.db import transaction
from adapters.httpserver import Reply
from adapters.inbound import InboxWorker, store_delivery
from adapters.outbound import OutboundWorker, SimulatedCrash, TargetUnavailable, read_position
from adapters.sink import LedgerSink
from adapters.status import metrics_text, read_status
from adapters.wms import WmsClient, WmsConfig, WmsPickingTarget
from adapters.wms_statuses import WmsStatusProcessor
from ledger.domain.model import EventType
from ledger.projections.queries import HistoryFilter

RECEIPT, RESERVATION, RELEASE = EventType.RECEIPT, EventType.RESERVATION, EventType.RESERVATION_RELEASE


@pytest.fixture
def warehouse(wms: Any, mapped: Any) -> Any:
    mapped(
        ("wms", "store", "shop-1", "main"),
        ("wms", "zone", "SKU-1", "A"),
        ("wms", "zone", "SKU-2", "B"),
        ("wms", "zone", "SKU-3", "A"),
        ("wms", "sku", "SKU-1", "ART-1"),
        ("wms", "status", "PICKING", "Q"),
        ("wms", "status", "SHIPPED", "D", "ship"),
        ("wms", "status", "PICKING_ERROR", "PE", "release"),
    )
    return wms


def client_for(server: Any) -> WmsClient:
    return WmsClient(WmsConfig(server.url + "/", "fake-wms-key", requests_per_s=1000, timeout_s=2.0))


def picking_worker(recorder: Any, mappings: Any, server: Any) -> OutboundWorker:
    return OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, client_for(server)), FAST)


def test_one_customer_order_becomes_one_picking_order_per_zone_and_a_retry_creates_none_twice(
    warehouse, recorder, mappings, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10), ("SKU-3", 10)),
        event(
            RESERVATION,
            "shop-1",
            ("SKU-1", 2),
            ("SKU-2", 1),
            ("SKU-3", 4),
            reservation_id="r-1",
            order_id="B-7",
        ),
    )
    worker = picking_worker(recorder, mappings, server)

    def crash() -> None:
        raise SimulatedCrash

    worker.before_save_hook = crash
    with pytest.raises(SimulatedCrash):
        worker.run_once()
    worker.before_save_hook = None
    worker.run_until_idle()

    assert fake.creates == 2
    zone_a, zone_b = fake.by_external("shop-1:r-1:A"), fake.by_external("shop-1:r-1:B")
    assert zone_a is not None and zone_b is not None
    assert zone_a["lines"] == [
        {"sku": "ART-1", "qty": 2, "uom": "unit"},
        {"sku": "SKU-3", "qty": 4, "uom": "unit"},
    ]
    assert zone_a["customer_order_id"] == "B-7" and zone_a["warehouse"] == "main"
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT external_id, status FROM adapter_wms_orders ORDER BY external_id")
    assert [(r["external_id"], r["status"]) for r in rows] == [
        ("shop-1:r-1:A", "NEW"),
        ("shop-1:r-1:B", "NEW"),
    ]


def test_whole_boxes_go_to_the_wms_as_boxes(warehouse, recorder, mappings, mapped, record):
    fake, server = warehouse
    mapped(("wms", "unit", "SKU-2", "box", None, 12))
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 48)),
        event(RESERVATION, "shop-1", ("SKU-2", 24), reservation_id="r-1"),
        event(RESERVATION, "shop-1", ("SKU-2", 5), reservation_id="r-2"),
    )

    picking_worker(recorder, mappings, server).run_until_idle()

    assert fake.by_external("shop-1:r-1:B")["lines"] == [{"sku": "SKU-2", "qty": 2, "uom": "box"}]  # type: ignore[index]
    assert fake.by_external("shop-1:r-2:B")["lines"] == [{"sku": "SKU-2", "qty": 5, "uom": "unit"}]  # type: ignore[index]


def test_a_picking_error_releases_the_line_sets_the_error_status_and_raises_an_alert(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), ("SKU-2", 3), reservation_id="r-1", order_id="B-7"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    failed = fake.by_external("shop-1:r-1:B")
    assert failed is not None
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    inbox = InboxWorker(recorder, {"wms": processor.handle_delivery})

    assert store_delivery(recorder, "wms", "d-1", {"id": failed["id"], "status": "PICKING_ERROR"})
    assert not store_delivery(recorder, "wms", "d-1", {"id": failed["id"], "status": "PICKING_ERROR"})
    assert inbox.run_once() == (1, 0)

    levels = {v.sku: v.level for v in ledger.levels("shop-1", ["SKU-1", "SKU-2"])}
    assert (levels["SKU-1"].reserved_units, levels["SKU-2"].reserved_units) == (2, 0)  # only zone B's line
    history = ledger.history(
        HistoryFilter("shop-1", reservation_id="r-1", type="stock.reservation_release"), 10
    )
    assert history[0]["reference"] == f"WMS PICKING_ERROR picking order {failed['id']}"
    with transaction(recorder) as tx:
        outbox = tx.fetchall("SELECT adapter, item_key, payload FROM adapter_outbox")
        alerts = tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'")
    assert [(o["adapter"], o["item_key"]) for o in outbox] == [("bitrix", "status:B-7")]
    assert '"status_id":"PE"' in outbox[0]["payload"]
    assert alerts[0]["subject"] == failed["id"] and "released" in alerts[0]["detail"]
    assert 'ledger_adapter_alerts_total{adapter="wms"} 1.0' in metrics_text(recorder).decode()
    assert next(s for s in read_status(recorder) if s.adapter == "wms").alerts_total == 1


def _one_picking_order(warehouse, recorder, mappings, ledger, record) -> tuple[Any, Any]:
    """A reservation of SKU-2 (zone B) made a picking order; `deliver(id, status, ...)` stores
    status deliveries of it, in pairs, and has the inbox process them in one round."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-2", 2), reservation_id="r-1", order_id="B-7"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    order = fake.by_external("shop-1:r-1:B")
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    inbox = InboxWorker(recorder, {"wms": processor.handle_delivery})

    def deliver(*pairs: str) -> None:
        for delivery_id, status in zip(pairs[::2], pairs[1::2], strict=True):
            store_delivery(recorder, "wms", delivery_id, {"id": order["id"], "status": status})
        inbox.run_once()

    return order, deliver


def test_a_status_delivered_late_does_not_move_the_order_back(warehouse, recorder, mappings, ledger, record):
    """A delivery refused while we restarted (503) comes again after a newer one: a status the
    order is past is left out. Applied as it came, a PICKING_ERROR after SHIPPED marked the shipped
    order final (polling skips it), and sent Bitrix the older status."""
    fake, _ = warehouse
    order, deliver = _one_picking_order(warehouse, recorder, mappings, ledger, record)
    fake.set_status(order["id"], "SHIPPED")
    deliver("d-2", "SHIPPED")

    deliver("d-1", "PICKING_ERROR", "d-0", "PICKING")

    with transaction(recorder) as tx:
        stale = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'stale_status' ORDER BY detail")
        row = tx.fetchone(
            "SELECT status, final FROM adapter_wms_orders WHERE wms_order_id = %s", (order["id"],)
        )
        outbox = tx.fetchall("SELECT payload FROM adapter_outbox WHERE item_key = 'status:B-7'")
        alerts = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
    assert (row["status"], row["final"]) == ("SHIPPED", 0)
    assert ['"status_id":"D"' in o["payload"] for o in outbox] == [True]
    assert alerts == []
    assert [row["detail"] for row in stale] == [
        "PICKING came after SHIPPED: left out",
        "PICKING_ERROR came after SHIPPED: left out",
    ]
    level = ledger.levels("shop-1", ["SKU-2"])[0].level
    assert (level.on_hand_units, level.reserved_units) == (8, 0)  # shipped once, nothing released


def test_a_polled_status_overtaken_by_a_delivery_does_not_move_the_order_back(
    warehouse, recorder, mappings, ledger, record
):
    """The poller read PICKED from the WMS; before it applied it, the order shipped and the
    SHIPPED delivery was applied. Applied after it, PICKED set the shipped order back (not final:
    polled again) and sent Bitrix the older status."""
    fake, server = warehouse
    order, deliver = _one_picking_order(warehouse, recorder, mappings, ledger, record)
    fake.set_status(order["id"], "PICKED")
    poller = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    read_status = poller.client.status

    def overtaken(wms_order_id: str) -> str | None:
        answer = read_status(wms_order_id)  # PICKED, read before the shipment
        fake.set_status(order["id"], "SHIPPED")
        deliver("d-1", "SHIPPED")
        return answer

    poller.client.status = overtaken  # type: ignore[method-assign]
    poller.poll()

    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT status, final FROM adapter_wms_orders WHERE wms_order_id = %s", (order["id"],)
        )
        stale = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'stale_status'")
        outbox = tx.fetchall("SELECT payload FROM adapter_outbox WHERE item_key = 'status:B-7'")
    assert row["status"] == "SHIPPED"
    assert [r["detail"] for r in stale] == ["PICKED came after SHIPPED: left out"]
    assert ['"status_id":"D"' in o["payload"] for o in outbox] == [True]


def _two_instances(warehouse, recorder, mappings, ledger, record, first: str, meanwhile: str) -> Any:
    """Two adapters instances: one applies `first` and, while it records, the other applies
    `meanwhile`; the order's row, the journal's stale lines and the Bitrix status pushed, after."""
    fake, server = warehouse
    order, _ = _one_picking_order(warehouse, recorder, mappings, ledger, record)
    other = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    sink = LedgerSink(ledger)
    record_first = sink.record

    def the_other_applies_meanwhile(events: list[Any]) -> list[Any]:
        results = record_first(events)
        if meanwhile == "SHIPPED":
            fake.set_status(order["id"], "SHIPPED")
        other.handle_delivery({"id": order["id"], "status": meanwhile})
        return results

    sink.record = the_other_applies_meanwhile  # type: ignore[method-assign]
    if first == "SHIPPED":
        fake.set_status(order["id"], "SHIPPED")
    WmsStatusProcessor(recorder, mappings, sink, client_for(server)).handle_delivery(
        {"id": order["id"], "status": first}
    )
    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT status, final FROM adapter_wms_orders WHERE wms_order_id = %s", (order["id"],)
        )
        stale = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'stale_status' ORDER BY detail")
        outbox = tx.fetchall("SELECT payload FROM adapter_outbox WHERE item_key = 'status:B-7'")
    return row, [r["detail"] for r in stale], [orjson.loads(o["payload"])["status_id"] for o in outbox]


def test_a_late_status_another_instance_applied_first_is_overtaken(
    warehouse, recorder, mappings, ledger, record
):
    """One instance applies SHIPPED (its shipment recorded); meanwhile another applies a late
    PICKING_ERROR, decided from the same NEW, and sets it. Set over the status it was not decided
    from, SHIPPED was dropped: the shipped order stayed final at the error (polling skips it), and
    Bitrix was told of the error. Decided again, SHIPPED counts after a picking error."""
    row, stale, statuses = _two_instances(
        warehouse, recorder, mappings, ledger, record, first="SHIPPED", meanwhile="PICKING_ERROR"
    )
    assert (row["status"], row["final"]) == ("SHIPPED", 0)
    assert stale == ["SHIPPED decided from NEW, which another instance changed meanwhile: decided again"]
    assert statuses == ["D"]  # the last pushed for the order: shipped
    level = ledger.levels("shop-1", ["SKU-2"])[0].level
    assert (level.on_hand_units, level.reserved_units) == (8, 0)  # shipped once


def test_a_late_status_applied_while_another_instance_sets_a_newer_one_is_left_out(
    warehouse, recorder, mappings, ledger, record
):
    """The other way round: the late PICKING_ERROR first, SHIPPED meanwhile: decided again over
    SHIPPED, the error is behind it."""
    row, stale, statuses = _two_instances(
        warehouse, recorder, mappings, ledger, record, first="PICKING_ERROR", meanwhile="SHIPPED"
    )
    assert (row["status"], row["final"]) == ("SHIPPED", 0)
    assert stale == [
        "PICKING_ERROR came after SHIPPED: left out",
        "PICKING_ERROR decided from NEW, which another instance changed meanwhile: decided again",
    ]
    assert statuses == ["D"]


def test_a_step_before_shipping_delivered_after_a_picking_error_does_not_reopen_it(
    warehouse, recorder, mappings, ledger, record
):
    order, deliver = _one_picking_order(warehouse, recorder, mappings, ledger, record)
    deliver("d-2", "PICKING_ERROR")
    deliver("d-1", "PICKING")

    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT status, final FROM adapter_wms_orders WHERE wms_order_id = %s", (order["id"],)
        )
    assert (row["status"], row["final"]) == ("PICKING_ERROR", 1)


def test_polled_statuses_go_through_a_status_table_that_changes_without_a_deploy(
    warehouse, recorder, mappings, mapped, ledger, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", order_id="B-8"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    order = fake.by_external("shop-1:r-1:A")
    assert order is not None
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))

    fake.set_status(order["id"], "PICKING")
    assert processor.poll() == 1
    assert processor.poll() == 0  # unchanged: nothing to do
    mapped(("wms", "status", "PICKING", "QX"))  # an operator edits the table; no restart
    fake.set_status(order["id"], "PICKED")
    processor.poll()
    fake.set_status(order["id"], "PICKING")
    processor.poll()

    with transaction(recorder) as tx:
        payload = tx.fetchone("SELECT payload FROM adapter_outbox WHERE item_key = 'status:B-8'")
        unmapped = tx.fetchall("SELECT subject FROM adapter_journal WHERE kind = 'unmapped_status'")
    assert payload is not None and '"status_id":"QX"' in payload["payload"]
    assert [u["subject"] for u in unmapped] == [order["id"]]  # PICKED has no row

    fake.set_status(order["id"], "SHIPPED")
    processor.poll()
    view = ledger.reservation("shop-1", "r-1")
    assert view.reservation.status.value == "shipped"
    assert ledger.levels("shop-1", ["SKU-1"])[0].level.on_hand_units == 8


def test_a_reservation_released_in_the_ledger_cancels_its_open_picking_orders(
    warehouse, recorder, mappings, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), ("SKU-2", 1), reservation_id="r-1"),
    )
    worker = picking_worker(recorder, mappings, server)
    worker.run_until_idle()
    fake.set_status(fake.by_external("shop-1:r-1:B")["id"], "SHIPPED")  # type: ignore[index]
    record(event(RELEASE, "shop-1", reservation_id="r-1"))

    worker.run_until_idle()

    assert fake.by_external("shop-1:r-1:A")["status"] == "CANCELLED"  # type: ignore[index]
    assert fake.by_external("shop-1:r-1:B")["status"] == "SHIPPED"  # type: ignore[index]
    assert read_position(recorder, "wms") == 3


def test_a_partial_release_cancels_only_the_picking_orders_it_leaves_with_nothing_reserved(
    warehouse, recorder, mappings, ledger, record
):
    """Every release cancelled every picking order of its reservation: a customer dropping one line
    had the other zones' orders cancelled too, and their still reserved goods were never picked."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10), ("SKU-3", 10)),
        event(
            RESERVATION,
            "shop-1",
            ("SKU-1", 2),
            ("SKU-2", 3),
            ("SKU-3", 4),
            reservation_id="r-1",
            order_id="B-7",
        ),
    )
    worker = picking_worker(recorder, mappings, server)
    worker.run_until_idle()
    assert fake.creates == 2
    # SKU-2 (all of zone B) goes, and some of SKU-3: zone A keeps SKU-1 and one unit of SKU-3.
    record(event(RELEASE, "shop-1", ("SKU-2", 3), ("SKU-3", 3), reservation_id="r-1"))

    worker.run_until_idle()

    assert fake.by_external("shop-1:r-1:A")["status"] == "NEW"  # type: ignore[index]
    assert fake.by_external("shop-1:r-1:B")["status"] == "CANCELLED"  # type: ignore[index]
    levels = {view.sku: view.level.reserved_units for view in ledger.levels("shop-1", ["SKU-1", "SKU-3"])}
    assert levels == {"SKU-1": 2, "SKU-3": 1}
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT zone, status, final FROM adapter_wms_orders ORDER BY zone")
    assert [(row["zone"], row["status"], row["final"]) for row in rows] == [
        ("A", "NEW", 0),
        ("B", "CANCELLED", 1),
    ]

    record(event(RELEASE, "shop-1", reservation_id="r-1"))  # the rest: zone A's order goes too
    worker.run_until_idle()

    assert fake.by_external("shop-1:r-1:A")["status"] == "CANCELLED"  # type: ignore[index]


def test_a_shipment_whose_status_was_never_seen_is_recorded_once_at_the_status_after_it(
    warehouse, recorder, mappings, ledger, record
):
    """SHIPPED and DELIVERED between two polls (or SHIPPED's delivery lost): the order was marked
    final at DELIVERED with no shipment, a late SHIPPED was left out as behind it, and the goods
    that left stayed on hand and reserved for good."""
    fake, server = warehouse
    order, deliver = _one_picking_order(warehouse, recorder, mappings, ledger, record)
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    fake.set_status(order["id"], "SHIPPED")
    fake.set_status(order["id"], "DELIVERED")
    assert processor.poll() == 1
    deliver("d-1", "SHIPPED", "d-2", "DELIVERED")  # late, and again: nothing more is recorded

    level = ledger.levels("shop-1", ["SKU-2"])[0].level
    assert (level.on_hand_units, level.reserved_units) == (8, 0)
    shipments = [
        entry for entry in ledger.history(HistoryFilter("shop-1"), 100) if entry["type"] == "stock.shipment"
    ]
    assert [(e["event_id"], e["on_hand_delta"]) for e in shipments] == [(f"wms:{order['id']}:SHIPPED", -2)]
    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT status, final FROM adapter_wms_orders")
        skipped = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'skipped_status'")
    assert (row["status"], row["final"]) == ("DELIVERED", 1)
    assert [s["detail"] for s in skipped] == [
        "SHIPPED was not seen before DELIVERED: its shipment recorded now"
    ]


def test_an_order_whose_status_keeps_failing_does_not_keep_the_others_from_being_polled(
    warehouse, recorder, mappings, ledger, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="r-1"),
        event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="r-2"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    failing, other = fake.by_external("shop-1:r-1:A"), fake.by_external("shop-1:r-2:A")
    route = fake._route
    fake._route = lambda request, parts: (
        Reply(502, {"error": "bad gateway"}) if failing["id"] in parts else route(request, parts)
    )
    fake.set_status(other["id"], "SHIPPED")
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    with pytest.raises(TargetUnavailable):  # the poll fails (and is retried), the others applied
        processor.poll()
    level = ledger.levels("shop-1", ["SKU-1"])[0].level
    assert (level.on_hand_units, level.reserved_units) == (9, 1)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, {"error": "temporarily unable to read the order"}),
        Reply(200, {"id": "PO-000001"}),
        Reply(200, {"id": "PO-000001", "status": 3}),
    ],
    ids=["an error", "no status", "a status not a string"],
)
def test_a_status_answer_without_a_status_fails_the_poll_and_keeps_the_stored_status(
    warehouse, recorder, mappings, ledger, record, reply
):
    """An error's body was read for its status, and the order stored at the status "None"."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-2", 5), reservation_id="r-1", order_id="B-7"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))
    fake.next_replies.append(reply)

    with pytest.raises(TargetUnavailable):  # failed, so retried with backoff
        processor.poll()

    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT status, final FROM adapter_wms_orders")
        statuses = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind LIKE '%status%'")
    assert (row["status"], row["final"]) == ("NEW", 0)
    assert statuses == []
    assert processor.poll() == 0  # the next poll reads the status the WMS has


def test_a_picking_order_made_just_before_a_crash_is_cancelled_when_its_reservation_is_released(
    warehouse, recorder, mappings, record
):
    """Kept only with the cycle's save, the order of a process that died before it had no row: a
    release then found nothing to cancel, and the WMS picked and shipped goods the ledger had
    released."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", order_id="B-1"),
    )
    dying = picking_worker(recorder, mappings, server)

    def crash() -> None:
        raise SimulatedCrash

    dying.before_save_hook = crash
    with pytest.raises(SimulatedCrash):
        dying.run_once()
    dying.release_lease()
    record(event(RELEASE, "shop-1", reservation_id="r-1"))
    picking_worker(recorder, mappings, server).run_until_idle()  # the process started again

    (order,) = fake.orders.values()
    assert order["status"] == "CANCELLED"
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT status, final FROM adapter_wms_orders")
    assert [(row["status"], row["final"]) for row in rows] == [("CANCELLED", 1)]


class _Died(BaseException):
    """The process killed: nothing after it runs."""


def test_a_picking_order_whose_answer_was_lost_is_cancelled_when_its_reservation_is_released(
    warehouse, recorder, mappings, record, monkeypatch
):
    """The WMS made the order, but the process died before keeping its id: the retry, after the
    release, found no line left to pick and so sent nothing, the release found no order to cancel,
    and the WMS picked and shipped goods the ledger had released."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-2", 3), reservation_id="r-1", order_id="B-7"),
    )
    dying = picking_worker(recorder, mappings, server)

    def die(self: Any, created: Any) -> None:  # right after the WMS answered 201
        raise _Died

    monkeypatch.setattr(WmsPickingTarget, "_remember", die)
    with pytest.raises(_Died):
        dying.run_once()
    monkeypatch.undo()
    dying.release_lease()
    assert fake.creates == 1
    record(event(RELEASE, "shop-1", reservation_id="r-1"))
    picking_worker(recorder, mappings, server).run_until_idle()  # the process started again

    assert fake.creates == 1
    assert fake.by_external("shop-1:r-1:B")["status"] == "CANCELLED"  # type: ignore[index]
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT status, final FROM adapter_wms_orders")
        left = tx.fetchall("SELECT external_id FROM adapter_wms_requests")
    assert [(row["status"], row["final"]) for row in rows] == [("CANCELLED", 1)]
    assert left == []


def test_a_picking_order_made_after_its_request_timed_out_is_cancelled_when_its_reservation_is_released(
    warehouse, recorder, mappings, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 1), ("SKU-2", 3), reservation_id="r-1", order_id="B-7"),
    )
    worker = picking_worker(recorder, mappings, server)
    fake.delay_s = 2.5  # past the client's 2 s: the WMS makes zone A's order, its answer is lost
    assert worker.run_once().aborted
    fake.delay_s = 0.0
    assert fake.creates == 1
    # SKU-1 (zone A) goes; SKU-2 (zone B, never sent) stays and is sent when the pick is retried.
    record(event(RELEASE, "shop-1", ("SKU-1", 1), reservation_id="r-1"))
    worker.run_until_idle()

    assert fake.by_external("shop-1:r-1:A")["status"] == "CANCELLED"  # type: ignore[index]
    assert fake.by_external("shop-1:r-1:B")["status"] == "NEW"  # type: ignore[index]
    assert fake.creates == 2


def test_a_reservation_released_before_its_picking_orders_were_sent_makes_none_in_the_wms(
    warehouse, recorder, mappings, record
):
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1"),
        event(RELEASE, "shop-1", reservation_id="r-1"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    assert fake.creates == 0 and fake.requests == 0


def _order_status_queued(recorder: Any, order_id: str) -> str | None:
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT payload FROM adapter_outbox WHERE item_key = %s", (f"status:{order_id}",))
    return str(orjson.loads(rows[0]["payload"])["status_id"]) if rows else None


def test_the_bitrix_order_status_is_that_of_all_its_picking_orders_together(
    warehouse, recorder, mappings, ledger, record
):
    """Each picking order's own status was queued as the whole order's, under its one key: zone A's
    PICKING replaced zone B's PICKING_ERROR, which a person must act on, and one zone's SHIPPED
    marked the order shipped while the other was still picked (found by review)."""
    fake, server = warehouse
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), ("SKU-2", 3), reservation_id="r-1", order_id="B-7"),
    )
    picking_worker(recorder, mappings, server).run_until_idle()
    zone_a, zone_b = fake.by_external("shop-1:r-1:A"), fake.by_external("shop-1:r-1:B")
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client_for(server))

    processor.handle_delivery({"id": zone_a["id"], "status": "PICKING"})
    assert _order_status_queued(recorder, "B-7") is None  # zone B is NEW, which sets no status
    processor.handle_delivery({"id": zone_b["id"], "status": "PICKING"})
    assert _order_status_queued(recorder, "B-7") == "Q"
    processor.handle_delivery({"id": zone_a["id"], "status": "SHIPPED"})
    assert _order_status_queued(recorder, "B-7") == "Q"  # zone B is still picked
    processor.handle_delivery({"id": zone_b["id"], "status": "PICKING_ERROR"})
    assert _order_status_queued(recorder, "B-7") == "PE"
    processor.handle_delivery({"id": zone_a["id"], "status": "DELIVERED"})
    assert _order_status_queued(recorder, "B-7") == "PE"  # the error stays until a person acts


def test_an_unmapped_sku_named_as_another_skus_article_is_not_sent_as_that_sku(
    warehouse, recorder, mappings, mapped, record
):
    """SKU-2 has no wms,sku row, so it travels under its own name; SKU-3 is mapped to the article
    SKU-2. A picking order of SKU-2 went out as article SKU-2, which the WMS holds as SKU-3's: the
    picker took SKU-3's units for it. Refused and parked, naming both, until a mapping says which."""
    fake, server = warehouse
    mapped(("wms", "sku", "SKU-3", "SKU-2"))
    record(
        event(RECEIPT, "shop-1", ("SKU-2", 10), ("SKU-3", 10)),
        event(RESERVATION, "shop-1", ("SKU-2", 1), reservation_id="r-1"),
        event(RESERVATION, "shop-1", ("SKU-3", 2), reservation_id="r-2"),
    )

    picking_worker(recorder, mappings, server).run_until_idle()

    assert fake.by_external("shop-1:r-1:B") is None  # nothing of SKU-2 goes out as SKU-3's article
    made = fake.by_external("shop-1:r-2:A")  # SKU-3 itself goes, as its article
    assert made is not None and made["lines"] == [{"sku": "SKU-2", "qty": 2, "uom": "unit"}]
    with transaction(recorder) as tx:
        [parked] = tx.fetchall("SELECT item_key, reason FROM adapter_parked")
    assert parked["item_key"] == "pick:shop-1|r-1"
    assert "wms article SKU-2 is the mapped article of ledger sku SKU-3" in parked["reason"]
