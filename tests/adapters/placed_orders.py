"""A customer order the ledger made in the fake MoySklad, for the tests of its cancels
(test_moysklad_order_ends.py, test_moysklad_order_ends_catchup.py)."""

from __future__ import annotations

from typing import Any

from conftest import FAST, event
from moysklad_setup import STORE_UUID, client_for

from adapters.db import transaction
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.outbound import OutboundWorker
from adapters.sink import LedgerSink
from ledger.domain.model import EventType

CANCELLED = "5a5a0000-0000-0000-0000-00000000000c"  # the account's "cancelled" state
OTHER_STATE = "5a5a0000-0000-0000-0000-00000000000d"


def reserved(ledger: Any) -> int:
    """What shop-1 holds reserved of SKU-1."""
    return int(ledger.levels("shop-1", ["SKU-1"])[0].level.reserved_units)


def placed_order(fake: Any, server: Any, recorder: Any, mappings: Any, record: Any) -> tuple[str, Any]:
    """A reservation of 5 for order B-9 at shop-1, and its customer order in MoySklad; and the
    orders' worker (one: it holds the target's lease)."""
    record(
        event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)),
        event(EventType.RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-9", order_id="B-9"),
    )
    worker = OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST)
    worker.run_until_idle()
    (order_id,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    return str(order_id), worker


def order_ends_of(server: Any, recorder: Any, mappings: Any, ledger: Any) -> OrderEnds:
    """What handles the orders' notifications, as `ledger adapters run` wires it, on the fake."""
    return OrderEnds(recorder, mappings, client_for(server), LedgerSink(ledger))


def order_of_two_stores_sharing_one(
    fake: Any, server: Any, recorder: Any, mappings: Any, record: Any, shop_3_reservation: str = "res-3"
) -> tuple[str, Any]:
    """shop-3 mapped to shop-1's MoySklad store (as an older release let be), and order B-9
    reserved at both: pushed as the one customer order. Returns its id and the orders' push."""
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('moysklad', 'store', 'shop-3', %s, NULL, '2026-12-01T00:00:00Z')",
            (STORE_UUID,),
        )
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(
        event(EventType.RECEIPT, "shop-3", ("SKU-1", 4)),
        event(
            EventType.RESERVATION, "shop-3", ("SKU-1", 3), reservation_id=shop_3_reservation, order_id="B-9"
        ),
    )
    orders.run_until_idle()
    return order_id, orders
