"""Which MoySklad customer orders the ledger made, by their uuid: the store and the order id each
was made for (`adapter_moysklad_orders`, adapters migration 4).

A deleted order's notification carries only its href, the audit's deletion only its meta, and the
order is no longer there to read (`GET` answers 404): without this book a deletion could not be
traced back to the reservations it ended (moysklad_order_cancels.py). The orders' target writes
each order it creates, and each it finds already made (a retry after a crash, a reuse by a later
reservation of the order id, or an order made before the book existed), before its push counts as
done; so an order is in the book before its reservation can end through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.db import now_text, transaction


@dataclass(frozen=True, slots=True)
class MadeOrder:
    """A customer order the ledger made at `store_id` for the order id `order_id` (its
    `externalCode`)."""

    store_id: str
    order_id: str


def remember_order(recorder: Any, order_uuid: str, store_id: str, order_id: str) -> None:
    """Writes the order into the book; an order written before is left as it was."""
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_moysklad_orders (order_uuid, store_id, order_id, recorded_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (order_uuid) DO NOTHING",
            (order_uuid, store_id, order_id, now_text()),
        )


def made_order(recorder: Any, order_uuid: str) -> MadeOrder | None:
    """The order the book holds under `order_uuid`, if the ledger made it."""
    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT store_id, order_id FROM adapter_moysklad_orders WHERE order_uuid = %s", (order_uuid,)
        )
    return None if row is None else MadeOrder(str(row["store_id"]), str(row["order_id"]))
