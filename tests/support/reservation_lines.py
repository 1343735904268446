"""Explain's index of reservation lines (ledger_reservation_lines) against what it must hold: one
row per line of every reservation, with what the line still holds, recomputed here from the
reservations' own rows (their `lines` JSON, `[[sku, qty, shipped, released], ...]`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ledger.sql import SqlTx

IndexRow = tuple[str, str, str, int, int, int]  # store, reservation, SKU, remaining, placed at, position


def rows_of_index(lines: Iterable[Mapping[str, Any]]) -> list[IndexRow]:
    return sorted(
        (row["store_id"], row["reservation_id"], row["sku"], int(row["remaining"]),
         int(row["placed_at_position"]), int(row["position"]))
        for row in lines
    )  # fmt: skip


def recomputed_from(reservations: Iterable[Mapping[str, Any]]) -> list[IndexRow]:
    return sorted(
        (row["store_id"], row["reservation_id"], sku, int(qty) - int(shipped) - int(released),
         int(row["placed_at_position"]), int(row["position"]))
        for row in reservations
        for sku, qty, shipped, released in orjson.loads(row["lines"])
    )  # fmt: skip


def index_rows(tx: SqlTx) -> list[IndexRow]:
    return rows_of_index(tx.fetchall("SELECT * FROM ledger_reservation_lines"))


def recomputed_rows(tx: SqlTx) -> list[IndexRow]:
    return recomputed_from(tx.fetchall("SELECT * FROM ledger_reservations"))


def assert_index_is_the_reservations(tx: SqlTx) -> None:
    assert index_rows(tx) == recomputed_rows(tx)
