"""1C-Bitrix as an outbound target: product levels, per-store amounts and order statuses.

The calls go through bitrix_client.py (webhook, `batch`, limits). What the public REST
documentation says of the methods pushed, and where (bitrix24/b24restdocs on GitHub, the source of
apidocs.bitrix24.com; dev.1c-bitrix.ru for the older pages):

- `catalog.product.update` / `catalog.product.offer.update` (api-reference/catalog/product/
  catalog-product-update.md, .../offer/catalog-product-offer-update.md): `id` and `fields`, among
  them `quantity` and `quantityReserved`, both "Not editable when inventory management is
  enabled". QUANTITY is the available quantity (dev.1c-bitrix.ru, CCatalogProduct::Update:
  "QUANTITY - доступное количество товара; QUANTITY_RESERVED - зарезервированное количество").
- Per-store amounts are read-only through `catalog.storeproduct.*` (api-reference/catalog/
  store-product/index.md: list, get, getFields; "To modify inventory balances, use inventory
  management documents"). So with inventory management enabled we read the amounts with
  `catalog.storeproduct.list` and move them with documents: `catalog.document.add` (fields
  `docType`, `currency`, `responsibleId`, `title`, `commentary`; types from
  catalog.enum.getStoreDocumentTypes: A stock receipt, D write-off, ...),
  `catalog.document.element.add` (fields `docId`, `elementId`, `storeTo` for incoming, `storeFrom`
  for outgoing, `amount`), and `catalog.document.conduct` (`id`; "the warehouse stock of goods is
  updated according to the document's items").
- `catalog.storeproduct.list` (catalog-store-product-list.md): a filter key takes a prefix, and
  "`@` - IN, the value is an array" (`!@` NOT IN; no prefix or `=` is equality); pages are always
  50 rows, `start` picks one, `total` counts them all (in a batch: `result_total`). We ask for
  `@productId` and `@storeId` in pieces of at most 50 (product, store) pairs, and a `total` above
  the rows read fails the push rather than move a store by a wrong difference.
- A receipt needs a supplier: conducting one without fails with "Document conducting error:
  Supplier not specified" (catalog-document-conduct.md). Where vendors are not CRM entities
  (1C-Bitrix site management) the document's `contractorId` names one; the dev.1c-bitrix.ru
  example of catalog.document.add sets `'contractorId': '1'`, hence our default `contractor:1`.
  Where they are (Bitrix24, catalog 23.0.0+), `catalog.documentcontractor.add` binds a CRM
  company (`entityTypeId` 4) or contact (3) to the receipt: LEDGER_BITRIX_RECEIPT_SUPPLIER
  `company:<id>` or `contact:<id>` (ids from crm.item.list in the CATALOG_CONTRACTOR_* categories).
- `catalog.document.mode.status` (no parameters) answers "Y" when inventory management is on:
  checked at start (`check_mode`) and logged, with an alert when it does not suit
  LEDGER_BITRIX_PUSH (quantities cannot be set with it on; documents cannot be conducted off).
- Order statuses: `sale.order.update` with `id` and `fields.statusId`.

Because quantity and per-store amounts exclude each other on one portal, `LEDGER_BITRIX_PUSH`
chooses `product` (catalog.product.update; default) or `documents` (inventory documents).

Idempotency: a product push sets a value, so pushing it twice is harmless. A document push moves a
store's amount by (ledger amount - Bitrix amount read just before), so a repeated push moves it by
zero. One shape is assumed where the pages do not show it: `catalog.document.add` answering
`{"document": {"id": ...}}` (the pattern of catalog.document.element.add's `{"documentElement": ...}`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.bitrix_client import BATCH_COMMANDS_MAX, BitrixClient
from adapters.db import journal, transaction
from adapters.mappings import BITRIX_ORDER_STATES, Mappings
from adapters.masking import secret_safe_logger
from adapters.order_states import order_state_now
from adapters.outbound import Failure, Item, TargetUnavailable
from ledger.domain.model import DEFAULT_SKU, Entry, EventType, Level, Policy
from ledger.domain.policy import effective_policy, limit_units
from ledger.projections.queries import store_policies
from ledger.sql import SqlTx, chunks, placeholders
from ledger.state_cache import policy_from_text

log = secret_safe_logger("adapters.bitrix")

SYSTEM = "bitrix"
SKU_KEY = "sku:"
STATUS_KEY = "status:"
STORE_PRODUCT_PAGE = 50  # list methods answer 50 rows a page (limits.md)
DOCUMENT_ITEMS_PER_PUSH = 800
CRM_ENTITY_TYPES = {"contact": 3, "company": 4}  # catalog.documentcontractor.add: entityTypeId


@dataclass(frozen=True, slots=True)
class Supplier:
    """Who a receipt (A) comes from: `contractor:<id>`, `company:<id>` or `contact:<id>`."""

    kind: str
    entity_id: int

    @classmethod
    def parse(cls, text: str) -> Supplier:
        kind, _, number = text.partition(":")
        if kind not in ("contractor", *CRM_ENTITY_TYPES) or not number.isdigit() or int(number) < 1:
            raise ValueError(
                f"a receipt supplier is contractor:<id>, company:<id> or contact:<id>, not {text!r}"
            )
        return cls(kind, int(number))


@dataclass(frozen=True, slots=True)
class BitrixConfig:
    """One portal: how it is reached (the client's Connection) and what is pushed to it."""

    webhook_url: str
    push: frozenset[str] = frozenset({"product"})  # product and/or documents
    batch_commands_max: int = BATCH_COMMANDS_MAX
    burst_requests_max: int = 50  # X of the leaky bucket
    requests_per_s: float = 2.0  # Y of the leaky bucket
    timeout_s: float = 10.0
    document_currency: str = "RUB"
    responsible_id: int = 1
    store_amount: str = "available"  # what a store's amount in Bitrix is: available or on_hand
    receipt_supplier: Supplier = Supplier("contractor", 1)
    # CONTRACT §6: with a channel (LEDGER_BITRIX_CHANNEL, e.g. `online`), what the site may sell is
    # the figure a reservation of that channel would be limited by at each store (the channel's
    # sellable where it has a quota there, else the store's sellable), not `available`.
    channel: str | None = None


class BitrixTarget:
    """Levels of mapped SKUs, summed over the stores mapped to the site; and queued order statuses."""

    name = "bitrix"

    def __init__(
        self, recorder: Any, mappings: Mappings, config: BitrixConfig, client: BitrixClient | None = None
    ) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.config = config
        self.client = client or BitrixClient(config)
        # One push call is retried as a whole if a request fails. Product updates: one batch a call.
        # Documents: the store amounts of up to 800 products are read in one batch of 50 list commands
        # (16 products x 3 stores a page), then moved by as many documents as needed.
        self.batch_items_max = (
            config.batch_commands_max if "documents" not in config.push else (DOCUMENT_ITEMS_PER_PUSH)
        )

    # -- which keys changed, and their newest values ------------------------------------------------

    def _stores(self) -> dict[str, str]:
        return {store: ref.external_id for store, ref in self.mappings.all(SYSTEM, "store").items()}

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        if entry.store_id not in self._stores():
            return ()
        if entry.event.type == EventType.POLICY_CHANGED:
            # A policy moves a channel's figure, never `available`: pushed only with a channel.
            if self.config.channel is None:
                return ()
            if any(e.sku == DEFAULT_SKU for e in entry.effects):
                return self.all_keys()  # the store's default: every SKU without its own policy
            return [SKU_KEY + e.sku for e in entry.effects]
        return [SKU_KEY + e.sku for e in entry.effects if e.on_hand_delta or e.reserved_delta]

    def all_keys(self) -> Iterable[str]:
        return [SKU_KEY + sku for sku in sorted(self.mappings.all(SYSTEM, "sku"))]

    def load(self, keys: Sequence[str]) -> list[Item]:
        stores = self._stores()
        products = self.mappings.all(SYSTEM, "sku")
        skus = [
            key[len(SKU_KEY) :] for key in keys if key.startswith(SKU_KEY) and key[len(SKU_KEY) :] in products
        ]
        if not skus or not stores:
            return []
        levels: dict[str, dict[str, Level]] = defaultdict(dict)
        with self.recorder.read_transaction() as tx:
            for part in chunks(skus, 500):
                for row in _levels(tx, list(stores), list(part)):
                    levels[row["sku"]][row["store_id"]] = _level(row)
            policies = self._policies(tx, list(stores))
        items = []
        for sku in skus:
            ref = products[sku]
            per_store = levels.get(sku, {})
            available = sum(
                max(0, self._sellable(level, effective_policy(policies.get(store), sku)))
                for store, level in per_store.items()
            )
            reserved = sum(level.reserved_units for level in per_store.values())
            amounts = {
                stores[store]: self._units(
                    sku,
                    self._store_amount(
                        per_store.get(store, Level()), effective_policy(policies.get(store), sku)
                    ),
                )
                for store in stores
            }
            items.append(
                Item(
                    SKU_KEY + sku,
                    {
                        "sku": sku,
                        "product_id": ref.external_id,
                        "product_type": ref.external_type or "product",
                        "quantity": self._units(sku, available),
                        "quantity_reserved": self._units(sku, reserved),
                        "store_amounts": amounts,
                    },
                )
            )
        return items

    def _policies(self, tx: SqlTx, stores: list[str]) -> dict[str, dict[str, Policy]]:
        """The mapped stores' policies, read only when a channel is pushed (else none apply)."""
        if self.config.channel is None:
            return {}
        stored = store_policies(tx, stores)
        return {
            store: {key: policy_from_text(text) for key, text in by_key.items()}
            for store, by_key in stored.items()
        }

    def _sellable(self, level: Level, policy: Policy | None) -> int:
        """What the site may sell of one store's level: `available`, or the channel's figure."""
        if self.config.channel is None:
            return level.available_units
        return limit_units(level, policy, self.config.channel)

    def _store_amount(self, level: Level, policy: Policy | None) -> int:
        if self.config.store_amount == "on_hand":
            return level.on_hand_units
        return max(0, self._sellable(level, policy))

    def _statuses_now(self, statuses: list[Item]) -> list[Item]:
        """Each status queued from an order's shipping state, with the state the ledger holds now
        (order_states.py): queued by two processes that shipped two parts at once, the one queued
        last may be the older. A status the WMS queued, or one queued before its reservation id
        was, is pushed as queued; so is one whose state now has no `bitrix,status` row."""
        derived = [item for item in statuses if "reservation_id" in item.payload]
        if not derived:
            return statuses
        rules = {state: self.mappings.status(SYSTEM, state) for state in BITRIX_ORDER_STATES}
        # By the order's parts, not by the key: a parked status retried and the WMS's queued since
        # share the key `status:<order id>`, and the WMS's goes as queued.
        with self.recorder.read_transaction() as tx:
            now = {
                (item.payload["reservation_id"], item.payload["order_id"]): order_state_now(
                    tx, item.payload["reservation_id"], item.payload["order_id"]
                )
                for item in derived
            }
        fresh = []
        for item in statuses:
            if "reservation_id" not in item.payload:
                fresh.append(item)
                continue
            state = now[(item.payload["reservation_id"], item.payload["order_id"])]
            rule = rules.get(state) if state else None
            if rule is None or state == item.payload.get("reservation_state"):
                fresh.append(item)
                continue
            payload = {**item.payload, "status_id": rule.target_status, "reservation_state": state}
            fresh.append(Item(item.key, payload, item.outbox_version))
        return fresh

    def _units(self, sku: str, base_units: int) -> int:
        return self.mappings.to_external_units(SYSTEM, sku, base_units)

    # -- pushing ------------------------------------------------------------------------------------

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        failures: dict[str, Failure] = {}
        levels = [item for item in items if item.key.startswith(SKU_KEY)]
        statuses = [item for item in items if item.key.startswith(STATUS_KEY)]
        others = [item for item in items if item not in levels and item not in statuses]
        statuses = self._statuses_now(statuses)
        for item in others:
            failures[item.key] = Failure(f"bitrix cannot push an item keyed {item.key!r}", permanent=True)
        # A product mapped from two SKUs (loaded by an older release) would show whichever SKU went
        # last: parked, naming the mapping, until it is put right.
        shared = self.mappings.shared(SYSTEM, "sku")
        for item in levels:
            skus = shared.get(str(item.payload["product_id"]))
            if skus:
                error = self.mappings.shared_error(SYSTEM, "sku", str(item.payload["product_id"]), skus)
                failures[item.key] = Failure(str(error), permanent=True)
        levels = [item for item in levels if item.key not in failures]
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
        owners: dict[str, str] = {}
        if "product" in self.config.push:
            for index, item in enumerate(levels):
                method = (
                    "catalog.product.offer.update"
                    if item.payload["product_type"] == "offer"
                    else ("catalog.product.update")
                )
                commands[f"p{index}"] = (
                    method,
                    {
                        "id": item.payload["product_id"],
                        "fields": {
                            "quantity": item.payload["quantity"],
                            "quantityReserved": item.payload["quantity_reserved"],
                        },
                    },
                )
                owners[f"p{index}"] = item.key
        for index, item in enumerate(statuses):
            commands[f"s{index}"] = (
                "sale.order.update",
                {
                    "id": item.payload["order_id"],
                    "fields": {
                        "statusId": item.payload["status_id"],
                    },
                },
            )
            owners[f"s{index}"] = item.key
        # An item whose whole push got through before a command met a blocked method is not sent again;
        # a level still to be moved by documents is not through yet.
        done: set[str] = set()
        for part in chunks(list(commands), self.config.batch_commands_max):
            answer = self.client.batch({key: commands[key] for key in part})
            through = {owners[key] for key in part if key in answer.results}
            answer.raise_if_unavailable(frozenset(self._whole(done | through)))
            for key in part:
                if key in answer.errors:
                    failures[owners[key]] = Failure(answer.errors[key])
                elif key not in answer.results:
                    failures[owners[key]] = Failure("no result for the command in the batch answer")
            done |= through
        if "documents" in self.config.push and levels:
            try:
                failures.update(self._push_documents([i for i in levels if i.key not in failures]))
            except TargetUnavailable as error:  # the statuses set above are not set again
                raise TargetUnavailable(
                    str(error), error.retry_after_s, frozenset(self._whole(done))
                ) from error
        return failures

    def _whole(self, keys: set[str]) -> set[str]:
        """The keys among these whose push is complete: with documents, a level is not yet."""
        if "documents" not in self.config.push:
            return keys
        return {key for key in keys if not key.startswith(SKU_KEY)}

    def _push_documents(self, items: Sequence[Item]) -> dict[str, Failure]:
        """Moves each (product, store) amount to the ledger's with a receipt (A) or write-off (D).

        Write-offs first, and an item whose write-off was refused gets no receipt this time: the
        product's quantity on the site is the sum of its stores, so a receipt conducted while a
        write-off of the same product kept failing (or before an outage stopped the push between
        the two) showed more than the ledger had to sell. This way the site shows, meanwhile, no
        more than it did before the push or than the ledger holds, whichever is more; the item is
        retried (then parked) and moves every store by its difference again. Nothing in the
        documents ties one document to another (catalog.document.conduct checks only its own
        lines), so the order is ours to choose."""
        current = self._store_amounts(items)
        moves: dict[str, list[tuple[Item, str, int]]] = {"D": [], "A": []}
        for item in items:
            for store_id, amount in item.payload["store_amounts"].items():
                delta = int(amount) - current.get((str(item.payload["product_id"]), str(store_id)), 0)
                if delta:
                    moves["A" if delta > 0 else "D"].append((item, str(store_id), abs(delta)))
        failures: dict[str, Failure] = {}
        for doc_type, moved in moves.items():
            lines = [line for line in moved if line[0].key not in failures]  # a refused write-off: no receipt
            per_batch = self.config.batch_commands_max - 3  # the document, its supplier, the conduct
            for part in chunks(lines, per_batch):
                failures.update(self._document(doc_type, list(part)))
        return failures

    def _document(self, doc_type: str, lines: list[tuple[Item, str, int]]) -> dict[str, Failure]:
        fields: dict[str, Any] = {
            "docType": doc_type,
            "currency": self.config.document_currency,
            "responsibleId": self.config.responsible_id,
            "title": "stock ledger sync",
            "commentary": "levels pushed by the stock ledger",
        }
        supplier = self.config.receipt_supplier
        if doc_type == "A" and supplier.kind == "contractor":
            fields["contractorId"] = supplier.entity_id
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {
            "doc": ("catalog.document.add", {"fields": fields})
        }
        if doc_type == "A" and supplier.kind in CRM_ENTITY_TYPES:
            commands["supplier"] = (
                "catalog.documentcontractor.add",
                {
                    "fields": {
                        "documentId": "$result[doc][document][id]",
                        "entityTypeId": CRM_ENTITY_TYPES[supplier.kind],
                        "entityId": supplier.entity_id,
                    }
                },
            )
        owners: dict[str, set[str]] = defaultdict(set)
        for index, (item, store_id, amount) in enumerate(lines):
            store_field = "storeTo" if doc_type == "A" else "storeFrom"
            commands[f"e{index}"] = (
                "catalog.document.element.add",
                {
                    "fields": {
                        "docId": "$result[doc][document][id]",
                        "elementId": item.payload["product_id"],
                        store_field: store_id,
                        "amount": amount,
                    }
                },
            )
            owners[f"e{index}"].add(item.key)
        commands["conduct"] = ("catalog.document.conduct", {"id": "$result[doc][document][id]"})
        answer = self.client.batch(commands, halt=False)
        # A blocked document method refuses no line: the push is retried later, and since it moves each
        # store by the difference read just before, a document left unconducted here moves nothing twice.
        answer.raise_if_unavailable()
        failures: dict[str, Failure] = {}
        every_key = {item.key for item, _, _ in lines}
        for key in ("doc", "supplier", "conduct"):
            if key in answer.errors:
                return {k: Failure(f"{doc_type} document: {answer.errors[key]}") for k in every_key}
        for command, keys in owners.items():
            if command in answer.errors:
                for key in keys:
                    failures[key] = Failure(f"{doc_type} document line: {answer.errors[command]}")
        return failures

    def _store_amounts(self, items: Sequence[Item]) -> dict[tuple[str, str], int]:
        """Bitrix's current amount of each (product, store) of the items (catalog.storeproduct.list)."""
        product_ids = sorted({str(item.payload["product_id"]) for item in items})
        store_ids = sorted({str(s) for item in items for s in item.payload["store_amounts"]})
        amounts: dict[tuple[str, str], int] = {}
        per_page = max(1, STORE_PRODUCT_PAGE // max(1, len(store_ids)))
        commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for index, part in enumerate(chunks(product_ids, per_page)):
            commands[f"l{index}"] = (
                "catalog.storeproduct.list",
                {
                    "select": ["productId", "storeId", "amount"],
                    "filter": {"@productId": list(part), "@storeId": store_ids},  # "@": IN, an array
                },
            )
        for part in chunks(list(commands), self.config.batch_commands_max):
            answer = self.client.batch({key: commands[key] for key in part})
            answer.raise_if_unavailable()
            if answer.errors:
                raise TargetUnavailable(
                    f"bitrix catalog.storeproduct.list: {next(iter(answer.errors.values()))}"
                )
            for key, result in answer.results.items():
                rows = result.get("storeProducts", []) if isinstance(result, Mapping) else []
                if answer.totals.get(key, 0) > len(rows):
                    # A store amount not read would be taken as 0 and moved by its whole amount.
                    raise TargetUnavailable(
                        f"bitrix catalog.storeproduct.list: {answer.totals[key]} rows, {len(rows)} read"
                    )
                for row in rows:
                    amounts[(str(row["productId"]), str(row["storeId"]))] = int(float(row.get("amount") or 0))
        return amounts

    def check_mode(self) -> str | None:
        """Asks the portal whether inventory management is on (catalog.document.mode.status), logs
        it, and raises an alert when it does not suit the push mode. None if it could not tell."""
        try:
            body = self.client.call("catalog.document.mode.status", {})
        except TargetUnavailable as error:
            log.warning("bitrix: could not read the inventory management mode: %s", error)
            return None
        mode = str(body.get("result"))
        log.info(
            "bitrix: inventory management (catalog.document.mode.status) is %s; pushing %s",
            "on" if mode == "Y" else "off",
            ", ".join(sorted(self.config.push)),
        )
        problem = None
        if mode == "Y" and "product" in self.config.push:
            problem = "inventory management is on: quantities cannot be set; set LEDGER_BITRIX_PUSH=documents"
        if mode == "N" and "documents" in self.config.push:
            problem = (
                "inventory management is off: documents cannot be conducted; set LEDGER_BITRIX_PUSH=product"
            )
        if problem:
            log.error("ALERT bitrix: %s", problem)
            with transaction(self.recorder) as tx:
                journal(tx, SYSTEM, "alert", "inventory management mode", problem)
        return mode

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        return None


def _level(row: Any) -> Level:
    channels = row["channels"]
    return Level(int(row["on_hand"]), int(row["reserved"]), 0, orjson.loads(channels) if channels else None)


def _levels(tx: SqlTx, stores: list[str], skus: list[str]) -> list[Any]:
    return tx.fetchall(
        "SELECT store_id, sku, on_hand, reserved, channels FROM ledger_levels WHERE store_id IN ("
        + placeholders(len(stores))
        + ") AND sku IN ("
        + placeholders(len(skus))
        + ")",
        [*stores, *skus],
    )
