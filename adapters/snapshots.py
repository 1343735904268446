"""External stock snapshots for reconciliation, each stating what it covers.

A snapshot says what some (store, SKU) pairs hold, in the ledger's base units. A pair it lists is
*covered*. A pair it does not list is unknown, not 0: a shop counts part of its shelves, and
MoySklad's report leaves out products whose stock is not recomputed yet or that the user may not
see. Only a snapshot known to be complete for a store (`complete_stores`, e.g. a run with
`--absent-as-zero`) covers the pairs it does not list, as 0, and then only for the SKUs in its
scope (for MoySklad: the SKUs mapped to it; a CSV count: every SKU).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM as MOYSKLAD
from adapters.moysklad import MoySkladClient, entity_id
from ledger.domain.ids import ID_PATTERN

log = secret_safe_logger("adapters.snapshots")

Progress = Callable[[int], object]
CSV_ROWS_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    source: str  # csv | moysklad
    description: str  # where it came from, for the report: a file, a report and its options
    on_hand: Mapping[tuple[str, str], int]  # (store, sku) -> units it lists
    complete_stores: frozenset[str] = frozenset()  # stores where an unlisted SKU holds 0
    sku_scope: frozenset[str] | None = None  # the SKUs a complete store vouches for; None: all
    # Pairs the source listed but whose figures are not trusted: never covered, even by a
    # complete store (a WMS row that breaks its own identity is not a 0).
    unknown: frozenset[tuple[str, str]] = frozenset()
    # The stores the source was read for (a MoySklad or WMS read: every mapped one, listed or not);
    # None: the stores it lists. Only these can be vouched complete.
    read_stores: frozenset[str] | None = None

    @property
    def stores(self) -> frozenset[str]:
        return frozenset(store for store, _ in self.on_hand) | self.complete_stores

    def covers(self, store_id: str, sku: str) -> bool:
        if (store_id, sku) in self.unknown:
            return False
        if (store_id, sku) in self.on_hand:
            return True
        return store_id in self.complete_stores and (self.sku_scope is None or sku in self.sku_scope)

    def units(self, store_id: str, sku: str) -> int:
        return self.on_hand.get((store_id, sku), 0)

    @property
    def stores_read(self) -> frozenset[str]:
        if self.read_stores is not None:
            return self.read_stores
        return frozenset(store for store, _ in self.on_hand)

    def absent_as_zero(self, stores: Iterable[str]) -> Snapshot:
        """The same snapshot, vouching that every SKU in scope it does not list in `stores` holds 0.
        Refused (UnreadStores) for a store the source was not read for: it would zero a store
        nobody counted."""
        unread = sorted(set(stores) - self.stores_read)
        if unread:
            raise UnreadStores(
                f"the {self.source} snapshot was not read for store(s) {', '.join(unread)}, so it cannot "
                "say they hold 0 of what it does not list"
            )
        return dataclasses.replace(self, complete_stores=self.complete_stores | frozenset(stores))


class UnreadStores(ValueError):
    """--absent-as-zero for a store the snapshot was not read for."""


def read_csv_snapshot(path: Path, mappings: Mappings | None = None) -> Snapshot:
    """`store_id,sku,on_hand[,uom]`: the pairs counted. A partial count covers only its lines."""
    on_hand: dict[tuple[str, str], int] = {}
    mappings = mappings.frozen() if mappings is not None else None
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for column in ("store_id", "sku", "on_hand"):
            if column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: the header must name store_id, sku, on_hand (and optionally uom)")
        for line_no, row in enumerate(reader, start=2):
            if line_no > CSV_ROWS_MAX + 1:
                raise ValueError(f"{path}: more than {CSV_ROWS_MAX} rows")
            store_id, sku = (row["store_id"] or "").strip(), (row["sku"] or "").strip()
            if not ID_PATTERN.fullmatch(store_id) or not ID_PATTERN.fullmatch(sku):
                raise ValueError(f"{path}:{line_no}: store_id and sku must be ledger ids")
            try:
                qty = int((row["on_hand"] or "").strip())
            except ValueError:
                raise ValueError(f"{path}:{line_no}: on_hand must be an integer") from None
            uom = (row.get("uom") or "").strip()
            if uom and mappings is not None:
                unit = mappings.unit("csv", sku)
                if unit is None or unit[0] != uom:
                    raise ValueError(
                        f"{path}:{line_no}: unknown unit {uom!r} for {sku} (load a csv,unit mapping)"
                    )
                qty *= unit[1]
            on_hand[(store_id, sku)] = on_hand.get((store_id, sku), 0) + qty
    return Snapshot("csv", str(path), on_hand)


def read_moysklad_snapshot(
    client: MoySkladClient, mappings: Mappings, progress: Progress | None = None
) -> Snapshot:
    """`stock` of every mapped product/variant in every mapped store (unmapped rows are skipped)."""
    on_hand: dict[tuple[str, str], int] = {}
    mappings = mappings.frozen()
    mapped_skus = frozenset(mappings.one_to_one(MOYSKLAD, "sku"))  # a shared one: MappingError
    for store_id, ref in sorted(mappings.stores_one_to_one(MOYSKLAD).items()):
        skipped = 0
        for row in client.stock_rows(ref.external_id):
            _, assortment_uuid = entity_id(row["meta"]["href"])
            sku = mappings.local(MOYSKLAD, "sku", assortment_uuid)
            if sku is None:
                skipped += 1
                continue
            try:
                on_hand[(store_id, sku)] = mappings.to_base_units(MOYSKLAD, sku, row.get("stock") or 0)
            except ValueError as error:  # a fractional stock: no whole number of units to compare
                raise ValueError(f"moysklad stock of {store_id}: {error}") from None
        if skipped:
            log.info("moysklad store %s: %d report rows have no SKU mapping, skipped", store_id, skipped)
        if progress:
            progress(1)
    description = (
        "moysklad report/stock/all (quantityMode=all, archived too, every page), mapped stores and SKUs"
    )
    read_stores = frozenset(mappings.all(MOYSKLAD, "store"))
    return Snapshot("moysklad", description, on_hand, sku_scope=mapped_skus, read_stores=read_stores)
