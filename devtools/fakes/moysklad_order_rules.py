"""What the fake MoySklad refuses of a new customer order (`POST entity/customerorder`,
md/documents/_customerOrder.md): positions required, each naming a product or variant the account
has, as the kind it is; a store the account has; and the `organization` and `agent` (a
counterparty), required at creation (seed 001, "Необходимо при создании"), each one the account
has. Where a page names a rule but not its error code, the code here is assumed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

POSITIONS_REQUIRED_CODE = 2016  # assumed
UNKNOWN_ENTITY_CODE = 1021
EMPTY_FIELD_CODE = 3000  # md/_errors.md: "Ошибка сохранения объекта"


def order_refusals(
    body: Any,
    products: Mapping[str, str],
    stores: Collection[str],
    organizations: Collection[str],
    counterparties: Collection[str],
) -> list[dict[str, Any]]:
    """The errors MoySklad answers for the order `body` (none: it is made). `products` maps each
    assortment uuid to its kind (`product` or `variant`)."""
    if not isinstance(body, dict) or not isinstance(body.get("positions"), list):
        return [{"error": "positions are required", "code": POSITIONS_REQUIRED_CODE}]
    errors = []
    for position in body["positions"]:
        href = ((position.get("assortment") or {}).get("meta") or {}).get("href") or ""
        kind, assortment = (href.split("/")[-2], href.split("/")[-1]) if href.count("/") >= 2 else ("", "")
        if products.get(assortment) != kind:
            errors.append({"error": f"unknown {kind} {assortment}", "code": UNKNOWN_ENTITY_CODE})
    store = ((body.get("store") or {}).get("meta") or {}).get("href", "").split("/")[-1]
    if store not in stores:
        errors.append({"error": f"unknown store {store}", "code": UNKNOWN_ENTITY_CODE})
    for name, entity, known in (
        ("organization", "organization", organizations),
        ("agent", "counterparty", counterparties),
    ):
        href = ((body.get(name) or {}).get("meta") or {}).get("href") or ""
        if not href:
            empty = f"Ошибка сохранения объекта: поле '{name}' не может быть пустым"
            errors.append({"error": empty, "code": EMPTY_FIELD_CODE})
        elif href.split("/")[-2:-1] != [entity] or href.split("/")[-1] not in known:
            errors.append({"error": f"unknown {entity} {href.split('/')[-1]}", "code": UNKNOWN_ENTITY_CODE})
    return errors
