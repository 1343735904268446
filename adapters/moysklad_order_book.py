"""Which MoySklad customer orders the ledger made, by their uuid, and which reservations each one
carries (`adapter_moysklad_orders`, adapters migration 4): one row for each reservation a push
created an order for or found one made already for (a retry after a crash, a later reservation of
the order id reusing it, an order made before the book existed), written before its push counts as
done.

A deleted order's notification carries only its href, the audit's deletion only its meta, and the
order is no longer there to read (`GET` answers 404): the book says which reservations it carried
(moysklad_order_cancels.py follows deletions). By reservation, not by order id: an order id can
have two live orders at one store (a person changed the first one's store or code, or put it in
the recycle bin, and the next reservation made a new one), and the deletion of one must not end
the reservations the other carries. Every reservation in the book under an order was pushed
while that order existed, after the reservation was placed: its deletion came after the placement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.db import now_text, transaction


@dataclass(frozen=True, slots=True)
class BookedReservation:
    """A reservation at `store_id` that a customer order the ledger made carries, the order made
    for the order id `order_id` (its `externalCode`)."""

    store_id: str
    order_id: str
    reservation_id: str


def remember_order(recorder: Any, order_uuid: str, carried: BookedReservation) -> None:
    """Writes that the order `order_uuid` carries the reservation; written before, left as it was."""
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_moysklad_orders (order_uuid, reservation_id, store_id, order_id, "
            "recorded_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_uuid, reservation_id) DO NOTHING",
            (order_uuid, carried.reservation_id, carried.store_id, carried.order_id, now_text()),
        )


def booked_reservations(recorder: Any, order_uuid: str) -> list[BookedReservation]:
    """The reservations the book holds under the order `order_uuid` (none: the ledger did not make
    it, or made it before the book existed and pushed nothing to it since)."""
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT store_id, order_id, reservation_id FROM adapter_moysklad_orders WHERE order_uuid = %s "
            "ORDER BY recorded_at, reservation_id",
            (order_uuid,),
        )
    return [BookedReservation(str(r["store_id"]), str(r["order_id"]), str(r["reservation_id"])) for r in rows]
