"""Reservations across stores over REST (CONTRACT §6): place every line at its store, all or
none, in one decision of the writer; read and release every part."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ledger.access.scopes import Forbidden, Grant, authorize_store, authorize_write_at
from ledger.api.deps import (
    REST_SOURCE,
    IntakeDep,
    LedgerDep,
    ProducerGrant,
    ReaderGrant,
    ReservationId,
    SettingsDep,
    principal,
)
from ledger.api.events import parse_json
from ledger.api.media import JSON_ONLY, require_media_type
from ledger.api.problems import Problem, invalid
from ledger.api.reservations import expiry_public, json_response, reservation_public, unknown_reservation
from ledger.api.schemas import problem_responses
from ledger.api.schemas_across import ReservationAcrossPublic
from ledger.clock import utc_now
from ledger.config import Settings
from ledger.domain.across_stores import status_across
from ledger.domain.model import (
    EventType,
    Outcome,
    RejectionReason,
    ReservationStatus,
    StockEvent,
)
from ledger.intake.across_body import AcrossLimits, read_reservation_across
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent
from ledger.intake.json_text import without_bom
from ledger.results import EventResult
from ledger.service import Ledger, ReservationView

router = APIRouter(tags=["reservations"])


def across_limits(settings: Settings, intake: IntakeLimits) -> AcrossLimits:
    return AcrossLimits(
        intake,
        settings.reservation_stores_max,
        settings.sourcing_lines_max,
        settings.sourcing_candidates_max,
        settings.sourcing_search_steps_max,
    )


def across_public(views: list[ReservationView]) -> dict[str, Any]:
    """The reservation across stores: its parts (by store id), and one status for them."""
    views = sorted(views, key=lambda view: view.reservation.store_id)
    first = views[0].reservation
    return {
        "reservation_id": first.reservation_id,
        "order_id": first.order_id,
        "status": status_across([view.reservation for view in views]).value,
        "channel": first.channel,
        "expires_at": expiry_public(first.expires_at),
        "stores": [reservation_public(view.reservation, view.position) for view in views],
    }


def placed_public(command: StockEvent, result: EventResult) -> dict[str, Any]:
    """What `across_public` says of the parts a command has just placed, from the writer's answer:
    every part active, nothing shipped or released yet (written out rather than built as
    reservations and read back: a third of a sourcing answer's CPU went to that)."""
    assert result.position is not None and command.reservation_id is not None
    expires_at = expiry_public(command.expires_at)
    active = ReservationStatus.ACTIVE.value
    return {
        "reservation_id": command.reservation_id,
        "order_id": command.order_id,
        "status": active,
        "channel": command.channel,
        "expires_at": expires_at,
        "stores": [
            {
                "reservation_id": command.reservation_id,
                "order_id": command.order_id,
                "status": active,
                "lines": [
                    {"sku": sku, "qty": qty, "remaining": qty, "shipped": 0, "released": 0}
                    for sku, qty in lines
                ],
                "expires_at": expires_at,
                "channel": command.channel,
                "store_id": store,
                "position": result.position,
            }
            for store, lines in sorted(result.placed, key=lambda part: part[0])
        ],
    }


def refusal(result: EventResult, reservation_id: str) -> Problem:
    """A refused command across stores: its shortfall names the store of each short line."""
    if result.reason is RejectionReason.RESERVATION_CONFLICT:
        return Problem(
            409,
            "reservation-conflict",
            "Reservation conflict",
            f"reservation {reservation_id} exists with other lines at some of these stores",
        )
    shortfall = []
    for s in result.shortfall:
        item: dict[str, Any] = {"sku": s.sku, "requested": s.requested_units, "available": s.available_units}
        if s.store_id is not None:
            item["store"] = s.store_id
        shortfall.append(item)
    return Problem(
        409,
        "insufficient-stock",
        "Insufficient stock",
        "not enough stock for every line; nothing was reserved",
        shortfall=shortfall,
    )


async def current(
    ledger: Ledger, stores_max: int, reservation_id: str, grant: Grant | None
) -> list[ReservationView]:
    """Every store's reservation under the id that the token may act on, or a 422 when more than
    `stores_max` stores hold it (ids are unique per store only): never some of them answered, or
    released, as if they were all.

    A store-scoped token is answered from its own stores alone. Another store's reservation under
    the same id is another reservation (a till numbering from 1, say): it neither refuses the token
    nor counts towards `stores_max`. An id held only at stores out of the token's scope is a read of
    another store's reservation, and the parts of one reservation across stores were placed by one
    event: when some are at stores out of scope, the whole is refused. Both answer 403 naming a
    store that is missing, as CONTRACT §5 has every 403 do."""
    if grant is None or grant.stores is None:
        views = await asyncio.to_thread(ledger.reservations_by_id, reservation_id, stores_max + 1)
    else:  # its stores' keys, each looked up by itself: at most SCOPE_ITEMS_MAX
        views = await asyncio.to_thread(ledger.reservations_at, reservation_id, sorted(grant.stores))
        if not views:
            _readable(grant, await asyncio.to_thread(ledger.reservations_by_id, reservation_id, 1))
    if len(views) > stores_max:
        raise Problem(
            422,
            "too-many-stores",
            "Too many stores hold this reservation id",
            f"more than {stores_max} stores hold a reservation {reservation_id} "
            "(LEDGER_RESERVATION_STORES_MAX): read or release it at each store",
        )
    if views and grant is not None and grant.stores is not None:
        placings = [view.reservation.placed_at_position for view in views]
        placed = await asyncio.to_thread(ledger.stores_placed_with, reservation_id, placings)
        missing = sorted(placed - grant.stores)
        if missing:
            raise Forbidden(
                f"reservation {reservation_id} was placed across stores, {missing[0]} among them, which "
                f"the token {grant.name} may not act on: read or release its part at "
                f"/v1/stores/{{store}}/reservations/{reservation_id}",
                store=missing[0],
            )
    return views


def _readable(grant: Grant | None, views: list[ReservationView]) -> None:
    for view in views:
        authorize_store(grant, view.reservation.store_id)


@router.post(
    "/v1/reservations",
    status_code=201,
    response_model=ReservationAcrossPublic,
    responses={
        200: {"model": ReservationAcrossPublic, "description": "the same request again"},
        **problem_responses(403, 409, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ReservationAcrossCreate"}}
            },
        }
    },
    summary="Reserve every line at its store, all or none",
)
async def place_across(
    request: Request, ledger: LedgerDep, settings: SettingsDep, intake: IntakeDep, grant: ProducerGrant
) -> Response:
    require_media_type(request.scope["headers"], JSON_ONLY)
    body = parse_json(await request.body())
    try:
        command = read_reservation_across(
            body, across_limits(settings, intake), REST_SOURCE, utc_now(), principal(grant)
        )
    except InvalidEvent as error:
        raise invalid(error.errors) from None
    for part in command.parts:  # every store in scope, or nothing is recorded
        authorize_write_at(grant, part.store_id, REST_SOURCE)
    [result] = await ledger.submit([command])
    assert command.reservation_id is not None
    if result.outcome is Outcome.ACCEPTED:
        return json_response(placed_public(command, result), 201)
    if result.outcome is Outcome.DUPLICATE:
        # Its parts, read at its stores: other stores may hold the id for orders of their own,
        # more of them than a read of every part under the id takes (ids are unique per store).
        stores = [part.store_id for part in command.parts]
        views = await asyncio.to_thread(ledger.reservations_at, command.reservation_id, stores)
        return json_response(across_public(views))
    raise refusal(result, command.reservation_id)


