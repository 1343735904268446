"""Reservations over REST: place (all lines or none), read, release."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ledger.api.deps import (
    REST_SOURCE,
    IntakeDep,
    LedgerDep,
    ProducerGrant,
    ReadableStore,
    ReservationId,
    WritableStore,
    principal,
)
from ledger.api.events import parse_json
from ledger.api.media import JSON_ONLY, require_media_type
from ledger.api.problems import Problem, invalid
from ledger.api.schemas import ReservationPublic, problem_responses
from ledger.clock import utc_now
from ledger.domain.model import Outcome, RejectionReason, Reservation, ReservationLine, StockEvent
from ledger.intake.body_fields import (
    RELEASE_FIELDS,
    RELEASE_LINE_FIELDS,
    RESERVATION_FIELDS,
    RESERVATION_LINE_FIELDS,
    unknown_fields,
)
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent, read_envelope
from ledger.intake.json_text import without_bom
from ledger.results import EventResult
from ledger.service import Ledger

router = APIRouter(tags=["reservations"])


def expiry_public(expires_at: datetime | None) -> str | None:
    """An expiry as every answer gives it: in UTC, as stored. It may be sent with any offset
    (CONTRACT §1), and the answer that places a reservation says what the same request again and a
    read of it say."""
    return expires_at.astimezone(UTC).isoformat() if expires_at is not None else None


def reservation_public(reservation: Reservation, position: int) -> dict[str, Any]:
    return {
        "reservation_id": reservation.reservation_id,
        "order_id": reservation.order_id,
        "status": reservation.status.value,
        "lines": [
            {
                "sku": sku,
                "qty": line.qty_units,
                "remaining": line.remaining_units,
                "shipped": line.shipped_units,
                "released": line.released_units,
            }
            for sku, line in reservation.lines.items()
        ],
        "expires_at": expiry_public(reservation.expires_at),
        "channel": reservation.channel,
        "store_id": reservation.store_id,
        "position": position,
    }


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _event(
    store: str, event_type: str, data: dict[str, Any], limits: IntakeLimits, sender: str | None
) -> StockEvent:
    """The body as a ledger event; field errors are named as the caller wrote them."""
    envelope = {
        "specversion": "1.0",
        # Every request is its own event; the reservation id makes it idempotent. 128 random bits,
        # as a uuid4's hex, without building the UUID object (measured in the request's profile).
        "id": os.urandom(16).hex(),
        "source": REST_SOURCE,
        "type": event_type,
        "time": utc_now().isoformat(),
        "subject": store,
        "data": data,
    }
    try:
        return read_envelope(envelope, limits, sender, made_by_ledger=True)
    except InvalidEvent as error:
        raise invalid([FieldError(e.field.removeprefix("data."), e.message) for e in error.errors]) from None


def unknown_reservation(reservation_id: str, store: str | None = None) -> Problem:
    """The 404 of a reservation id nobody placed; a read of one store's reservation names the store."""
    where = f" at store {store}" if store is not None else ""
    return Problem(
        404, "unknown-reservation", "Unknown reservation", f"no reservation {reservation_id}{where}"
    )


async def _current(ledger: Ledger, store: str, reservation_id: str) -> dict[str, Any]:
    view = await asyncio.to_thread(ledger.reservation, store, reservation_id)
    if view is None:
        raise unknown_reservation(reservation_id, store)
    return reservation_public(view.reservation, view.position)


def _refusal(result: EventResult, reservation_id: str) -> Problem:
    if result.reason is RejectionReason.INSUFFICIENT_STOCK:
        return Problem(
            409,
            "insufficient-stock",
            "Insufficient stock",
            "not enough available stock for every line; nothing was reserved",
            shortfall=[
                {"sku": s.sku, "requested": s.requested_units, "available": s.available_units}
                for s in result.shortfall
            ],
            position=result.position,
        )
    if result.reason is RejectionReason.RESERVATION_CONFLICT:
        return Problem(
            409,
            "reservation-conflict",
            "Reservation conflict",
            f"reservation {reservation_id} exists with other lines",
            position=result.position,
        )
    return unknown_reservation(reservation_id)


