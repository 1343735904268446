"""The MoySklad account the loop's and the webhooks' tests share (conftest.py's `moysklad_account`):
two stores, a variant and a product, each mapped, and a client of the fake with the organization
and counterparty a customer order needs."""

from __future__ import annotations

import dataclasses
from typing import Any

from adapters.httpserver import HttpServer
from adapters.inbound import InboxWorker
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_stock import StockWebhook
from adapters.runner import moysklad_handler
from adapters.sink import LedgerSink

STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
OTHER_STORE_UUID = "7a1f0000-0000-0000-0000-000000000002"
VARIANT = "0b3c0000-0000-0000-0000-0000000000a1"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"
SECRET = "moysklad-hook-secret"
MAPPED = (
    ("moysklad", "store", "shop-1", STORE_UUID),
    ("moysklad", "store", "shop-2", OTHER_STORE_UUID),
    ("moysklad", "sku", "SKU-1", VARIANT, "variant"),
    ("moysklad", "sku", "SKU-2", PRODUCT, "product"),
)


def client_for(server: HttpServer, **overrides: Any) -> MoySkladClient:
    config = MoySkladConfig(
        base_url=server.url + "/api/remap/1.2",
        token="fake-moysklad-token",
        timeout_s=2.0,
        organization_id="org-1",
        agent_id="agent-1",
    )
    return MoySkladClient(dataclasses.replace(config, **overrides))


def on_hand(ledger: Any, store: str, *skus: str) -> list[int]:
    return [view.level.on_hand_units for view in ledger.levels(store, list(skus))]


def moysklad_inbox(recorder: Any, mappings: Any, client: MoySkladClient, ledger: Any) -> InboxWorker:
    """The inbox with MoySklad's handler as `ledger adapters run` wires it (adapters/runner.py):
    demands, customer orders' cancels and stock notifications."""
    sync = DemandSync(recorder, mappings, client, LedgerSink(ledger))
    cancels = OrderEnds(recorder, mappings, client, sync.sink)
    handler = moysklad_handler(sync, cancels, StockWebhook(recorder, mappings, client))
    return InboxWorker(recorder, {"moysklad": handler})
