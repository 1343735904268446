"""Sourcing over REST (CONTRACT §6): where an order can be served, by the rule of
ledger/domain/sourcing.py; with `reserve`, the writer chooses and reserves in one decision."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ledger.access.scopes import Grant, authorize_source, authorize_store, visible_stores
from ledger.api.deps import IntakeDep, LedgerDep, ProducerGrant, SettingsDep, principal
from ledger.api.events import parse_json
from ledger.api.media import JSON_ONLY, require_media_type
from ledger.api.problems import Problem, invalid
from ledger.api.reservations import json_response
from ledger.api.reservations_across import (
    across_limits,
    across_public,
    placed_public,
    refusal,
)
from ledger.api.schemas import problem_responses
from ledger.api.schemas_across import SourcingPublic
from ledger.clock import utc_now
from ledger.domain.across_stores import holds_order
from ledger.domain.model import Outcome, RejectionReason
from ledger.domain.sourcing import Allocation, SearchTooLong, choose
from ledger.intake.across_body import AcrossLimits, SourcingAsk, read_sourcing, sourcing_command
from ledger.intake.envelope import FieldError, InvalidEvent
from ledger.results import EventResult
from ledger.service import Ledger, ReservationView

router = APIRouter(tags=["sourcing"])

# The source of what sourcing reserves; its event id is the reservation id (idempotent by the
# log's own key, CONTRACT §6: the same request again answers the same).
SOURCING_SOURCE = "ledger/sourcing"
# The stores read for a token scoped to stores, before those it may not see are left out: the
# candidates' limit applies to what the token sees.
SCOPED_CANDIDATES_READ_MAX = 1_000_000


def _too_hard(steps_max: int) -> Problem:
    return invalid(
        [
            FieldError(
                "stores",
                f"finding the fewest stores for this order would take more than {steps_max} steps "
                "(LEDGER_SOURCING_SEARCH_STEPS_MAX): name fewer candidates, or lower max_stores",
            )
        ]
    )


async def _candidates(
    ledger: Ledger, ask: SourcingAsk, limits: AcrossLimits, grant: Grant | None
) -> tuple[str, ...]:
    """The candidates named (each in the token's scope), or every store where any SKU of the order
    is available, by id (those a scoped token covers): the only stores that could serve any of
    it, so the rule chooses as it would over every store."""
    if ask.reserve is not None:  # whether or not the stores are named
        authorize_source(grant, SOURCING_SOURCE)
    if ask.candidates is not None:
        if grant is not None:  # an open service authorizes everything
            for store in ask.candidates:
                authorize_store(grant, store)
        return ask.candidates
    skus = [line.sku for line in ask.lines]
    # A token scoped to stores sees the whole list first: the limit is on what it may see.
    scoped = grant is not None and grant.stores is not None
    bound = SCOPED_CANDIDATES_READ_MAX if scoped else limits.candidates_max + 1
    found = await asyncio.to_thread(ledger.stores_with_available, skus, bound)
    stores = visible_stores(grant, found)
    if len(stores) > limits.candidates_max:
        raise invalid(
            [
                FieldError(
                    "stores", f"more than {limits.candidates_max} stores hold these SKUs: name the candidates"
                )
            ]
        )
    return tuple(stores)


def _allocations(stores: list[tuple[str, list[tuple[str, int]]]]) -> list[dict[str, Any]]:
    return [
        {"store": store, "lines": [{"sku": sku, "qty": qty} for sku, qty in lines]} for store, lines in stores
    ]


def _held_allocation(held: list[ReservationView], named: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The allocation a reservation placed earlier holds, in the candidate order of the request as
    given: the stores named, else every store by id (CONTRACT §6). Never the stores found again for
    the retry: those no longer include a store the first request emptied, and the same request
    again answers the same body. (Parts at stores not named come last, by store id.)"""
    order = {store: index for index, store in enumerate(named or ())}
    held = sorted(held, key=lambda v: (order.get(v.reservation.store_id, len(order)), v.reservation.store_id))
    return _allocations(
        [
            (v.reservation.store_id, [(sku, line.qty_units) for sku, line in v.reservation.lines.items()])
            for v in held
        ]
    )


def _holds(held: list[ReservationView], ask: SourcingAsk) -> bool:
    """The reservation held is this order's: its parts hold its lines."""
    return bool(held) and holds_order([view.reservation for view in held], ask.lines)


def _unsourceable(shortfall: list[dict[str, Any]]) -> Problem:
    return Problem(
        409,
        "insufficient-stock",
        "Insufficient stock",
        "no set of candidate stores within max_stores can serve every line; nothing was reserved",
        shortfall=shortfall,
    )


@router.post(
    "/v1/sourcing",
    response_model=SourcingPublic,
    responses=problem_responses(403, 409, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SourcingRequest"}}},
        }
    },
    summary="Where an order can be served; with `reserve`, reserve it there in the same step",
)
async def source(
    request: Request, ledger: LedgerDep, settings: SettingsDep, intake: IntakeDep, grant: ProducerGrant
) -> Response:
    require_media_type(request.scope["headers"], JSON_ONLY)
    return await source_order(ledger, across_limits(settings, intake), await request.body(), grant)


