"""Marking codes (Честный знак) and SSCCs in the WMS loop (seed 002, CONTRACT §10).

Out: a picking order carries, per line, the codes its reservation asked for (the `codes` of the
`stock.reservation` lines), less those already shipped under it. In: once the WMS says a picking
order is shipped, the codes it reports as used (`used_codes`, what the picker scanned, which may
differ from what was asked) go on the shipment's lines, so the history keeps them and
`?code=` finds them. A code the ledger would refuse (CONTRACT §10: at most qty, 1 to 200 printable
ASCII characters, none twice in one event) is left off the shipment, which is recorded all the
same (the goods have left), and an alert names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from adapters.mappings import Mappings
from ledger.domain.model import Line
from ledger.intake.envelope import CODE_PATTERN
from ledger.sql import SqlTx


def codes_to_pick(
    tx: SqlTx, store_id: str, reservation_id: str, remaining_units: Mapping[str, int]
) -> dict[str, list[str]]:
    """The codes of each SKU still to pick under the reservation; a SKU whose codes outnumber its
    remaining units (some shipped under codes not recorded) goes without: a wrong code is worse
    than none."""
    asked: dict[str, list[str]] = {}
    shipped: set[str] = set()
    for row in tx.fetchall(
        "SELECT type, sku, codes FROM ledger_history WHERE store_id = %s AND reservation_id = %s "
        "AND codes IS NOT NULL AND outcome = 'accepted' ORDER BY position, line_no",
        (store_id, reservation_id),
    ):
        if row["type"] == "stock.reservation":
            asked.setdefault(row["sku"], []).extend(orjson.loads(row["codes"]))
        elif row["type"] == "stock.shipment":
            shipped.update(orjson.loads(row["codes"]))
    to_pick: dict[str, list[str]] = {}
    for sku, codes in asked.items():
        left = [code for code in codes if code not in shipped]
        if left and len(left) <= remaining_units.get(sku, 0):
            to_pick[sku] = left
    return to_pick


def shipped_lines(
    mappings: Mappings, lines: Sequence[tuple[str, int]], wms_order: Mapping[str, Any] | None
) -> tuple[list[Line], list[str]]:
    """The shipment's lines with the codes the WMS used, and what was left off (one note each).

    An article is read back as the SKU of the order's own lines that goes under it (its `wms,sku`
    row's article, or its name without one), before the mappings' reverse: a row loaded after
    the order was sent may name the article for another SKU (adapters/wms_articles.py), and the
    codes went to that SKU, which the order does not hold, and were lost. An article two of the
    order's SKUs go under is not read back as either: its codes are left off, with a note."""
    sent_under: dict[str, set[str]] = {}
    for sku, _qty in lines:
        ref = mappings.external("wms", "sku", sku)
        sent_under.setdefault(ref.external_id if ref else sku, set()).add(sku)
    used: dict[str, list[Any]] = {}
    notes: list[str] = []
    for wire_line in (wms_order or {}).get("lines") or []:
        if not isinstance(wire_line, dict) or not isinstance(wire_line.get("used_codes"), list):
            continue
        article = str(wire_line.get("sku"))
        owners = sent_under.get(article, set())
        if len(owners) > 1:
            notes.append(
                f"article {article}: codes left off, the order sent {', '.join(sorted(owners))} under it"
            )
            continue
        sku = next(iter(owners)) if owners else (mappings.local("wms", "sku", article) or article)
        used.setdefault(sku, []).extend(wire_line["used_codes"])
    seen: set[str] = set()
    shipped: list[Line] = []
    for sku, qty in lines:
        kept: list[str] = []
        for code in used.get(sku, []):
            if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
                notes.append(f"{sku}: {str(code)[:60]!r} is not a marking code")
            elif code in seen:
                notes.append(f"{sku}: {code} reported twice")
            elif len(kept) >= qty:
                notes.append(f"{sku}: {code} is beyond the {qty} unit(s) shipped")
            else:
                kept.append(code)
                seen.add(code)
        shipped.append(Line(sku, qty, tuple(kept)))
    return shipped, notes
