"""The picking orders asked of the WMS whose answer is not kept yet (adapters/wms.py).

A row is written before `POST /api/v1/orders` and deleted once the order the WMS made is kept in
`adapter_wms_orders`. A row left behind is a request whose answer was lost (a timeout, a process
that died before keeping it): the WMS may hold an order the adapter has no id of. The WMS finds an
order by its `external_id` only through the create itself (seed 000: "re-sending updates the
existing record rather than creating a new one"; the fake answers the order it has, 200), so the
row keeps the body as sent: re-sent when its reservation has nothing left for it, it answers the
order to cancel, if the WMS made one. Only a request written here is re-sent, so a reservation
released before it was ever sent makes no order in the WMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from adapters.db import now_text, transaction
from ledger.sql import SqlTx


@dataclass(frozen=True, slots=True)
class Request:
    external_id: str
    store_id: str
    reservation_id: str
    order_id: str | None
    zone: str
    lines: list[list[Any]]  # [sku, units] as the ledger names them
    body: dict[str, Any]  # what POST /api/v1/orders was sent


def note(recorder: Any, request: Request) -> None:
    """Kept at once, before the request goes: the first body sent is kept, the one the WMS made
    its order from."""
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_wms_requests (external_id, store_id, reservation_id, order_id, zone, "
            "lines, body, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (external_id) "
            "DO NOTHING",
            (
                request.external_id,
                request.store_id,
                request.reservation_id,
                request.order_id,
                request.zone,
                orjson.dumps(request.lines).decode(),
                orjson.dumps(request.body).decode(),
                now_text(),
            ),
        )


def forget(tx: SqlTx, external_id: str) -> None:
    tx.execute("DELETE FROM adapter_wms_requests WHERE external_id = %s", (external_id,))


def unanswered(recorder: Any, store_id: str, reservation_id: str) -> list[Request]:
    """The reservation's requests whose picking order is not kept."""
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT * FROM adapter_wms_requests WHERE store_id = %s AND reservation_id = %s AND "
            "external_id NOT IN (SELECT external_id FROM adapter_wms_orders) ORDER BY external_id",
            (store_id, reservation_id),
        )
    return [
        Request(
            row["external_id"],
            row["store_id"],
            row["reservation_id"],
            row["order_id"],
            row["zone"],
            orjson.loads(row["lines"]),
            orjson.loads(row["body"]),
        )
        for row in rows
    ]