async def source_order(
    ledger: Ledger, limits: AcrossLimits, raw_body: bytes, grant: Grant | None
) -> Response:
    """Answers a sourcing request body; raises Problem for every refusal. The caller has checked the
    token's role and the content type. (Called by the route above and by the fast path,
    ledger/api/fastpath.py.)"""
    now = utc_now()
    try:
        ask = read_sourcing(parse_json(raw_body), limits, SOURCING_SOURCE, now)
    except InvalidEvent as error:
        raise invalid(error.errors) from None
    candidates = await _candidates(ledger, ask, limits, grant)
    if not candidates:
        if ask.reserve is not None and ask.reservation_id is not None:
            # The same request again, after it took the last units, is not sent to the writer (it
            # has nothing to allocate): the parts are those its command placed, found by its key
            # (a sourcing command's id is its reservation id).
            placed_at = await asyncio.to_thread(ledger.accepted_at, SOURCING_SOURCE, ask.reservation_id)
            if placed_at is not None:
                held = await _held(ledger, ask, candidates, ask.reservation_id, grant, placed_at)
                if _holds(held, ask):
                    return _answer_held(held, ask.candidates)
        shortfall = [{"sku": line.sku, "requested": line.qty_units, "available": 0} for line in ask.lines]
        raise _unsourceable(shortfall)
    if ask.reserve is None:
        return await _ask_only(ledger, ask, candidates, limits)
    try:
        command = sourcing_command(ask, candidates, limits, SOURCING_SOURCE, now, principal(grant))
    except InvalidEvent as error:
        raise invalid(error.errors) from None
    [result] = await ledger.submit([command])
    assert command.reservation_id is not None
    if result.outcome is Outcome.ACCEPTED:
        allocations = _allocations([(store, list(lines)) for store, lines in result.placed])
        body = {
            "allocations": allocations,
            "reservation": placed_public(command, result),
            "position": result.position,
        }
        return json_response(body)
    if result.outcome is Outcome.DUPLICATE:
        placed_at = result.original.position if result.original is not None else None
        held = await _held(ledger, ask, candidates, command.reservation_id, grant, placed_at)
        if not _holds(held, ask):
            conflict = EventResult("", "", "", Outcome.REJECTED, RejectionReason.RESERVATION_CONFLICT)
            raise refusal(conflict, command.reservation_id)
        return _answer_held(held, ask.candidates)
    if result.outcome is Outcome.INVALID:
        raise _too_hard(limits.search_steps_max)
    raise refusal(result, command.reservation_id)


async def _held(
    ledger: Ledger,
    ask: SourcingAsk,
    candidates: tuple[str, ...],
    reservation_id: str | None,
    grant: Grant | None,
    placed_at: int | None,
) -> list[ReservationView]:
    """The parts of the reservation this request placed earlier, among those the token sees.
    Reservation ids are unique per store only (CONTRACT §1), so another store may hold this id for
    another order: the parts are those one event placed together, at `placed_at` (the position the
    writer answers a duplicate with, or that of the sourcing command's key). Failing that, the parts
    at the candidates: the writer takes those for the same request again when they hold the order
    between them, whichever events placed them (per-store reservations made beforehand under this
    id)."""
    assert reservation_id is not None
    # Read by the stores concerned, never as every store's reservation under the id: other stores
    # may hold it for orders of their own, more of them than such a read takes.
    if placed_at is not None:
        views = await asyncio.to_thread(ledger.reservations_placed_at, reservation_id, placed_at)
        seen = set(visible_stores(grant, [v.reservation.store_id for v in views]))
        together = [v for v in views if v.reservation.store_id in seen]
        if _holds(together, ask):
            return together
    views = await asyncio.to_thread(ledger.reservations_at, reservation_id, list(candidates))
    seen = set(visible_stores(grant, [v.reservation.store_id for v in views]))
    return [v for v in views if v.reservation.store_id in seen]


def _answer_held(held: list[ReservationView], named: tuple[str, ...] | None) -> Response:
    body = {
        "allocations": _held_allocation(held, named),
        "reservation": across_public(held),
        "position": max(v.reservation.placed_at_position for v in held),
    }
    return json_response(body)


async def _ask_only(
    ledger: Ledger, ask: SourcingAsk, candidates: tuple[str, ...], limits: AcrossLimits
) -> Response:
    """Without `reserve` the answer is the rule over this instance's current figures (no write)."""
    skus = [line.sku for line in ask.lines]
    figures = await asyncio.to_thread(ledger.limits_for, candidates, skus, ask.channel)
    try:
        chosen = choose(
            ask.lines,
            candidates,
            ask.max_stores,
            lambda store, sku: figures[(store, sku)],
            limits.search_steps_max,
        )
    except SearchTooLong:
        raise _too_hard(limits.search_steps_max) from None
    if not isinstance(chosen, Allocation):
        raise _unsourceable(
            [
                {"sku": s.sku, "requested": s.requested_units, "available": s.available_units}
                for s in chosen.shortfall
            ]
        )
    stores = [(store, [(line.sku, line.qty_units) for line in lines]) for store, lines in chosen.stores]
    return json_response({"allocations": _allocations(stores)})