@router.post(
    "/v1/stores/{store}/reservations",
    status_code=201,
    response_model=ReservationPublic,
    responses={
        200: {"model": ReservationPublic, "description": "the same request again"},
        **problem_responses(409, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReservationCreate"}}},
        }
    },
    summary="Reserve every line, or none",
)
async def place_reservation(
    store: WritableStore, request: Request, ledger: LedgerDep, limits: IntakeDep, grant: ProducerGrant
) -> Response:
    require_media_type(request.scope["headers"], JSON_ONLY)
    return await reserve(ledger, limits, store, await request.body(), principal(grant))


async def reserve(
    ledger: Ledger, limits: IntakeLimits, store: str, raw_body: bytes, sender: str | None
) -> Response:
    """Places a reservation from a request body; raises Problem for every refusal. The caller has
    checked the token's role and store, and the content type.
    (Called by the route above and by the fast path, ledger/api/fastpath.py.)"""
    body = parse_json(raw_body)
    if not isinstance(body, dict):
        raise invalid([FieldError("", "the body must be a JSON object")])
    if unknown := unknown_fields(body, RESERVATION_FIELDS, "reservation", RESERVATION_LINE_FIELDS):
        raise invalid(unknown)
    if body.get("reservation_id") is None:
        raise invalid([FieldError("reservation_id", "is required")])
    data = {k: body[k] for k in RESERVATION_FIELDS if k in body}
    event = _event(store, "stock.reservation", data, limits, sender)
    [result] = await ledger.submit([event])
    assert event.reservation_id is not None
    if result.outcome is Outcome.ACCEPTED:
        assert result.position is not None
        placed = Reservation(
            store_id=store,
            reservation_id=event.reservation_id,
            order_id=event.order_id,
            expires_at=event.expires_at,
            lines={line.sku: ReservationLine(line.qty_units) for line in event.lines},
            placed_at_position=result.position,
            channel=event.channel,
        )
        return json_response(reservation_public(placed, result.position), 201)
    if result.outcome is Outcome.DUPLICATE:
        return json_response(await _current(ledger, store, event.reservation_id))
    raise _refusal(result, event.reservation_id)


@router.get(
    "/v1/stores/{store}/reservations/{reservation_id}",
    response_model=ReservationPublic,
    responses=problem_responses(404, 422, 503),
)
async def get_reservation(store: ReadableStore, reservation_id: ReservationId, ledger: LedgerDep) -> Response:
    return json_response(await _current(ledger, store, reservation_id))


@router.post(
    "/v1/stores/{store}/reservations/{reservation_id}/release",
    response_model=ReservationPublic,
    responses=problem_responses(404, 415, 422, 503),
    summary="Release what is still reserved (optionally only some lines)",
    openapi_extra={
        "requestBody": {
            "required": False,  # an empty body is taken, as `{}`
            "description": "`{}` (or an empty body, still as application/json) releases every line",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReservationRelease"}}},
        }
    },
)
async def release_reservation(
    store: WritableStore,
    reservation_id: ReservationId,
    request: Request,
    ledger: LedgerDep,
    limits: IntakeDep,
    grant: ProducerGrant,
) -> Response:
    # A JSON content type even without a body: a body-less POST is a "simple" cross-site request.
    require_media_type(request.scope["headers"], JSON_ONLY)
    raw = await request.body()
    body = parse_json(raw) if without_bom(raw).strip() else {}  # a mark alone is empty too
    if not isinstance(body, dict):
        raise invalid([FieldError("", "the body must be a JSON object or empty")])
    if unknown := unknown_fields(body, RELEASE_FIELDS, "release", RELEASE_LINE_FIELDS):
        raise invalid(unknown)
    data: dict[str, Any] = {"reservation_id": reservation_id}
    if body.get("lines") is not None:
        data["lines"] = body["lines"]
    event = _event(store, "stock.reservation_release", data, limits, principal(grant))
    [result] = await ledger.submit([event])
    if result.outcome is Outcome.REJECTED:
        raise _refusal(result, reservation_id)
    return json_response(await _current(ledger, store, reservation_id))
