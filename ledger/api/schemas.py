"""Request and response shapes, named by role; they document the API in /openapi.json."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ledger.domain.model import Level
from ledger.service import LevelView

ID_REGEX = r"^[A-Za-z0-9\-_.:]{1,64}$"


class LineIn(BaseModel):
    sku: str = Field(pattern=ID_REGEX)
    qty: int
    uom: str | None = None


class EventData(BaseModel):
    lines: list[LineIn] | None = None
    reference: str | None = None
    order_id: str | None = None
    reservation_id: str | None = None
    expires_at: str | None = None
    transfer_id: str | None = None
    to_store: str | None = None
    reason: str | None = None


class EventEnvelope(BaseModel):
    """A CloudEvents 1.0 envelope in structured mode (CONTRACT §1)."""

    specversion: Literal["1.0"]
    id: str
    source: str
    type: str = Field(examples=["stock.pos_sale"])
    time: str = Field(examples=["2026-11-22T10:15:00+03:00"])
    subject: str = Field(pattern=ID_REGEX, description="the store id")
    datacontenttype: str | None = "application/json"
    data: EventData


class ReservationCreate(BaseModel):
    reservation_id: str = Field(pattern=ID_REGEX)
    order_id: str | None = None
    lines: list[LineIn] = Field(min_length=1)
    expires_at: str | None = Field(None, examples=["2026-11-22T12:00:00+03:00"])


class ShortfallPublic(BaseModel):
    sku: str
    requested: int
    available: int


class OriginalPublic(BaseModel):
    outcome: str
    reason: str | None
    position: int


class EventResultPublic(BaseModel):
    id: str | None
    source: str | None
    outcome: Literal["accepted", "duplicate", "rejected", "invalid"]
    reason: str | None = None
    shortfall: list[ShortfallPublic] | None = None
    position: int | None = None
    original: OriginalPublic | None = None
    errors: list[dict[str, str]] | None = None


class EventResultsPublic(BaseModel):
    results: list[EventResultPublic]


class StockLevelPublic(BaseModel):
    store_id: str
    sku: str
    on_hand: int
    reserved: int
    available: int
    incoming: int
    position: int
    updated_at: str | None


class StockLevelsPublic(BaseModel):
    items: list[StockLevelPublic]


class LevelTotals(BaseModel):
    on_hand: int
    reserved: int
    available: int
    incoming: int


class SkuAcrossStoresPublic(BaseModel):
    sku: str
    total: LevelTotals
    position: int
    stores: list[StockLevelPublic]


class ReservationLinePublic(BaseModel):
    sku: str
    qty: int
    remaining: int
    shipped: int
    released: int


class ReservationPublic(BaseModel):
    reservation_id: str
    order_id: str | None
    status: Literal["active", "partially_shipped", "shipped", "released", "expired"]
    lines: list[ReservationLinePublic]
    expires_at: str | None
    store_id: str
    position: int


class HistoryEntryPublic(BaseModel):
    position: int
    event_id: str
    source: str
    type: str
    time: str
    recorded_at: str
    sku: str | None = Field(description="null only for a refused event without lines")
    outcome: str
    reason: str | None
    on_hand_delta: int
    reserved_delta: int
    incoming_delta: int
    on_hand: int | None
    reserved: int | None
    available: int | None
    incoming: int | None
    oversold: bool
    unknown_reservation: bool
    principal: str | None = Field(
        description="who sent it: a token's name, `kafka`, `ledger` (expiry); null while the service was open"
    )
    order_id: str | None = None
    reservation_id: str | None = None
    reference: str | None = None
    transfer_id: str | None = None
    adjustment_reason: str | None = None


class HistoryPagePublic(BaseModel):
    entries: list[HistoryEntryPublic]
    next: str | None


class ProblemPublic(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def level_totals(level: Level) -> dict[str, int]:
    return {
        "on_hand": level.on_hand_units,
        "reserved": level.reserved_units,
        "available": level.available_units,
        "incoming": level.incoming_units,
    }


def level_public(view: LevelView) -> dict[str, Any]:
    return {
        "store_id": view.store_id,
        "sku": view.sku,
        **level_totals(view.level),
        "position": view.position,
        "updated_at": view.updated_at,
    }


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
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
