"""GET /v1/stores/{store}/stock/{sku}/explain: the entries behind the current figures (CONTRACT §8;
ledger/projections/explain.py says how they are read and why they add up)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from ledger.api.deps import LedgerDep, ReadableStore, SettingsDep, Sku
from ledger.api.problems import Problem
from ledger.api.schemas import (
    POSITION_MAX,
    ChannelFiguresPublic,
    Position,
    Units,
    figures_public,
    problem_responses,
)
from ledger.projections.explain import Explanation, TooManyToExplain

router = APIRouter(tags=["stock"])


class LastCountPublic(BaseModel):
    position: Position
    time: str = Field(
        description="the count's event time, in its producer's offset (a fraction to the microsecond, "
        "none when whole)"
    )
    recorded_at: str = Field(description="when the ledger recorded it (UTC)")
    qty: Units = Field(description="the counted on_hand")


class EntriesOfTypePublic(BaseModel):
    type: str
    units: Units = Field(description="the sum of their on_hand deltas")
    entries: int = Field(ge=1, le=POSITION_MAX, description="how many entries (one per line of an event)")


class OnHandFromPublic(BaseModel):
    count: LastCountPublic | None = Field(description="the latest accepted `stock.count` by position")
    since: list[EntriesOfTypePublic] = Field(
        description="the accepted entries after the count (all, without one) that changed on_hand, "
        "by type, ordered by type; on_hand = count.qty (or 0) + the sum of their units"
    )


class ReservationHoldPublic(BaseModel):
    reservation_id: str
    order_id: str | None
    channel: str | None
    remaining: Units = Field(description="what it still holds of this SKU here (> 0)")
    expires_at: str | None


class TransferOnItsWayPublic(BaseModel):
    transfer_id: str
    from_store: str | None = Field(description="the sending store; null if only receipts name the id")
    remaining: Units = Field(description="sent here, less received under this transfer id (≠ 0)")


class ExplanationPublic(BaseModel):
    store_id: str
    sku: str
    position: Position = Field(description="the log position every figure here includes")
    on_hand: Units
    reserved: Units
    available: Units
    incoming: Units
    safety_stock: Units = Field(description="the policy's safety stock (0 without a policy)")
    sellable: Units = Field(description="available - safety_stock; may be negative")
    channels: dict[str, ChannelFiguresPublic] = Field(
        description="each channel with a quota at this store and SKU, as the stock answer gives it; "
        "a channel's reserved = the sum of the `reserved_by[].remaining` of that channel"
    )
    on_hand_from: OnHandFromPublic
    reserved_by: list[ReservationHoldPublic] = Field(
        description="open reservations of this store holding the SKU, oldest first; reserved = the "
        "sum of their remaining"
    )
    incoming_from: list[TransferOnItsWayPublic] = Field(
        description="transfers to this store still on their way, by transfer id; incoming = the sum "
        "of their remaining"
    )


def explanation_public(explanation: Explanation) -> dict[str, Any]:
    level, count = explanation.level, explanation.count
    return {
        "store_id": explanation.store_id,
        "sku": explanation.sku,
        "position": explanation.position,
        "on_hand": level.on_hand_units,
        "reserved": level.reserved_units,
        "available": level.available_units,
        "incoming": level.incoming_units,
        **figures_public(explanation.policy),
        "on_hand_from": {
            "count": None
            if count is None
            else {
                "position": count.position,
                "time": count.time,
                "recorded_at": count.recorded_at,
                "qty": count.qty_units,
            },
            "since": [
                {"type": group.type, "units": group.units, "entries": group.entries}
                for group in explanation.since
            ],
        },
        "reserved_by": [
            {
                "reservation_id": hold.reservation_id,
                "order_id": hold.order_id,
                "channel": hold.channel,
                "remaining": hold.remaining_units,
                "expires_at": hold.expires_at,
            }
            for hold in explanation.reserved_by
        ],
        "incoming_from": [
            {
                "transfer_id": transfer.transfer_id,
                "from_store": transfer.from_store,
                "remaining": transfer.remaining_units,
            }
            for transfer in explanation.incoming_from
        ],
    }


@router.get(
    "/v1/stores/{store}/stock/{sku}/explain",
    response_model=ExplanationPublic,
    responses=problem_responses(422, 503),
)
async def get_explanation(
    store: ReadableStore, sku: Sku, ledger: LedgerDep, settings: SettingsDep
) -> Response:
    try:
        explanation = await asyncio.to_thread(ledger.explain, store, sku, settings.explain_items_max)
    except TooManyToExplain as error:
        raise Problem(
            422,
            "too-many-to-explain",
            "Too many entries to explain in one answer",
            f"{error} hold this SKU here (LEDGER_EXPLAIN_ITEMS_MAX); see the history instead",
        ) from None
    return Response(orjson.dumps(explanation_public(explanation)), media_type="application/json")
