"""The API's dependencies, in one place: the ledger, the settings, the intake limits, and what a
route needs of the caller's token (a role, a store in scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ledger.access.book import NOT_VALID, Unauthenticated
from ledger.access.scopes import Grant, Role, authorize_role, authorize_store, authorize_write_at
from ledger.api.gate import GRANT_KEY
from ledger.config import Settings
from ledger.domain.ids import ID_REGEX
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
# `.` and `..` are ids (CONTRACT §1), but most clients resolve them as a path's dot segments before
# sending: an id in a path says how to name them (README, The API's description).
DOT_IDS = (
    "; `.` and `..` are ids too, but most clients resolve them in a path before sending it"
    " (`/stores/../stock/A` leaves as `/stock/A`): send them percent-encoded, `%2E` and `%2E%2E`"
)
StoreId = Annotated[str, Path(pattern=ID_REGEX, description="the store id" + DOT_IDS)]
Sku = Annotated[str, Path(pattern=ID_REGEX, description="the SKU" + DOT_IDS)]
ReservationId = Annotated[str, Path(pattern=ID_REGEX, description="the reservation id" + DOT_IDS)]


# -- access (CONTRACT §5) -----------------------------------------------------------------------------


def request_grant(request: Request) -> Grant | None:
    """The grant the gate (ledger/api/gate.py) found; without the gate nothing passes."""
    try:
        grant: Grant | None = request.scope[GRANT_KEY]
    except KeyError:
        raise Unauthenticated(NOT_VALID) from None
    return grant


class RoleRequired:
    """A route's declaration of the role it needs; every route has one or is open (ledger/api/guard.py)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, request: Request) -> Grant | None:
        grant = request_grant(request)
        authorize_role(grant, self.role)
        return grant


REQUIRES = {role: RoleRequired(role) for role in Role}
ReaderGrant = Annotated[Grant | None, Depends(REQUIRES[Role.READER])]
ProducerGrant = Annotated[Grant | None, Depends(REQUIRES[Role.PRODUCER])]
OperatorGrant = Annotated[Grant | None, Depends(REQUIRES[Role.OPERATOR])]


async def _readable_store(store: StoreId, grant: ReaderGrant) -> str:
    authorize_store(grant, store)
    return store


# The source of the events the REST reservation routes record: the ledger names them itself.
REST_SOURCE = "ledger/http"
# And of the policy changes (ledger/api/policies.py).
POLICY_SOURCE = "ledger/policies"


async def _writable_store(store: StoreId, grant: ProducerGrant) -> str:
    authorize_write_at(grant, store, REST_SOURCE)
    return store


async def _governed_store(store: StoreId, grant: OperatorGrant) -> str:
    # The source too, as the reservation routes check theirs: a token scoped to other sources (a
    # till's) records nothing under the ledger's own, policy changes included.
    authorize_write_at(grant, store, POLICY_SOURCE)
    return store


# The `{store}` of a route's path, in the token's scope (else 403 naming it).
ReadableStore = Annotated[str, Depends(_readable_store)]
WritableStore = Annotated[str, Depends(_writable_store)]
PolicyStore = Annotated[str, Depends(_governed_store)]  # an operator's (CONTRACT §5)


def principal(grant: Grant | None) -> str | None:
    """Who the history says did it (CONTRACT §5): the token's name; None while the service is open."""
    return None if grant is None else grant.name
