"""GET /v1/stores/{store}/stock/{sku}/timeline: the levels after each entry in a window, thinned
to LEDGER_TIMELINE_POINTS_MAX points (CONTRACT §8; ledger/projections/timeline.py says how)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from ledger.api.deps import LedgerDep, ReadableStore, SettingsDep, Sku
from ledger.api.problems import invalid
from ledger.api.query_numbers import DECIMAL_DIGITS
from ledger.api.schemas import POSITION_MAX, Position, Units, problem_responses
from ledger.api.times import utc_parameter
from ledger.intake.envelope import FieldError
from ledger.projections.timeline import TimelineWindow

router = APIRouter(tags=["stock"])


class TimelinePointPublic(BaseModel):
    position: Position
    time: str = Field(
        description="the event's time, in its producer's offset (a fraction to the microsecond, none when "
        "whole)"
    )
    recorded_at: str = Field(description="when the ledger recorded it (UTC)")
    type: str
    outcome: str = Field(description="refused entries change no level; they are points all the same")
    reason: str | None = Field(description="why it was refused (null when accepted)")
    event_id: str = Field(description="the event's `id`, as its producer sent it")
    source: str = Field(description="the event's `source`")
    principal: str | None = Field(
        description="who sent it (CONTRACT §5): a token's name, `kafka`, `ledger`, `import`, or null"
    )
    reference: str | None
    order_id: str | None
    reservation_id: str | None
    on_hand: Units
    reserved: Units
    available: Units


class TimelinePublic(BaseModel):
    store_id: str
    sku: str
    axis: Literal["recorded", "occurred"]
    points: list[TimelinePointPublic] = Field(
        description="oldest first on the axis; at most LEDGER_TIMELINE_POINTS_MAX, evenly thinned "
        "by rank beyond it, the first and the last always kept"
    )
    thinned: bool = Field(description="whether the window held more entries than `points`")


def _point(row: dict[str, Any]) -> dict[str, Any]:
    on_hand, reserved = int(row["on_hand"]), int(row["reserved"])
    return {
        "position": row["position"],
        "time": row["time"],
        "recorded_at": row["recorded_at"],
        "type": row["type"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "event_id": row["event_id"],
        "source": row["source"],
        "principal": row["principal"],
        "reference": row["reference"],
        "order_id": row["order_id"],
        "reservation_id": row["reservation_id"],
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand - reserved,
    }


@router.get(
    "/v1/stores/{store}/stock/{sku}/timeline",
    response_model=TimelinePublic,
    responses=problem_responses(422, 503),
)
async def get_timeline(
    store: ReadableStore,
    sku: Sku,
    ledger: LedgerDep,
    settings: SettingsDep,
    from_: Annotated[
        str | None, Query(alias="from", description="RFC 3339: the window's start on the axis (inclusive)")
    ] = None,
    to: Annotated[str | None, Query(description="RFC 3339: the window's end on the axis (inclusive)")] = None,
    axis: Annotated[
        Literal["recorded", "occurred"],
        Query(
            description="`recorded` (default): when the ledger recorded each entry, levels after it "
            "in the log; `occurred`: the event's `time`, levels summed in event-time order (as "
            "`occurred_as_of` gives them)"
        ),
    ] = "recorded",
    position: Annotated[
        int | None,
        Query(
            ge=0,
            le=POSITION_MAX,
            description="**added**: the timeline as the log stood at this position, no entry after it "
            "(the console reads it at its explanation's position, so that the plot ends where the "
            "figures above it stand)",
        ),
        DECIMAL_DIGITS,
    ] = None,
) -> Response:
    window = TimelineWindow(
        store, sku, axis, utc_parameter("from", from_), utc_parameter("to", to), through_position=position
    )
    if window.from_ is not None and window.to is not None and window.from_ > window.to:
        raise invalid([FieldError("from", "must not be after `to`")])
    points_max = settings.timeline_points_max
    rows = await asyncio.to_thread(ledger.timeline, window, points_max)
    body = {
        "store_id": store,
        "sku": sku,
        "axis": axis,
        "points": [_point(row) for row in rows],
        "thinned": bool(rows) and int(rows[0]["n"]) > len(rows),
    }
    return Response(orjson.dumps(body), media_type="application/json")
