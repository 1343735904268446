"""Availability policies over REST (CONTRACT §6): set, read and clear a store's policy of a SKU,
or its default (`*`). A change is an event the writer records (`stock.policy_changed`)."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from ledger.api.deps import (
    DOT_IDS,
    POLICY_SOURCE,
    LedgerDep,
    OperatorGrant,
    PolicyStore,
    ReadableStore,
    SettingsDep,
    principal,
)
from ledger.api.events import parse_json
from ledger.api.media import JSON_ONLY, require_media_type
from ledger.api.problems import invalid
from ledger.api.schemas import PolicyPublic, problem_responses
from ledger.clock import utc_now
from ledger.domain.ids import ID_BODY
from ledger.domain.model import DEFAULT_SKU, EventType, Line, Outcome, Policy, StockEvent
from ledger.intake.envelope import InvalidEvent
from ledger.intake.policy_body import read_policy
from ledger.service import Ledger

router = APIRouter(tags=["policies"])

# Policy changes are recorded under POLICY_SOURCE (ledger/api/deps.py: the route checks a
# source-scoped token's prefixes against it); each change is an event of its own (random id).
PolicySku = Annotated[
    str, Path(pattern=rf"^(\*|{ID_BODY})$", description="a SKU, or `*`: the store's default" + DOT_IDS)
]
_NO_POLICY = Policy()


def policy_public(store: str, sku: str, policy: Policy, *, inherited: bool) -> dict[str, Any]:
    return {"store_id": store, "sku": sku, **policy.as_json(), "inherited": inherited}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.put(
    "/v1/stores/{store}/policies/{sku}",
    response_model=PolicyPublic,
    responses=problem_responses(415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PolicyIn"}}},
        }
    },
)
async def put_policy(
    store: PolicyStore,
    sku: PolicySku,
    request: Request,
    ledger: LedgerDep,
    settings: SettingsDep,
    grant: OperatorGrant,
) -> Response:
    require_media_type(request.scope["headers"], JSON_ONLY)
    try:
        policy = read_policy(parse_json(await request.body()), settings.policy_channels_max)
    except InvalidEvent as error:
        raise invalid(error.errors) from None
    event = StockEvent(
        event_id=os.urandom(16).hex(),
        source=POLICY_SOURCE,
        type=EventType.POLICY_CHANGED,
        time=utc_now(),
        store_id=store,
        lines=(Line(sku, 0),),
        principal=principal(grant),
        policy=policy,
    )
    [result] = await ledger.submit([event])
    assert result.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE), result  # never refused
    body = await _current(ledger, store, sku)
    if result.outcome is Outcome.ACCEPTED:
        body["position"] = result.position  # of the change; none when nothing changed
    return _json(body)


@router.get(
    "/v1/stores/{store}/policies/{sku}",
    response_model=PolicyPublic,
    responses=problem_responses(422, 503),
)
async def get_policy(store: ReadableStore, sku: PolicySku, ledger: LedgerDep) -> Response:
    return _json(await _current(ledger, store, sku))


async def _current(ledger: Ledger, store: str, sku: str) -> dict[str, Any]:
    """The policy that applies to a store's SKU, as the database has it now."""
    policies = await asyncio.to_thread(ledger.store_policies, store)
    own = policies.get(sku)
    if own is not None:
        return policy_public(store, sku, own, inherited=False)
    default = policies.get(DEFAULT_SKU) if sku != DEFAULT_SKU else None
    if default is not None:
        return policy_public(store, sku, default, inherited=True)
    return policy_public(store, sku, _NO_POLICY, inherited=False)
