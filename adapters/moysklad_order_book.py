"""Which MoySklad customer orders the ledger made, by their uuid, which reservations each one
carries, and which were deleted (adapters migrations 4 and 7).

A deleted order's notification carries only its href, the audit's deletion only its meta, and the
order is no longer there to read (`GET` answers 404): the book says which reservations it carried
(moysklad_order_ends.py follows deletions). A reservation is booked under an order when a push
creates the order for it, or finds one made already (a retry after a crash: its own order; a
later reservation of the order id reusing an open one), before its push counts as done; not under
another reservation's order found closed, which reserves nothing for it. By reservation, not by
order id: an order id can have two live orders at one store (a person changed the first one's
store or code, or put it in the recycle bin, and the next reservation made a new one), and the
deletion of one must not end the reservations the other carries. By store too: a MoySklad store
that two ledger stores share (an older release let one be mapped so) has one customer order for
their order id, and each store's part of it may carry the same reservation id; keyed by order and
reservation alone, the second part would not be booked, and its deletion would leave its units
reserved.
Every reservation booked under an order was pushed while that order existed, after the
reservation was placed: its deletion came after the placement.

The book is `adapter_moysklad_booked_reservations` (migration 7, filled from migration 4's table).
Migration 4's `adapter_moysklad_order_reservations`, keyed (order_uuid, reservation_id), is the
release before's: a booking writes it too, so that a rollback finds what was booked since (the
first part of a shared order only, as it always did), and a read takes what either holds, so
that what the release before booked during a rollout is not lost. A contract step drops it once
no running release writes it.

A deletion and a booking of the same order take the order's row (`adapter_moysklad_orders`) in
their transactions, one after the other: a deletion marks it deleted and then reads its
reservations, a booking writes its reservation only if the order is not marked deleted. So a
deletion handled while a push books a reservation under that order either sees the reservation,
or the push sees the deletion (and makes a new order on its next attempt): never neither. Every
deleted customer order leaves its row, the ledger's or not (whose it was is not known then).

The book is pruned (`prune`, from the orders' push at most every `PRUNE_INTERVAL_S`): an order
leaves it, with its booked reservations, once none of them still holds units in the ledger (each
is released, expired or shipped in full: ended for good, so a deletion of the order would release
nothing) and nothing happened to it for `RETENTION_DAYS` (booked, made, deleted), at most
`PRUNE_ORDERS_MAX` orders a time. An open order's reservation is never pruned, so its release on
a deletion is never lost. A deleted order pruned can no longer stop a booking under it: only a push
that read the order before its deletion and booked it `RETENTION_DAYS` later could try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.db import now_text, transaction
from ledger.domain.model import ReservationStatus

RETENTION_DAYS = 30  # an order whose reservations all ended stays in the book this long after its last change
PRUNE_ORDERS_MAX = 1000  # orders pruned at a time (one transaction)
PRUNE_INTERVAL_S = 3600.0  # how often the orders' push prunes the book
# The reservation statuses that still hold units (as moysklad_orders.HOLDING_STATUSES, which imports this).
_HOLDING = (ReservationStatus.ACTIVE.value, ReservationStatus.PARTIALLY_SHIPPED.value)

# The book, by order, store and reservation (adapters migration 7); migration 4's by order and
# reservation, which the release before writes and reads (see above); and every booking in either.
_BOOK = "adapter_moysklad_booked_reservations"
_BOOK_BEFORE = "adapter_moysklad_order_reservations"
_EVERY_BOOKED = (
    f"(SELECT order_uuid, store_id, reservation_id, recorded_at FROM {_BOOK} "
    f"UNION ALL SELECT order_uuid, store_id, reservation_id, recorded_at FROM {_BOOK_BEFORE})"
)


@dataclass(frozen=True, slots=True)
class BookedReservation:
    """A reservation at `store_id` that a customer order the ledger made carries, the order made
    for the order id `order_id` (its `externalCode`)."""

    store_id: str
    order_id: str
    reservation_id: str


def _take_order_row(tx: Any, order_uuid: str, deleted_at: str | None) -> None:
    """The order's row, made if missing, marked deleted if `deleted_at`; on PostgreSQL the upsert
    holds the row until the transaction ends, which is what puts a deletion and a booking of one
    order one after the other (SQLite has one writer at a time)."""
    tx.execute(
        "INSERT INTO adapter_moysklad_orders (order_uuid, deleted_at, recorded_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (order_uuid) DO UPDATE SET "
        "deleted_at = COALESCE(adapter_moysklad_orders.deleted_at, excluded.deleted_at)",
        (order_uuid, deleted_at, now_text()),
    )


def remember_order(recorder: Any, order_uuid: str, carried: BookedReservation) -> bool:
    """Books the reservation under the order (booked before: left as it was); False, and nothing
    booked, if the order was deleted."""
    with transaction(recorder) as tx:
        _take_order_row(tx, order_uuid, None)
        row = tx.fetchone(
            "SELECT deleted_at FROM adapter_moysklad_orders WHERE order_uuid = %s", (order_uuid,)
        )
        if row is not None and row["deleted_at"] is not None:
            return False
        booked = (order_uuid, carried.reservation_id, carried.store_id, carried.order_id, now_text())
        tx.execute(
            f"INSERT INTO {_BOOK} (order_uuid, reservation_id, store_id, order_id, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_uuid, store_id, reservation_id) DO NOTHING",
            booked,
        )
        tx.execute(
            f"INSERT INTO {_BOOK_BEFORE} (order_uuid, reservation_id, store_id, order_id, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_uuid, reservation_id) DO NOTHING",
            booked,
        )
    return True


def mark_deleted(recorder: Any, order_uuid: str) -> list[BookedReservation]:
    """Marks the order deleted; returns the reservations booked under it (none: the ledger did
    not make it, or made it before the book existed and booked nothing under it since)."""
    with transaction(recorder) as tx:
        _take_order_row(tx, order_uuid, now_text())
        return _booked(tx, order_uuid)


def booked_reservations(recorder: Any, order_uuid: str) -> list[BookedReservation]:
    """The reservations booked under the order."""
    with transaction(recorder) as tx:
        return _booked(tx, order_uuid)


def _booked(tx: Any, order_uuid: str) -> list[BookedReservation]:
    rows = tx.fetchall(
        "SELECT store_id, order_id, reservation_id, MIN(recorded_at) AS booked_at FROM ("
        f"SELECT store_id, order_id, reservation_id, recorded_at FROM {_BOOK} WHERE order_uuid = %s "
        "UNION ALL "
        f"SELECT store_id, order_id, reservation_id, recorded_at FROM {_BOOK_BEFORE} WHERE order_uuid = %s"
        ") b GROUP BY store_id, order_id, reservation_id ORDER BY booked_at, reservation_id, store_id",
        (order_uuid, order_uuid),
    )
    return [BookedReservation(str(r["store_id"]), str(r["order_id"]), str(r["reservation_id"])) for r in rows]


# An order the book may let go (parameters: `before` three times): unchanged since `before`, and
# none of its booked reservations missing from the ledger or still holding units there.
_PRUNABLE = (
    "o.recorded_at < %s AND (o.deleted_at IS NULL OR o.deleted_at < %s) "
    f"AND NOT EXISTS (SELECT 1 FROM {_EVERY_BOOKED} b "
    "LEFT JOIN ledger_reservations r ON r.store_id = b.store_id AND r.reservation_id = b.reservation_id "
    "WHERE b.order_uuid = o.order_uuid AND (b.recorded_at >= %s OR r.reservation_id IS NULL "
    f"OR r.status IN ({', '.join(repr(status) for status in _HOLDING)})))"
)


def prune(recorder: Any, before: str, orders_max: int = PRUNE_ORDERS_MAX) -> int:
    """Takes out of the book at most `orders_max` orders none of whose booked reservations still
    holds units, unchanged since `before` (a time as now_text writes it); returns how many. Each
    order's row is locked (as a deletion and a booking lock it) and checked again before it goes:
    a booking under it that came in between keeps it."""
    with transaction(recorder) as tx:
        candidates = [
            str(row["order_uuid"])
            for row in tx.fetchall(
                f"SELECT o.order_uuid FROM adapter_moysklad_orders o WHERE {_PRUNABLE} "
                "ORDER BY o.recorded_at, o.order_uuid LIMIT %s",
                (before, before, before, orders_max),
            )
        ]
        pruned = 0
        for order_uuid in candidates:
            tx.execute(
                "UPDATE adapter_moysklad_orders SET recorded_at = recorded_at WHERE order_uuid = %s",
                (order_uuid,),
            )
            still = tx.fetchone(
                "SELECT 1 AS prunable FROM adapter_moysklad_orders o "
                f"WHERE o.order_uuid = %s AND {_PRUNABLE}",
                (order_uuid, before, before, before),
            )
            if still is None:
                continue
            tx.execute(f"DELETE FROM {_BOOK} WHERE order_uuid = %s", (order_uuid,))
            tx.execute(f"DELETE FROM {_BOOK_BEFORE} WHERE order_uuid = %s", (order_uuid,))
            tx.execute("DELETE FROM adapter_moysklad_orders WHERE order_uuid = %s", (order_uuid,))
            pruned += 1
    return pruned
