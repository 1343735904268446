"""Stock levels: one SKU at a store, several SKUs at a store, one SKU across stores; now or then."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from ledger.access.scopes import visible_stores
from ledger.api.deps import LedgerDep, ReadableStore, ReaderGrant, SettingsDep, Sku
from ledger.api.problems import Problem, invalid
from ledger.api.query_numbers import DECIMAL_DIGITS
from ledger.api.schemas import (
    POSITION_MAX,
    SkuAcrossStoresPublic,
    StockLevelPublic,
    StockLevelsPublic,
    level_public,
    problem_responses,
    totals_public,
)
from ledger.api.times import time_parameter
from ledger.domain.ids import ID_REGEX
from ledger.domain.policy import effective_policy
from ledger.intake.envelope import FieldError
from ledger.service import Ledger, LevelView

router = APIRouter(tags=["stock"])
_SKU_PATTERN = re.compile(ID_REGEX)

AsOf = Annotated[str | None, Query(description="RFC 3339: the levels as they were then")]
OccurredAsOf = Annotated[
    str | None,
    Query(
        description="RFC 3339: the levels summed over every entry whose event `time` is at or before "
        "then, as recorded now (business time; not with as_of or position), with the policy in force "
        "then and what its channels' reservations held then. `position` is that of the latest entry "
        "summed, 0 when none. An expiry is dated when the ledger expired the reservation (within "
        "LEDGER_EXPIRY_INTERVAL_MS of its expires_at; for a history imported past it, at the import)"
    ),
]
AtPosition = Annotated[
    int | None,
    Query(
        ge=0,
        le=POSITION_MAX,
        description=(
            "the levels after this log position; beyond the log's head, the head's levels "
            "(position = the head)"
        ),
    ),
    DECIMAL_DIGITS,
]
MinPosition = Annotated[
    int | None,
    Query(
        ge=0,
        le=POSITION_MAX,
        description="wait (briefly) until this instance has applied this position: read-your-writes "
        "across instances",
    ),
    DECIMAL_DIGITS,
]


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _levels(
    ledger: Ledger,
    store: str,
    skus: list[str],
    as_of: str | None,
    position: int | None,
    min_position: int | None,
    occurred_as_of: str | None = None,
) -> list[LevelView]:
    if as_of is not None and position is not None:
        raise invalid([FieldError("as_of", "give as_of or position, not both")])
    if occurred_as_of is not None:
        if as_of is not None or position is not None:
            raise invalid([FieldError("occurred_as_of", "give occurred_as_of, as_of or position, not two")])
        occurred = time_parameter("occurred_as_of", occurred_as_of)
        assert occurred is not None
        return await asyncio.to_thread(ledger.levels_occurred_at, store, skus, occurred)
    moment = time_parameter("as_of", as_of)
    if moment is not None or position is not None:
        return await asyncio.to_thread(ledger.levels_at, store, skus, position=position, as_of=moment)
    if min_position is not None and not await ledger.wait_for_position(min_position):
        if ledger.database_ok:
            # The wait read the database's head after this request came: no write had been
            # answered with that position, so no client can be waiting for it.
            raise invalid(
                [FieldError("min_position", f"is past the log's head ({ledger.cache.head}): no write has it")]
            )
        raise Problem(
            503,
            "position-not-reached",
            "This instance has not reached that position yet",
            f"position {min_position} is not applied here yet; retry",
            position=ledger.cache.head,
        )
    if len(skus) == 1:
        cached = cached_level(ledger, store, skus[0])
        if cached is not None:
            return [cached]
    return await asyncio.to_thread(ledger.levels, store, skus)


def cached_level(ledger: Ledger, store: str, sku: str) -> LevelView | None:
    """The hot path of a stock read: from memory, no database round trip, no thread hop. A store
    whose policies memory does not hold is read from the database with them."""
    cache = ledger.cache
    store_policies = cache.store_policies.get(store)
    if store_policies is None:
        return None
    cached = cache.get_level((store, sku))
    if cached is None:
        return None
    policy = effective_policy(store_policies, sku) if store_policies else None
    return LevelView(store, sku, cached.level, cache.head, cached.updated_at, policy)


@router.get(
    "/v1/stores/{store}/stock/{sku}", response_model=StockLevelPublic, responses=problem_responses(422, 503)
)
async def get_stock(
    store: ReadableStore,
    sku: Sku,
    ledger: LedgerDep,
    as_of: AsOf = None,
    position: AtPosition = None,
    min_position: MinPosition = None,
    occurred_as_of: OccurredAsOf = None,
) -> Response:
    [view] = await _levels(ledger, store, [sku], as_of, position, min_position, occurred_as_of)
    return _json(level_public(view))


@router.get(
    "/v1/stores/{store}/stock", response_model=StockLevelsPublic, responses=problem_responses(422, 503)
)
async def get_stock_many(
    store: ReadableStore,
    ledger: LedgerDep,
    settings: SettingsDep,
    sku: Annotated[list[str], Query(description="repeat for several SKUs")],
    as_of: AsOf = None,
    position: AtPosition = None,
    min_position: MinPosition = None,
    occurred_as_of: OccurredAsOf = None,
) -> Response:
    errors = [
        FieldError(f"sku[{i}]", "must be 1 to 64 ASCII letters, digits or -_.: characters")
        for i, s in enumerate(sku)
        if not _SKU_PATTERN.fullmatch(s)
    ]
    if not sku or len(sku) > settings.skus_per_lookup_max:
        errors.append(FieldError("sku", f"give 1 to {settings.skus_per_lookup_max} SKUs"))
    if errors:
        raise invalid(errors)
    unique = list(dict.fromkeys(sku))
    views = await _levels(ledger, store, unique, as_of, position, min_position, occurred_as_of)
    return _json({"items": [level_public(view) for view in views]})


@router.get("/v1/stock/{sku}", response_model=SkuAcrossStoresPublic, responses=problem_responses(422, 503))
async def get_sku_across_stores(
    sku: Sku, ledger: LedgerDep, grant: ReaderGrant, occurred_as_of: OccurredAsOf = None
) -> Response:
    """A store-scoped token sees its stores only, and totals over them (CONTRACT §5)."""
    occurred = time_parameter("occurred_as_of", occurred_as_of)
    _, position, stores = await asyncio.to_thread(ledger.sku_totals, sku, occurred)
    if grant is not None and grant.stores is not None:
        visible = set(visible_stores(grant, [view.store_id for view in stores]))
        stores = [view for view in stores if view.store_id in visible]
        if occurred is not None:  # the latest entry summed: of these stores, not of the others
            position = max((view.position for view in stores), default=0)
    return _json(
        {
            "sku": sku,
            "total": totals_public(stores),
            "position": position,
            "stores": [level_public(view) for view in stores],
        }
    )
