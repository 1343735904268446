"""Explain's index of reservation lines (ledger_reservation_lines) against what it must hold: one
row per line of every reservation, with what the line still holds, recomputed here from the
reservations' own rows (their `lines` JSON, `[[sku, qty, shipped, released], ...]`)."""

from __future__ import annotations

from typing import Any

import orjson

from ledger.sql import SqlTx


def index_rows(tx: SqlTx) -> list[tuple[Any, ...]]:
    rows = tx.fetchall(
        "SELECT store_id, reservation_id, sku, remaining, placed_at_position, position "
        "FROM ledger_reservation_lines"
    )
    return sorted(
        (row["store_id"], row["reservation_id"], row["sku"], int(row["remaining"]),
         int(row["placed_at_position"]), int(row["position"]))
        for row in rows
    )  # fmt: skip


def recomputed_rows(tx: SqlTx) -> list[tuple[Any, ...]]:
    rows = tx.fetchall(
        "SELECT store_id, reservation_id, lines, placed_at_position, position FROM ledger_reservations"
    )
    return sorted(
        (row["store_id"], row["reservation_id"], sku, int(qty) - int(shipped) - int(released),
         int(row["placed_at_position"]), int(row["position"]))
        for row in rows
        for sku, qty, shipped, released in orjson.loads(row["lines"])
    )  # fmt: skip


def assert_index_is_the_reservations(tx: SqlTx) -> None:
    assert index_rows(tx) == recomputed_rows(tx)
