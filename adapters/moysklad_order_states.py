"""The state each MoySklad customer order was last seen in, by the ledger's own move or a
notification read back (`adapter_moysklad_order_states`): a cancel is a move *into* the state
mapped as `released` (moysklad_order_cancels.py), not an order found there. A customer order is
reused by a later reservation of the same order id (moysklad.py, `_create_order`) while it may
still be in that state: read back again, it must not release the new reservation."""

from __future__ import annotations

from typing import Any

from adapters.db import now_text, transaction


def seen_state(recorder: Any, order_uuid: str) -> str | None:
    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT state FROM adapter_moysklad_order_states WHERE order_uuid = %s", (order_uuid,)
        )
    return str(row["state"]) if row else None


def remember_state(recorder: Any, order_uuid: str, state: str) -> None:
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_moysklad_order_states (order_uuid, state, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (order_uuid) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (order_uuid, state, now_text()),
        )
