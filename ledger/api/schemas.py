"""Request and response shapes, named by role; they document the API in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledger.api.problem_types import type_description
from ledger.domain.ids import ID_REGEX
from ledger.domain.model import Level
from ledger.domain.policy import Figures, figures
from ledger.intake.envelope import QTY_ABS_MAX, TEXT_CHARS_MAX
from ledger.service import LevelView

# Levels and positions are 64-bit signed integers in the database (CONTRACT §1).
LEVEL_MAX = 2**63 - 1
POSITION_MAX = 2**63 - 1


# A REST body's fields are all its fields: any other answers 422 (ledger/intake/body_fields.py).
CLOSED = ConfigDict(extra="forbid")


class LineIn(BaseModel):
    model_config = CLOSED

    sku: str = Field(pattern=ID_REGEX, examples=["SKU-1"])
    qty: int = Field(ge=1, le=QTY_ABS_MAX, examples=[2])
    uom: str | None = Field(None, description="a unit of LEDGER_UNITS; unknown units are refused")


class ReservationLineIn(LineIn):
    codes: list[str] | None = Field(
        None,
        description="marking codes or SSCCs the order asks for (CONTRACT §10's rules: at most qty, "
        "1 to 200 printable ASCII characters, none twice); the WMS's picking order carries them",
    )


class ReservationCreate(BaseModel):
    """A reservation at one store: every line or none (README walkthrough)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {"reservation_id": "order-1001", "order_id": "1001", "lines": [{"sku": "SKU-1", "qty": 2}]}
            ]
        },
    }

    reservation_id: str = Field(pattern=ID_REGEX)
    order_id: str | None = Field(None, min_length=1, max_length=TEXT_CHARS_MAX)
    lines: list[ReservationLineIn] = Field(min_length=1, max_length=1000, description="no SKU twice")
    expires_at: datetime | None = Field(None, examples=["2026-11-22T12:00:00+03:00"])
    channel: str | None = Field(
        None,
        pattern=ID_REGEX,
        examples=["online"],
        description="limits by that channel's quota (CONTRACT §6)",
    )


Position = Annotated[int, Field(ge=0, le=POSITION_MAX)]
Units = Annotated[int, Field(ge=-LEVEL_MAX, le=LEVEL_MAX, description="a 64-bit signed count of units")]


class QuotaIn(BaseModel):
    """One of the two: a percentage of on_hand (floored), or a number of units."""

    quota_pct: int | None = Field(None, ge=0, le=100)
    quota_units: int | None = Field(None, ge=0, le=QTY_ABS_MAX)


