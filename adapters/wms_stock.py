"""The WMS's stock report (`GET /api/v1/stock`) as a reconciliation snapshot that states what it covers.

Seed 002 defines a row's figures: available = on_hand - reserved - in_picking, in a warehouse with
address storage (one row per SKU and zone). The ledger's on-hand holds the units reserved and
being picked as well (they leave it with the shipment), so the figure compared is the WMS's
`qty_on_hand`, summed over the zones of a SKU; the identity is checked on every row, and a row
that breaks it (or has no whole figures) is not trusted: its SKU is left out of the snapshot,
so it is not compared and never changed (not even counted as 0 by `--absent-as-zero`), and the
report's description counts it. So is an article mapped from one SKU that is also the name of another
SKU the ledger holds with no `wms,sku` row (adapters/wms_articles.py): the WMS's rows of it may be
either's, so both are left out.

Only what was read is covered (snapshots.py): a SKU the report does not list is left untouched
unless the run says `--absent-as-zero`. Every page is read to the end (`page`, `per_page`,
`total`), at most `stock_pages_max` of them; a longer report is refused rather than cut, and so is
one that moved while it was read (its `total` changed, or a row came twice): a row that slid from
one page to the next in between would be missing, and with `--absent-as-zero` counted as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.snapshots import Snapshot
from adapters.wms import SYSTEM, WmsClient
from adapters.wms_articles import colliding_articles, collision
from ledger.domain.ids import ID_PATTERN

log = secret_safe_logger("adapters.wms_stock")

Progress = Callable[[int], object]
BASE_UNIT = "unit"
_FIGURES = ("qty_on_hand", "qty_reserved", "qty_in_picking")


class StockReadRefused(Exception):
    """The stock report could not be read whole and still: nothing is compared."""


def read_wms_snapshot(client: WmsClient, mappings: Mappings, progress: Progress | None = None) -> Snapshot:
    """`qty_on_hand` of every SKU the WMS lists in every mapped warehouse, in base units."""
    mappings = mappings.frozen()
    on_hand: dict[tuple[str, str], int] = {}
    untrusted: dict[tuple[str, str], str] = {}
    pages = 0
    mappings.one_to_one(SYSTEM, "sku")  # an article shared by two SKUs (an older load): MappingError
    colliding = colliding_articles(mappings, mappings.recorder)
    for store_id, ref in sorted(mappings.stores_one_to_one(SYSTEM).items()):
        rows, read = _read_warehouse(client, ref.external_id)
        pages += read
        for article, owner in colliding.items():  # listed or not: either SKU's figure is unknown
            for either in (article, owner):
                untrusted[(store_id, either)] = collision(article, owner)
        for row in rows:
            sku = _ledger_sku(mappings, row.get("sku"))
            if sku is None or (store_id, sku) in untrusted:
                continue
            units, problem = _on_hand_units(mappings, sku, row)
            if problem is not None:
                untrusted[(store_id, sku)] = problem
                continue
            on_hand[(store_id, sku)] = on_hand.get((store_id, sku), 0) + units
        if progress:
            progress(1)
    for (store_id, sku), problem in sorted(untrusted.items()):
        on_hand.pop((store_id, sku), None)  # one untrusted zone makes the SKU's sum unknown
        log.warning("wms stock of %s/%s left out of the snapshot: %s", store_id, sku, problem)
    description = (
        f"wms GET /api/v1/stock (available_only=false, {pages} page(s)), mapped warehouses, qty_on_hand"
        + (f"; {len(untrusted)} SKU(s) left out, their rows not trusted" if untrusted else "")
    )
    read_stores = frozenset(mappings.all(SYSTEM, "store"))
    return Snapshot("wms", description, on_hand, unknown=frozenset(untrusted), read_stores=read_stores)


def _read_warehouse(client: WmsClient, warehouse: str) -> tuple[list[dict[str, Any]], int]:
    """Every row of one warehouse's report, and how many pages that took."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    total: int | None = None
    per_page = client.config.stock_per_page
    for page in range(1, client.config.stock_pages_max + 1):
        body = client.stock_page(warehouse, page)
        items, page_total = body["items"], body.get("total")
        if not isinstance(page_total, int) or (total is not None and page_total != total):
            raise StockReadRefused(
                f"the WMS's stock of {warehouse} changed while it was read (total {total}, then "
                f"{page_total} on page {page}); run the reconciliation again"
            )
        total = page_total
        for item in items:
            key = (str(item.get("sku")), str(item.get("zone")))
            if key in seen:
                raise StockReadRefused(
                    f"the WMS's stock of {warehouse} listed {key[0]} (zone {key[1]}) twice: it moved "
                    "while it was read; run the reconciliation again"
                )
            seen.add(key)
            rows.append(item)
        if len(items) < per_page or len(rows) >= total:
            if len(rows) != total:
                raise StockReadRefused(
                    f"the WMS's stock of {warehouse} has {total} rows but {len(rows)} were read; "
                    "run the reconciliation again"
                )
            return rows, page
    raise StockReadRefused(
        f"the WMS's stock of {warehouse} has more than {client.config.stock_pages_max} pages of "
        f"{per_page} rows: raise LEDGER_WMS_STOCK_PAGES_MAX (nothing was compared)"
    )


def _ledger_sku(mappings: Mappings, article: object) -> str | None:
    """The ledger SKU of a WMS article: its mapping, else the article itself when no other SKU is
    mapped to it and it is a valid SKU (the picking orders send unmapped SKUs as they are)."""
    if not isinstance(article, str):
        return None
    mapped = mappings.local(SYSTEM, "sku", article)
    if mapped is not None:
        return mapped
    if mappings.external(SYSTEM, "sku", article) is not None or not ID_PATTERN.fullmatch(article):
        return None  # that SKU goes to the WMS under another article; this one is not ours
    return article


def _on_hand_units(mappings: Mappings, sku: str, row: dict[str, Any]) -> tuple[int, str | None]:
    figures = [row.get(name) for name in _FIGURES]
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in figures):
        return 0, f"{', '.join(_FIGURES)} must be whole numbers, got {figures}"
    on_hand, reserved, in_picking = (int(value) for value in figures)  # type: ignore[arg-type]
    available = row.get("available")
    if available is not None and available != on_hand - reserved - in_picking:
        return 0, (
            f"available {available} is not on_hand - reserved - in_picking "
            f"({on_hand} - {reserved} - {in_picking})"
        )
    uom = row.get("uom") or BASE_UNIT
    if uom == BASE_UNIT:
        return on_hand, None
    unit = mappings.unit(SYSTEM, sku)
    if unit is None or unit[0] != uom:
        return 0, f"unknown unit {uom!r} (load a wms,unit mapping)"
    return on_hand * unit[1], None
