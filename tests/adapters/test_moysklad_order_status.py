"""A MoySklad demand moves the Bitrix order's status as the ledger's reservation stands (seed 001:
"An order for 5 items, 3 are shipped ... must transition to 'Partially Shipped', not
'Completed'"): partially shipped while any part of the order still holds units, shipped once none
does; nothing without a `bitrix,status` row."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import BOTH_DATABASES, FAST, bitrix_target, either_database, event
from moysklad_setup import OTHER_STORE_UUID, STORE_UUID, VARIANT, client_for

from adapters.db import transaction
from adapters.mappings import MappingError, MappingRow, _row
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.order_states import order_state
from adapters.outbound import OutboundWorker, enqueue, request_parked_retry
from adapters.sink import LedgerSink
from ledger.domain.model import EventType

RECEIPT, RESERVATION = EventType.RECEIPT, EventType.RESERVATION
ORDER = "7"  # the Bitrix order id: the reservation's order id


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def account(moysklad_account: Any, bitrix: Any, recorder: Any, mappings: Any, ledger: Any) -> Any:
    fake, server = moysklad_account
    bitrix[0].orders[ORDER] = {"id": ORDER, "statusId": "N"}
    return fake, server


class Bitrix:
    """The Bitrix target's worker (one: it holds the target's lease) and the order's status."""

    def __init__(self, recorder: Any, mappings: Any, bitrix: Any) -> None:
        self.worker = OutboundWorker(recorder, bitrix_target(recorder, mappings, bitrix), FAST)
        self.fake = bitrix[0]

    def status_after_push(self) -> str:
        self.worker.run_until_idle()
        return str(self.fake.orders[ORDER]["statusId"])


def orders_in_moysklad(recorder: Any, mappings: Any, server: Any) -> None:
    OutboundWorker(
        recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
    ).run_until_idle()


@pytest.fixture
def shipping(account, bitrix, recorder, mappings, mapped, ledger, record) -> Any:
    """Given the status rows and these events (their orders made in MoySklad): the demands' sync
    and the site."""
    _, server = account

    def given(*events: Any) -> tuple[DemandSync, Bitrix]:
        mapped(("bitrix", "status", "partially_shipped", "PS"), ("bitrix", "status", "shipped", "F"))
        record(*events)
        orders_in_moysklad(recorder, mappings, server)
        return DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger)), Bitrix(
            recorder, mappings, bitrix
        )

    return given


def test_a_demand_of_part_of_an_order_sets_partially_shipped_and_the_rest_shipped(account, shipping):
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-7", order_id=ORDER),
    )

    demand = fake.add_demand(STORE_UUID, [(VARIANT, 3)], order_external_code=ORDER)
    sync.handle(fake.webhook_body(demand))
    assert site.status_after_push() == "PS"  # 3 of 5: not completed

    fake.update_demand(demand, positions=[(VARIANT, 5)])
    sync.handle(fake.webhook_body(demand, "UPDATE"))
    assert site.status_after_push() == "F"


def test_an_order_across_stores_is_shipped_only_when_every_part_has_shipped(account, shipping):
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RECEIPT, "shop-2", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-7", order_id=ORDER),
        event(RESERVATION, "shop-2", ("SKU-1", 1), reservation_id="res-7", order_id=ORDER),
    )

    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code=ORDER)))
    assert site.status_after_push() == "PS"  # shop-1's part shipped, shop-2's holds

    sync.handle(
        fake.webhook_body(fake.add_demand(OTHER_STORE_UUID, [(VARIANT, 1)], order_external_code=ORDER))
    )
    assert site.status_after_push() == "F"


def test_without_a_bitrix_status_row_a_demand_queues_no_status(
    account, bitrix, recorder, mappings, ledger, record
):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-7", order_id=ORDER),
    )
    orders_in_moysklad(recorder, mappings, server)
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    site = Bitrix(recorder, mappings, bitrix)

    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 3)], order_external_code=ORDER)))

    with transaction(recorder) as tx:
        assert tx.fetchall("SELECT item_key FROM adapter_outbox WHERE adapter = 'bitrix'") == []
    assert site.status_after_push() == "N"


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        (["active"], None),
        (["released"], None),
        (["partially_shipped"], "partially_shipped"),
        (["shipped", "active"], "partially_shipped"),
        (["shipped", "partially_shipped"], "partially_shipped"),
        (["shipped", "released"], "shipped"),  # nothing more will ship: the order is done
        (["shipped", "shipped"], "shipped"),
    ],
)
def test_an_orders_state_from_its_parts(statuses, state):
    assert order_state(statuses) == state