@router.get(
    "/v1/reservations/{reservation_id}",
    response_model=ReservationAcrossPublic,
    responses=problem_responses(403, 404, 422, 503),
    summary="Every store's part of a reservation",
)
async def get_across(
    reservation_id: ReservationId, ledger: LedgerDep, settings: SettingsDep, grant: ReaderGrant
) -> Response:
    views = await current(ledger, settings.reservation_stores_max, reservation_id, grant)
    if not views:
        raise unknown_reservation(reservation_id)
    _readable(grant, views)
    return json_response(across_public(views))


@router.post(
    "/v1/reservations/{reservation_id}/release",
    response_model=ReservationAcrossPublic,
    responses=problem_responses(403, 404, 415, 422, 503),
    summary="Release what every part still holds",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "`{}` (or an empty body, still as application/json): every part is released whole",
            "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
        }
    },
)
async def release_across(
    reservation_id: ReservationId,
    request: Request,
    ledger: LedgerDep,
    settings: SettingsDep,
    grant: ProducerGrant,
) -> Response:
    require_media_type(request.scope["headers"], JSON_ONLY)
    raw = await request.body()
    body = parse_json(raw) if without_bom(raw).strip() else {}  # a mark alone is empty too
    if not isinstance(body, dict):
        raise invalid([FieldError("", "the body must be a JSON object or empty")])
    if body:
        field = sorted(body)[0]
        raise invalid(
            [FieldError(field, "not taken here: every part is released whole (release one store's "
                        "lines at /v1/stores/{store}/reservations/{id}/release)")]
        )  # fmt: skip
    views = await current(ledger, settings.reservation_stores_max, reservation_id, grant)
    if not views:
        raise unknown_reservation(reservation_id)
    for view in views:
        authorize_write_at(grant, view.reservation.store_id, REST_SOURCE)
    now = utc_now()
    releases = [
        StockEvent(
            event_id=os.urandom(16).hex(),
            source=REST_SOURCE,
            type=EventType.RESERVATION_RELEASE,
            time=now,
            store_id=view.reservation.store_id,
            lines=(),
            reservation_id=reservation_id,
            principal=principal(grant),
        )
        for view in views
        if view.reservation.is_open
    ]
    if releases:  # one submission: one batch, one transaction
        await ledger.submit(releases)
    # The stores read above, as they are now (a store that took the id meanwhile was not released).
    stores = [view.reservation.store_id for view in views]
    return json_response(
        across_public(await asyncio.to_thread(ledger.reservations_at, reservation_id, stores))
    )
