"""The API's dependencies, in one place: the ledger, the settings, the intake limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ledger.api.schemas import ID_REGEX
from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger


async def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_intake_limits(request: Request) -> IntakeLimits:
    limits: IntakeLimits = request.app.state.intake_limits
    return limits


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IntakeDep = Annotated[IntakeLimits, Depends(get_intake_limits)]
StoreId = Annotated[str, Path(pattern=ID_REGEX, description="the store id")]
Sku = Annotated[str, Path(pattern=ID_REGEX)]
ReservationId = Annotated[str, Path(pattern=ID_REGEX)]