class PolicyIn(BaseModel):
    """A store's policy of a SKU (CONTRACT §6); `{}` clears it."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"safety_stock": 2, "channels": {"online": {"quota_pct": 30}}}]},
    }

    safety_stock: int = Field(0, ge=0, le=QTY_ABS_MAX)
    channels: dict[str, QuotaIn] = Field(default_factory=dict, description="keyed by channel id")


class PolicyPublic(BaseModel):
    store_id: str
    sku: str = Field(description="the SKU, or `*` for the store's default")
    safety_stock: int = Field(ge=0, le=QTY_ABS_MAX)
    channels: dict[str, QuotaIn]
    inherited: bool = Field(description="true: the store's default, the SKU having none of its own")
    position: Position | None = Field(None, description="PUT: the position of the change, when it changed")


class ReservationRelease(BaseModel):
    """What to release of a reservation: the given lines, or (without `lines`) all that remains."""

    model_config = CLOSED

    lines: list[LineIn] | None = Field(None, min_length=1, max_length=1000, description="no SKU twice")


class ShortfallPublic(BaseModel):
    sku: str
    requested: int = Field(ge=1, le=QTY_ABS_MAX)
    available: Units


class OriginalPublic(BaseModel):
    outcome: str
    reason: str | None
    position: Position


class EventResultPublic(BaseModel):
    id: str | None
    source: str | None
    outcome: Literal["accepted", "duplicate", "rejected", "invalid"]
    reason: str | None = None
    shortfall: list[ShortfallPublic] | None = None
    position: Position | None = None
    original: OriginalPublic | None = None
    errors: list[dict[str, str]] | None = None


class EventResultsPublic(BaseModel):
    results: list[EventResultPublic]


class ChannelFiguresPublic(BaseModel):
    quota: Units
    reserved: Units
    sellable: Units = Field(description="min(sellable, quota - reserved)")


class StockLevelPublic(BaseModel):
    store_id: str
    sku: str
    on_hand: Units
    reserved: Units
    available: Units
    incoming: Units
    safety_stock: Units = Field(description="the policy's safety stock (0 without a policy)")
    sellable: Units = Field(description="available - safety_stock; may be negative")
    channels: dict[str, ChannelFiguresPublic] = Field(
        description="each channel with a quota at this store and SKU"
    )
    position: Position
    updated_at: str | None


class StockLevelsPublic(BaseModel):
    items: list[StockLevelPublic]


class LevelTotals(BaseModel):
    on_hand: Units
    reserved: Units
    available: Units
    incoming: Units
    safety_stock: Units
    sellable: Units
    channels: dict[str, ChannelFiguresPublic] = Field(
        description="summed over the stores that have the channel"
    )


class SkuAcrossStoresPublic(BaseModel):
    sku: str
    total: LevelTotals
    position: Position
    stores: list[StockLevelPublic] = Field(
        description="one per store that holds a level of the SKU, by store id in code point (byte) "
        "order, on every database whatever its collation"
    )


class ReservationLinePublic(BaseModel):
    sku: str
    qty: int = Field(ge=1, le=QTY_ABS_MAX)
    remaining: int = Field(ge=0, le=QTY_ABS_MAX)
    shipped: int = Field(ge=0, le=QTY_ABS_MAX)
    released: int = Field(ge=0, le=QTY_ABS_MAX)


class ReservationPublic(BaseModel):
    reservation_id: str
    order_id: str | None
    status: Literal["active", "partially_shipped", "shipped", "released", "expired"]
    lines: list[ReservationLinePublic]
    expires_at: str | None
    channel: str | None = Field(None, description="the channel it was placed under (CONTRACT §6)")
    store_id: str
    position: Position


class HistoryEntryPublic(BaseModel):
    position: Position
    event_id: str
    source: str
    type: str
    time: str
    recorded_at: str
    sku: str | None = Field(description="null only for a refused event without lines")
    outcome: str
    reason: str | None
    on_hand_delta: Units
    reserved_delta: Units
    incoming_delta: Units
    on_hand: Units | None
    reserved: Units | None
    available: Units | None
    incoming: Units | None
    oversold: bool
    unknown_reservation: bool
    principal: str | None = Field(
        description="who sent it: a token's name, `kafka`, `ledger` (expiry), `import` (`ledger import`); "
        "null while the service was open"
    )
    order_id: str | None = None
    reservation_id: str | None = None
    reference: str | None = None
    transfer_id: str | None = None
    adjustment_reason: str | None = None
    channel: str | None = None
    policy: dict[str, Any] | None = Field(
        None,
        description="stock.policy_changed: the policy set (null: cleared); sku `*` is the store's default",
    )
    codes: list[str] | None = Field(
        None, description="the marking codes or SSCCs of the units the line moved (CONTRACT §10)"
    )


class HistoryPagePublic(BaseModel):
    entries: list[HistoryEntryPublic]
    next: str | None


class ShortfallAtStorePublic(ShortfallPublic):
    """A short line of a refusal; a reservation across stores names the store of each line."""

    store: str | None = Field(None, description="POST /v1/reservations: the store the line is short at")


class FieldErrorPublic(BaseModel):
    field: str = Field(description="the field, as the caller wrote it (`data.lines[0].qty`); empty: the body")
    message: str


class ProblemPublic(BaseModel):
    """RFC 9457 problem details: every error the API answers (application/problem+json)."""

    type: str = Field(description=type_description(), examples=["insufficient-stock"])
    title: str = Field(examples=["Insufficient stock"])
    status: int = Field(ge=400, le=599, examples=[409])
    detail: str | None = None
    instance: str | None = Field(None, description="the request's path")
    errors: list[FieldErrorPublic] | None = Field(None, description="invalid-request: each wrong field")
    shortfall: list[ShortfallAtStorePublic] | None = Field(
        None, description="insufficient-stock: each short line"
    )
    position: int | None = Field(
        None,
        ge=0,
        le=POSITION_MAX,
        description="insufficient-stock and reservation-conflict: the refused event's position; "
        "position-not-reached: the position this instance has applied",
    )
    role: str | None = Field(None, description="forbidden: the role the token lacks")
    store: str | None = Field(None, description="forbidden: the store out of the token's scope")
    source: str | None = Field(None, description="forbidden: the source out of the token's scope")


def level_totals(level: Level) -> dict[str, int]:
    return {
        "on_hand": level.on_hand_units,
        "reserved": level.reserved_units,
        "available": level.available_units,
        "incoming": level.incoming_units,
    }


def figures_public(shown: Figures) -> dict[str, Any]:
    return {
        "safety_stock": shown.safety_stock_units,
        "sellable": shown.sellable_units,
        "channels": {
            name: {"quota": c.quota_units, "reserved": c.reserved_units, "sellable": c.sellable_units}
            for name, c in shown.channels.items()
        },
    }


def level_public(view: LevelView) -> dict[str, Any]:
    return {
        "store_id": view.store_id,
        "sku": view.sku,
        **level_totals(view.level),
        **figures_public(figures(view.level, view.policy)),
        "position": view.position,
        "updated_at": view.updated_at,
    }


def totals_public(views: list[LevelView]) -> dict[str, Any]:
    """The sums over stores of every figure of a stock answer (CONTRACT §6: totals sum them)."""
    total = Level(
        sum(view.level.on_hand_units for view in views),
        sum(view.level.reserved_units for view in views),
        sum(view.level.incoming_units for view in views),
    )
    safety_stock = sellable = 0
    channels: dict[str, dict[str, int]] = {}
    for view in views:
        shown = figures(view.level, view.policy)
        safety_stock += shown.safety_stock_units
        sellable += shown.sellable_units
        for name, c in shown.channels.items():
            summed = channels.setdefault(name, {"quota": 0, "reserved": 0, "sellable": 0})
            summed["quota"] += c.quota_units
            summed["reserved"] += c.reserved_units
            summed["sellable"] += c.sellable_units
    return {
        **level_totals(total),
        "safety_stock": safety_stock,
        "sellable": sellable,
        "channels": dict(sorted(channels.items())),
    }


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0, "maximum": 3600},
    }
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problem answers a route documents; a 503 (the database or the writer unavailable, or no
    answer in time) carries Retry-After."""
    return {
        status: {"model": ProblemPublic, "content": {"application/problem+json": {}}}
        | ({"headers": RETRY_AFTER_HEADER} if status == 503 else {})
        for status in statuses
    }
