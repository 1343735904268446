"""A webhook delivery as the adapters keep it, and the one statement that stores it in the inbox.

A delivery is identified by (source, delivery_id): MoySklad's requestId, which a redelivery keeps,
or the sender's idempotency header, or a hash of the body. Storing it again changes nothing, so a
delivery stored twice (in the database and in the spool, say) is still processed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.sql import SqlTx

SOURCES = ("moysklad", "wms")
DELIVERY_ID_CHARS_MAX = 200

INSERT_SQL = (
    "INSERT INTO adapter_inbox (source, delivery_id, payload, received_at, attempts) "
    "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (source, delivery_id) DO NOTHING RETURNING delivery_id"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    source: str
    delivery_id: str
    received_at: str  # fixed-width UTC text (ledger.clock.utc_text): when the request arrived
    payload: str  # the body as JSON text

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown delivery source {self.source!r}")
        if not self.delivery_id or len(self.delivery_id) > DELIVERY_ID_CHARS_MAX:
            raise ValueError(f"a delivery id has 1 to {DELIVERY_ID_CHARS_MAX} characters")

    def row(self) -> tuple[Any, ...]:
        return (self.source, self.delivery_id, self.payload, self.received_at)


def insert_delivery(tx: SqlTx, delivery: Delivery) -> bool:
    """Stores the delivery; False if it was stored before. A write first, so that SQLite waits for
    its lock (a read first and a write after fails at once when another writer holds it)."""
    return bool(tx.fetchall(INSERT_SQL, delivery.row()))
