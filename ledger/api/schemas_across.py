"""The documented shapes of a reservation across stores and of sourcing (CONTRACT §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ledger.api.schemas import CLOSED, Position, ReservationLineIn, ReservationPublic
from ledger.domain.ids import ID_REGEX
from ledger.intake.envelope import QTY_ABS_MAX, TEXT_CHARS_MAX


class StoreLineIn(ReservationLineIn):
    store: str = Field(pattern=ID_REGEX, examples=["store-12"])


class ReservationAcrossCreate(BaseModel):
    """A reservation across stores: every line at its store, all or none, at one position."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {
                    "reservation_id": "order-1002",
                    "order_id": "1002",
                    "lines": [
                        {"store": "store-12", "sku": "SKU-1", "qty": 2},
                        {"store": "store-14", "sku": "SKU-2", "qty": 1},
                    ],
                }
            ]
        },
    }

    reservation_id: str = Field(pattern=ID_REGEX)
    order_id: str | None = Field(None, min_length=1, max_length=TEXT_CHARS_MAX)
    channel: str | None = Field(None, pattern=ID_REGEX, examples=["online"])
    expires_at: datetime | None = Field(None, examples=["2026-11-22T12:00:00+03:00"])
    lines: list[StoreLineIn] = Field(
        min_length=1,
        max_length=1000,
        description="no SKU twice at one store; at most LEDGER_RESERVATION_STORES_MAX stores",
    )


class ReservationAcrossPublic(BaseModel):
    reservation_id: str
    order_id: str | None
    status: Literal["active", "partially_shipped", "shipped", "released", "expired"] = Field(
        description="the parts' status when they agree; else partially_shipped while any part holds "
        "units and any unit was shipped, active while any part holds units, then released, "
        "expired or shipped (README)"
    )
    channel: str | None = None
    expires_at: str | None = None
    stores: list[ReservationPublic] = Field(
        description="one per store, by store id in code point (byte) order (as its per-store GET)"
    )


class SourcingLineIn(ReservationLineIn):
    """A line of a sourcing request, as a reservation's."""

    codes: list[str] | None = Field(
        None,
        description="marking codes or SSCCs the order asks for (CONTRACT §10's rules: at most qty, "
        "1 to 200 printable ASCII characters, none twice); with reserve, the part of the store that "
        "takes the whole line carries them (the WMS's picking order too); a line taken from several "
        "stores carries none",
    )


class SourcingReserveIn(BaseModel):
    model_config = CLOSED

    reservation_id: str = Field(pattern=ID_REGEX)
    order_id: str | None = Field(None, min_length=1, max_length=TEXT_CHARS_MAX)
    expires_at: datetime | None = None


class SourcingRequest(BaseModel):
    """Where can this order be served? With `reserve`, reserve it there in the same step."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {
                    "lines": [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-2", "qty": 1}],
                    "stores": ["store-12", "store-14"],
                    "reserve": {"reservation_id": "order-1003"},
                }
            ]
        },
    }

    lines: list[SourcingLineIn] = Field(
        min_length=1, max_length=1000, description="no SKU twice; at most LEDGER_SOURCING_LINES_MAX"
    )
    stores: list[str] | None = Field(
        None,
        description="candidates in order of preference; default: every store where any of the SKUs is "
        "available, by id (at most LEDGER_SOURCING_CANDIDATES_MAX)",
    )
    channel: str | None = Field(None, pattern=ID_REGEX)
    max_stores: int = Field(3, ge=1, le=5)
    reserve: SourcingReserveIn | None = None


class AllocationLinePublic(BaseModel):
    sku: str
    qty: int = Field(ge=1, le=QTY_ABS_MAX)


class AllocationPublic(BaseModel):
    store: str
    lines: list[AllocationLinePublic]


class SourcingPublic(BaseModel):
    allocations: list[AllocationPublic]
    reservation: ReservationAcrossPublic | None = Field(None, description="with `reserve` only")
    position: Position | None = Field(None, description="with `reserve`: the reservation's position")
