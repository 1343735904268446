"""The Bitrix order status that follows a MoySklad demand (seed 001: "An order for 5 items, 3 are
shipped ... The Bitrix order status must transition to 'Partially Shipped', not 'Completed'").

Once a demand's shipment is recorded under its order's reservation, the ledger's reservations say
where the order stands (order_states.py: every part of the order counts). With a mapping row
`bitrix,status,<that state>,<Bitrix status id>`, the status is queued for the Bitrix target under
`status:<order id>`, the reservation's own order id (a reservation placed without one names no
Bitrix order, and queues nothing; a newer status of the order replaces one not yet pushed;
adapters/bitrix.py reads the order's state again when it pushes it, and sets it with
sale.order.update), in the transaction that marks the demand's events submitted: a crash before
it submits them again and queues it then. Without such a row nothing is queued. A return (a demand
corrected down, or deleted) changes no reservation (CONTRACT: a return does not place one again),
so it queues nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.mappings import BITRIX_ORDER_STATES, Mappings
from adapters.order_states import order_state_now
from adapters.outbound import enqueue
from ledger.domain.model import EventType, StockEvent
from ledger.sql import SqlTx

BITRIX = "bitrix"


def mapped_states(mappings: Mappings) -> dict[str, str]:
    """The Bitrix status id of each order state a `bitrix,status` row maps. Read before the
    transaction that queues them: a mappings reload opens a transaction of its own (on SQLite, the
    one connection that writes)."""
    rules = {state: mappings.status(BITRIX, state) for state in BITRIX_ORDER_STATES}
    return {state: rule.target_status for state, rule in rules.items() if rule is not None}


def queue_order_statuses(tx: SqlTx, states: dict[str, str], events: Iterable[StockEvent]) -> None:
    """Queues the Bitrix status of each order a shipment among `events` went out under, if its
    state is among `states` (mapped_states)."""
    shipped = {
        (event.store_id, event.reservation_id)
        for event in events
        if event.type is EventType.SHIPMENT and event.reservation_id
    }
    if not shipped or not states:
        return
    for store_id, reservation_id in sorted(shipped):
        part = tx.fetchone(
            "SELECT order_id FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s",
            (store_id, reservation_id),
        )
        if part is None or not part["order_id"]:
            continue  # placed without an order id: no Bitrix order is named
        order_id = str(part["order_id"])
        state = order_state_now(tx, reservation_id, order_id)
        if state in states:
            payload = {
                "order_id": order_id,
                "status_id": states[state],
                "reservation_state": state,
                "reservation_id": reservation_id,  # the push reads the order's state again by it
            }
            enqueue(tx, BITRIX, f"status:{order_id}", payload)