def test_a_bitrix_status_row_names_an_order_state_and_no_action():
    record = {"system": "bitrix", "kind": "status", "local_id": "shipped", "external_id": "F"}
    assert _row(record, "line 2") == MappingRow("bitrix", "status", "shipped", "F", None, None)
    for wrong in ({"local_id": "SHIPPED"}, {"local_id": "released"}, {"external_type": "ship"}):
        with pytest.raises(MappingError, match="a bitrix status row maps an order's state"):
            _row({**record, **wrong}, "line 2")


def test_a_part_at_a_store_not_mapped_to_moysklad_keeps_the_order_partially_shipped(account, shipping):
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RECEIPT, "wh-9", ("SKU-1", 10)),  # a WMS warehouse, not MoySklad's
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-7", order_id=ORDER),
        event(RESERVATION, "wh-9", ("SKU-1", 1), reservation_id="res-7", order_id=ORDER),
    )

    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 2)], order_external_code=ORDER)))

    assert site.status_after_push() == "PS"  # wh-9's part still holds its unit


def test_a_reservation_placed_without_an_order_id_names_no_bitrix_order(account, shipping, recorder, ledger):
    fake, _ = account
    sync, _ = shipping(  # its customer order's externalCode is its id, "7", the Bitrix order's too
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id=ORDER),  # no order id
    )

    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 3)], order_external_code=ORDER)))

    assert ledger.levels("shop-1", ["SKU-1"])[0].level.reserved_units == 2  # shipped under it
    with transaction(recorder) as tx:
        assert tx.fetchall("SELECT item_key FROM adapter_outbox WHERE adapter = 'bitrix'") == []


def test_another_stores_reservation_of_the_same_id_for_another_order_is_not_a_part_of_it(account, shipping):
    """CONTRACT §1: a reservation id is unique per store. shop-2's res-7 belongs to order 8."""
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RECEIPT, "shop-2", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-7", order_id=ORDER),
        event(RESERVATION, "shop-2", ("SKU-1", 1), reservation_id="res-7", order_id="8"),
    )

    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 5)], order_external_code=ORDER)))

    assert site.status_after_push() == "F"  # order 7 shipped whole; order 8's part is not its


def test_a_status_queued_stale_by_another_process_is_pushed_as_the_order_stands(account, shipping, recorder):
    """Two processes shipping two parts at once each read the other's part as still held, and the
    one that queued last queued "partially shipped" after the order had shipped in full: the push
    reads the order's state again. A status queued without its reservation (the WMS's) is pushed
    as queued."""
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-7", order_id=ORDER),
    )
    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 5)], order_external_code=ORDER)))
    stale = {"order_id": ORDER, "status_id": "PS", "reservation_state": "partially_shipped"}
    with transaction(recorder) as tx:  # the other process's, queued last
        enqueue(tx, "bitrix", f"status:{ORDER}", {**stale, "reservation_id": "res-7"})
    assert site.status_after_push() == "F"

    with transaction(recorder) as tx:
        enqueue(
            tx, "bitrix", f"status:{ORDER}", {"order_id": ORDER, "status_id": "Q", "wms_status": "PICKING"}
        )
    assert site.status_after_push() == "Q"


def test_a_wms_status_queued_after_a_parked_shipment_status_goes_as_queued_when_both_are_retried(
    account, shipping, recorder, bitrix
):
    """A shipment's status parked (Bitrix refused it a moment), then the WMS's queued for the same
    order: retried, both go in one push under one key, and the WMS's, queued last, wins as
    before; the shipment's fresh state is not lent to it."""
    fake, _ = account
    sync, site = shipping(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-7", order_id=ORDER),
    )
    order = bitrix[0].orders.pop(ORDER)  # sale.order.update: 200540400001 (no such order), parked
    sync.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(VARIANT, 5)], order_external_code=ORDER)))
    site.worker.run_until_idle()
    with transaction(recorder) as tx:
        assert [r["item_key"] for r in tx.fetchall("SELECT item_key FROM adapter_parked")] == [
            f"status:{ORDER}"
        ]
    bitrix[0].orders[ORDER] = order
    with transaction(recorder) as tx:  # adapters/wms.py's payload, queued after
        enqueue(
            tx, "bitrix", f"status:{ORDER}", {"order_id": ORDER, "status_id": "Q", "wms_status": "PICKING"}
        )

    assert request_parked_retry(recorder, "bitrix") == 1
    assert site.status_after_push() == "Q"
