"""Mappings between the ledger's ids and the external systems' ids, units and statuses.

Kept in the database (adapter_mappings, adapter_units, adapter_status_map), loaded from CSV with
`ledger mappings load FILE.csv`, and re-read by running adapters every `refresh_s`, so an edit takes
effect without a deploy. One CSV serves every kind of row:

    system,kind,local_id,external_id,external_type,factor
    bitrix,sku,SKU-1,1267,product,
    bitrix,sku,SKU-2,1301,offer,
    bitrix,store,store-12,2,,
    moysklad,sku,SKU-1,0b3c...-uuid,variant,
    moysklad,store,store-12,7a1f...-uuid,,
    wms,sku,SKU-1,SKU-1,,            (WMS article; defaults to the SKU itself)
    wms,store,store-12,main,,        (WMS warehouse)
    wms,zone,SKU-1,A,,               (picking zone: one picking order per zone)
    wms,unit,SKU-1,box,,12           (the WMS counts SKU-1 in boxes of 12)
    wms,status,PICKING,Q,,           (WMS status PICKING -> Bitrix order status Q)
    wms,status,PICKING_ERROR,PE,release,   (and release the reservation lines)
    bitrix,status,partially_shipped,PS,,   (an order a MoySklad demand shipped in part -> PS)

`unit` rows go to adapter_units (external_id is the unit name, factor the base units in one), and
`status` rows to adapter_status_map (local_id is the external system's status, external_id the
status to set in Bitrix, external_type an action). Everything else goes to adapter_mappings.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.db import is_sqlite, now_text, transaction
from ledger.domain.ids import ID_PATTERN

SYSTEMS = ("bitrix", "moysklad", "wms", "csv")
KINDS = ("sku", "store", "zone", "unit", "status")
CSV_COLUMNS = ("system", "kind", "local_id", "external_id", "external_type", "factor")
CSV_ROWS_MAX = 1_000_000
# What a status row may do besides setting the Bitrix status (adapters/wms.py): nothing (empty),
# release the order's reservation lines, or record its shipment.
STATUS_ACTIONS = ("release", "ship")
# The order states a `bitrix,status` row may name (adapters/moysklad_order_status.py).
BITRIX_ORDER_STATES = ("partially_shipped", "shipped")
# What a sku row's external item is, where the target has kinds of item (the first: the default).
SKU_TYPES = {"bitrix": ("product", "offer"), "moysklad": ("product", "variant", "bundle", "service")}
EXTERNAL_TEXT_CHARS_MAX = 256  # an external id, type or status (Bitrix's and MoySklad's are far shorter)
UNIT_FACTOR_MAX = 1_000_000  # base units in one external unit (a pallet of a million pieces at most)


class MappingError(ValueError):
    """A CSV row that cannot be loaded, with its line number."""


# Systems whose stores are read back by their external id (MoySklad's demands and stock report, the
# WMS's stock): one of their stores can stand for one ledger store only. Reconciled, each ledger
# store mapped to a shared one was given the whole of its stock (15 units read as 15 at each).
# Bitrix is not among them: its product quantity is the sum over the ledger stores mapped to it.
ONE_LEDGER_STORE_EACH = ("moysklad", "wms")
# And their items, read back the same way (MoySklad's demands and stock report by product or
# variant, the WMS's stock report and inbound receipts by article): one stands for one ledger SKU.
# So does a Bitrix product or offer: each SKU mapped to it set its quantity (or moved its store
# amounts) to its own figure, so the site showed whichever was pushed last.
ONE_SKU_EACH = ("bitrix", "moysklad", "wms")
_ITEM = {"bitrix": "product or offer", "moysklad": "product or variant", "wms": "article"}


@dataclass(frozen=True, slots=True)
class ExternalRef:
    external_id: str
    external_type: str | None


@dataclass(frozen=True, slots=True)
class StatusRule:
    target_status: str
    action: str | None


@dataclass(slots=True)
class Snapshot:
    """Every mapping of the database at one moment."""

    refs: dict[tuple[str, str], dict[str, ExternalRef]] = field(default_factory=dict)  # (system, kind)
    reverse: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # external -> local
    units: dict[str, dict[str, tuple[str, int]]] = field(
        default_factory=dict
    )  # system -> sku -> (uom, factor)
    statuses: dict[str, dict[str, StatusRule]] = field(default_factory=dict)
    # (system, kind) -> external id mapped from more than one ledger id -> those ids (Mappings.shared)
    shared: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)


class Mappings:
    """Cached view of the mapping tables, refreshed at most every `refresh_s` seconds."""

    def __init__(self, recorder: Any, refresh_s: float = 10.0) -> None:
        self.recorder = recorder
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._loaded_at = float("-inf")

    def snapshot(self) -> Snapshot:
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.refresh_s:
                self._snapshot = read_snapshot(self.recorder)
                self._loaded_at = time.monotonic()
            return self._snapshot

    def frozen(self) -> Mappings:
        """This moment's mappings, kept for one long read (a reconciliation looks up every row: a
        reload per lookup, as refresh_s=0 asks, made 10,000 rows cost 10,000 full reloads)."""
        view = Mappings(self.recorder, refresh_s=float("inf"))
        view._snapshot = self.snapshot()
        view._loaded_at = time.monotonic()
        return view

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")

    # -- lookups ------------------------------------------------------------------------------------

    def external(self, system: str, kind: str, local_id: str) -> ExternalRef | None:
        return self.snapshot().refs.get((system, kind), {}).get(local_id)

    def local(self, system: str, kind: str, external_id: str) -> str | None:
        return self.snapshot().reverse.get((system, kind), {}).get(external_id)

    def all(self, system: str, kind: str) -> dict[str, ExternalRef]:
        return dict(self.snapshot().refs.get((system, kind), {}))

    def stores_one_to_one(self, system: str) -> dict[str, ExternalRef]:
        """Every ledger store mapped to `system`, each to a store of its own; MappingError names an
        external store mapped from more than one (loaded before `save` refused it)."""
        return self.one_to_one(system, "store")

    def one_to_one(self, system: str, kind: str) -> dict[str, ExternalRef]:
        """Every ledger id of `kind` mapped to `system`, each to an external id of its own;
        MappingError names an external id mapped from more than one."""
        refs = self.all(system, kind)
        for external_id, local_ids in sorted(self.shared(system, kind).items()):
            raise MappingError(_shared(system, kind, external_id, local_ids))
        return refs

    def shared(self, system: str, kind: str) -> dict[str, list[str]]:
        """The external ids of `kind` mapped from more than one ledger id, to those ids (worked out
        once per snapshot: a demand or a push asks each time)."""
        snapshot = self.snapshot()
        found = snapshot.shared.get((system, kind))
        if found is None:
            by_external: dict[str, list[str]] = {}
            for local_id, ref in sorted(snapshot.refs.get((system, kind), {}).items()):
                by_external.setdefault(ref.external_id, []).append(local_id)
            found = {external_id: ids for external_id, ids in by_external.items() if len(ids) > 1}
            snapshot.shared[(system, kind)] = found
        return dict(found)

    def shared_error(self, system: str, kind: str, external_id: str, local_ids: list[str]) -> MappingError:
        return MappingError(_shared(system, kind, external_id, local_ids))

    def unit(self, system: str, sku: str) -> tuple[str, int] | None:
        return self.snapshot().units.get(system, {}).get(sku)

    def status(self, system: str, external_status: str) -> StatusRule | None:
        return self.snapshot().statuses.get(system, {}).get(external_status)

    # -- unit conversion ----------------------------------------------------------------------------

    def to_external_units(self, system: str, sku: str, base_units: int) -> int:
        """Whole external units that the base units make (floor: never claim more than there is)."""
        unit = self.unit(system, sku)
        return base_units // unit[1] if unit else base_units

    def to_base_units(self, system: str, sku: str, external_qty: float) -> int:
        """Base units of an external quantity; a fractional result is refused, not rounded."""
        unit = self.unit(system, sku)
        factor = unit[1] if unit else 1
        base = external_qty * factor
        if base != int(base):
            raise ValueError(f"{external_qty} x {factor} is not a whole number of base units of {sku}")
        return int(base)


def read_snapshot(recorder: Any) -> Snapshot:
    snapshot = Snapshot()
    with transaction(recorder) as tx:
        for row in tx.fetchall(
            "SELECT system, kind, local_id, external_id, external_type FROM adapter_mappings"
        ):
            key = (row["system"], row["kind"])
            snapshot.refs.setdefault(key, {})[row["local_id"]] = ExternalRef(
                row["external_id"], row["external_type"]
            )
            snapshot.reverse.setdefault(key, {})[row["external_id"]] = row["local_id"]
        for row in tx.fetchall("SELECT system, sku, uom, factor FROM adapter_units"):
            snapshot.units.setdefault(row["system"], {})[row["sku"]] = (row["uom"], int(row["factor"]))
        for row in tx.fetchall(
            "SELECT system, external_status, target_status, action FROM adapter_status_map"
        ):
            snapshot.statuses.setdefault(row["system"], {})[row["external_status"]] = StatusRule(
                row["target_status"], row["action"] or None
            )
    return snapshot


# -- loading and editing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingRow:
    system: str
    kind: str
    local_id: str
    external_id: str
    external_type: str | None = None
    factor: int | None = None


def parse_csv(path: Path) -> list[MappingRow]:
    """Every row of the file, checked; MappingError names the first wrong line."""
    rows: list[MappingRow] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise MappingError(f"{path}: the header must name {', '.join(CSV_COLUMNS)}; missing {missing}")
        for line_no, record in enumerate(reader, start=2):
            if line_no > CSV_ROWS_MAX:
                raise MappingError(f"{path}: more than {CSV_ROWS_MAX} rows")
            rows.append(_row(record, f"{path}:{line_no}"))
    return rows


def _row(record: dict[str, Any], where: str) -> MappingRow:
    def text(name: str) -> str:
        return (record.get(name) or "").strip()

    system, kind, local_id, external_id = text("system"), text("kind"), text("local_id"), text("external_id")
    if system not in SYSTEMS:
        raise MappingError(f"{where}: system must be one of {SYSTEMS}, not {system!r}")
    if kind not in KINDS:
        raise MappingError(f"{where}: kind must be one of {KINDS}, not {kind!r}")
    if not local_id or not external_id:
        raise MappingError(f"{where}: local_id and external_id are required")
    if kind in ("sku", "store", "zone", "unit") and not ID_PATTERN.fullmatch(local_id):
        raise MappingError(f"{where}: {local_id!r} is not a valid ledger id (1-64 of A-Za-z0-9-_.:)")
    external_type = text("external_type") or None
    for name, value in (
        ("local_id", local_id),
        ("external_id", external_id),
        ("external_type", external_type),
    ):
        if value is not None and ("\x00" in value or len(value) > EXTERNAL_TEXT_CHARS_MAX):
            raise MappingError(f"{where}: {name} holds a NUL or is over {EXTERNAL_TEXT_CHARS_MAX} characters")
    if kind == "status" and system == "bitrix" and (local_id not in BITRIX_ORDER_STATES or external_type):
        raise MappingError(
            f"{where}: a bitrix status row maps an order's state in the ledger "
            f"({', '.join(BITRIX_ORDER_STATES)}) to a Bitrix status id, with no action; not {local_id!r}"
            + (f" with {external_type!r}" if external_type else "")
        )
    if kind == "status" and external_type is not None and external_type not in STATUS_ACTIONS:
        raise MappingError(
            f"{where}: a status row's action (external_type) is empty or one of {STATUS_ACTIONS}, "
            f"not {external_type!r}"
        )
    kinds_of_item = SKU_TYPES.get(system)
    if kind == "sku" and kinds_of_item and external_type is not None and external_type not in kinds_of_item:
        # A typo here sent the item to the target as what it is not: refused there, each time.
        raise MappingError(
            f"{where}: a {system} sku row's external_type is empty ({kinds_of_item[0]}) or one of "
            f"{kinds_of_item}, not {external_type!r}"
        )
    factor: int | None = None
    if kind == "unit":
        try:
            factor = int(text("factor"))
        except ValueError:
            raise MappingError(f"{where}: a unit row needs an integer factor >= 1") from None
        if not 1 <= factor <= UNIT_FACTOR_MAX:
            raise MappingError(f"{where}: a unit row needs an integer factor from 1 to {UNIT_FACTOR_MAX}")
    return MappingRow(system, kind, local_id, external_id, external_type, factor)


def save(recorder: Any, rows: Iterable[MappingRow]) -> int:
    """Upserts the rows (a later row for the same key wins); returns how many were written."""
    stamp = now_text()
    count = 0
    with transaction(recorder) as tx:
        if not is_sqlite(recorder):
            # Two loads at once would each check the table without the other's rows (READ
            # COMMITTED) and both keep a store shared between them. SQLite's one writer serialises.
            tx.execute("LOCK TABLE adapter_mappings IN SHARE ROW EXCLUSIVE MODE")
        for row in rows:
            count += 1
            if row.kind == "unit":
                tx.execute(
                    "INSERT INTO adapter_units (system, sku, uom, factor, updated_at) VALUES (%s, "
                    "%s, %s, %s, %s) "
                    "ON CONFLICT (system, sku) DO UPDATE SET uom = excluded.uom, factor = excluded.factor, "
                    "updated_at = excluded.updated_at",
                    (row.system, row.local_id, row.external_id, row.factor, stamp),
                )
            elif row.kind == "status":
                tx.execute(
                    "INSERT INTO adapter_status_map (system, external_status, target_status, "
                    "action, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (system, external_status) DO UPDATE SET "
                    "target_status = excluded.target_status, action = excluded.action, "
                    "updated_at = excluded.updated_at",
                    (row.system, row.local_id, row.external_id, row.external_type, stamp),
                )
            else:
                tx.execute(
                    "INSERT INTO adapter_mappings (system, kind, local_id, external_id, "
                    "external_type, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (system, kind, local_id) DO UPDATE SET "
                    "external_id = excluded.external_id, external_type = excluded.external_type, "
                    "updated_at = excluded.updated_at",
                    (row.system, row.kind, row.local_id, row.external_id, row.external_type, stamp),
                )
        _refuse_shared_stores(tx)
    return count


def _refuse_shared_stores(tx: Any) -> None:
    """Checked on the table as the load leaves it (rows loaded before count too); raised inside the
    load's transaction, so nothing of the file is kept. MoySklad's products and variants and the
    WMS's articles as well: their demands, stock reports and receipts are read back by them, so
    one mapped from two ledger SKUs gave one of them the stock of both (and the other, vouched
    complete, 0)."""
    systems = ", ".join(f"'{system}'" for system in ONE_LEDGER_STORE_EACH)
    sku_systems = ", ".join(f"'{system}'" for system in ONE_SKU_EACH)
    row = tx.fetchone(
        "SELECT system, kind, external_id FROM adapter_mappings "
        f"WHERE (kind = 'store' AND system IN ({systems})) "
        f"OR (kind = 'sku' AND system IN ({sku_systems})) "
        "GROUP BY system, kind, external_id HAVING COUNT(*) > 1 ORDER BY system, kind, external_id LIMIT 1"
    )
    if row is not None:
        local_ids = [
            found["local_id"]
            for found in tx.fetchall(
                "SELECT local_id FROM adapter_mappings WHERE system = %s AND kind = %s "
                "AND external_id = %s ORDER BY local_id",
                (row["system"], row["kind"], row["external_id"]),
            )
        ]
        shared = _shared(row["system"], row["kind"], row["external_id"], local_ids)
        raise MappingError(shared + "; nothing loaded")


def _shared(system: str, kind: str, external_id: str, local_ids: list[str]) -> str:
    what = "store" if kind == "store" else _ITEM.get(system, "item")
    return (
        f"{system} {kind} {external_id} is mapped from {len(local_ids)} ledger {kind}s "
        f"({', '.join(local_ids)}): each {system} {what} stands for one ledger {kind}"
    )


def load_csv(recorder: Any, path: Path) -> int:
    """Checks the whole file first, then writes it in one transaction (all rows or none)."""
    return save(recorder, parse_csv(path))
