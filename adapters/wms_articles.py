"""Which WMS article a ledger SKU travels under, and which SKU an article read back stands for.

A SKU with a `wms,sku` row travels under that row's article; one without, under its own name
(README, Mappings). The two ways collide when a SKU without a row is named as another SKU's
article (`wms,sku,SKU-A,SKU-B` while SKU-B has no row): SKU-B's picking orders and expected
receipts go out as article SKU-B, which the WMS and every read of it take for SKU-A, so SKU-B's
units were picked as SKU-A's and the stock report gave SKU-A the units of both (and SKU-B,
vouched complete, 0). Nothing tells the two apart once they share an article, so the collision is
refused where it shows: a push of the unmapped SKU is refused (and parked, naming it), and the
article is not read back as either SKU (the stock report leaves both out, an expected receipt of it
is held with an alert) until a person maps one of them elsewhere.
"""

from __future__ import annotations

from typing import Any

from adapters.mappings import MappingError, Mappings

SYSTEM = "wms"
LOOKUP_SKUS_MAX = 500  # SKUs looked up in the ledger per query (a bound on the statement's parameters)


class ArticleCollision(MappingError):
    """A SKU without a `wms,sku` row whose name is another SKU's mapped article."""


def article_of(mappings: Mappings, sku: str) -> str:
    """The article `sku` travels under; ArticleCollision if it has no row of its own and its name is
    another SKU's article (it would reach the WMS as that SKU)."""
    ref = mappings.external(SYSTEM, "sku", sku)
    if ref is not None:
        return ref.external_id
    owner = mappings.local(SYSTEM, "sku", sku)
    if owner is not None:
        raise ArticleCollision(collision(sku, owner))
    return sku


def colliding_articles(mappings: Mappings, recorder: Any) -> dict[str, str]:
    """Every mapped article that is also the name of a SKU the ledger holds (a level in any store)
    with no `wms,sku` row of its own, to the SKU mapped to it: the WMS's rows of such an article
    may be either SKU's. Called outside any transaction: the mappings may be read afresh first."""
    refs = mappings.all(SYSTEM, "sku")
    owners = {ref.external_id: sku for sku, ref in sorted(refs.items())}
    candidates = sorted(article for article, sku in owners.items() if article != sku and article not in refs)
    found: dict[str, str] = {}
    with recorder.read_transaction() as tx:
        for start in range(0, len(candidates), LOOKUP_SKUS_MAX):
            chunk = candidates[start : start + LOOKUP_SKUS_MAX]
            marks = ", ".join(["%s"] * len(chunk))
            for row in tx.fetchall(f"SELECT DISTINCT sku FROM ledger_levels WHERE sku IN ({marks})", chunk):
                found[str(row["sku"])] = owners[str(row["sku"])]
    return found


def collision(article: str, owner: str) -> str:
    return (
        f"wms article {article} is the mapped article of ledger sku {owner} and also the name of ledger "
        f"sku {article}, which has no wms sku row and so travels under its own name: the WMS cannot tell "
        f"them apart; map {article} to an article of its own (wms,sku,{article},<article>) or {owner} "
        "to another"
    )
