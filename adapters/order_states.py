"""An order's shipping state, from the reservations of its parts.

CONTRACT §6: an order across stores is one reservation id with a part at each store, each with the
order id (a part at a WMS warehouse or a shop too); CONTRACT §1: the id is unique per store only,
so another store's reservation of that id for another order is not a part. The order is `shipped`
when none of its parts holds units any more and some shipped, `partially_shipped` while any holds
units after any shipped, and has no state while none has shipped.

Read when a shipment queues the Bitrix order's status (moysklad_order_status.py), and again when
the status is pushed (bitrix.py): two processes shipping two parts at once could each read the
other's part as still held and queue "partially shipped" after the last one shipped; read at the
push, the state is the one the ledger holds then.
"""

from __future__ import annotations

from collections.abc import Iterable

from ledger.domain.model import ReservationStatus
from ledger.sql import SqlTx

_HOLDING = frozenset({ReservationStatus.ACTIVE.value, ReservationStatus.PARTIALLY_SHIPPED.value})
_SHIPPED_ANY = frozenset({ReservationStatus.PARTIALLY_SHIPPED.value, ReservationStatus.SHIPPED.value})


def order_state(part_statuses: Iterable[str]) -> str | None:
    """The order's state from its parts' reservation statuses; None while none has shipped."""
    statuses = list(part_statuses)
    if not any(status in _SHIPPED_ANY for status in statuses):
        return None
    if any(status in _HOLDING for status in statuses):
        return ReservationStatus.PARTIALLY_SHIPPED.value
    return ReservationStatus.SHIPPED.value


def order_state_now(tx: SqlTx, reservation_id: str, order_id: str) -> str | None:
    """The state of the order `order_id` whose parts are the reservations `reservation_id`."""
    parts = tx.fetchall(  # by ledger_reservations_by_id
        "SELECT status FROM ledger_reservations WHERE reservation_id = %s AND order_id = %s",
        (reservation_id, order_id),
    )
    return order_state(str(row["status"]) for row in parts)
