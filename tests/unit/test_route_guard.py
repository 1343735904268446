"""Every route declares the role it needs (or is one of CONTRACT §5's open routes): an app with a
route that does neither is not built, so that no route added later is left open by mistake."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from ledger.access.scopes import Role
from ledger.api import events, history, ops, reservations, stock
from ledger.api.deps import ReadableStore, WritableStore
from ledger.api.guard import check_every_route_is_guarded, route_role

ROUTERS = (stock.router, events.router, reservations.router, history.router, ops.router)


def _routes(*routers: APIRouter) -> list[APIRoute]:
    return [route for router in routers for route in router.routes if isinstance(route, APIRoute)]


def test_every_route_of_the_api_declares_its_role() -> None:
    check_every_route_is_guarded(_routes(*ROUTERS))
    roles = {(sorted(route.methods)[0], route.path): route_role(route) for route in _routes(*ROUTERS)}
    assert roles[("POST", "/v1/events")] is Role.PRODUCER
    assert roles[("POST", "/v1/stores/{store}/reservations")] is Role.PRODUCER
    assert roles[("POST", "/v1/stores/{store}/reservations/{reservation_id}/release")] is Role.PRODUCER
    assert roles[("GET", "/v1/stores/{store}/history")] is Role.READER
    assert roles[("GET", "/healthz")] is None


def test_a_route_that_declares_no_role_is_refused() -> None:
    router = APIRouter()

    @router.post("/v1/stores/{store}/policies/{sku}")
    async def forgotten(store: str, sku: str) -> None: ...

    with pytest.raises(RuntimeError, match="policies"):
        check_every_route_is_guarded(_routes(*ROUTERS, router))


def test_a_store_in_the_path_declares_its_role_with_it() -> None:
    router = APIRouter()

    @router.get("/v1/stores/{store}/thing")
    async def read(store: ReadableStore) -> None: ...

    @router.put("/v1/stores/{store}/thing")
    async def write(store: WritableStore) -> None: ...

    assert [route_role(route) for route in _routes(router)] == [Role.READER, Role.PRODUCER]
