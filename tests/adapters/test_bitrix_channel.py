"""LEDGER_BITRIX_CHANNEL: the site is pushed what a channel may sell (CONTRACT §6), summed over the
mapped stores; without it, `available` as before, whatever the policies."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST, bitrix_target, event

from adapters.outbound import OutboundWorker
from ledger.domain.model import ChannelQuota, EventType, Policy

RECEIPT, RESERVATION, POLICY = EventType.RECEIPT, EventType.RESERVATION, EventType.POLICY_CHANGED


@pytest.fixture
def site(mapped: Any) -> None:
    mapped(
        ("bitrix", "store", "shop-1", "1"),
        ("bitrix", "store", "shop-2", "2"),
        ("bitrix", "sku", "SKU-1", "101", "product"),
        ("bitrix", "sku", "SKU-2", "102", "product"),
    )


def _policy(store: str, sku: str, safety_stock: int, **quotas: int) -> Any:
    policy = Policy(safety_stock, tuple(ChannelQuota(name, pct=pct) for name, pct in sorted(quotas.items())))
    return event(POLICY, store, (sku, 0), policy=policy)


def _worker(recorder: Any, mappings: Any, bitrix: Any, channel: str | None) -> OutboundWorker:
    return OutboundWorker(recorder, bitrix_target(recorder, mappings, bitrix, channel=channel), FAST)


def _quantities(fake: Any) -> dict[str, float]:
    return {pid: p["quantity"] for pid, p in fake.products.items()}


def _stock_with_policies(record: Any) -> None:
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 3)),
        event(RECEIPT, "shop-2", ("SKU-1", 5), ("SKU-2", 3)),
        _policy("shop-1", "SKU-1", 2, online=50),  # online quota 5 of on_hand 10
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", channel="online"),
    )


def test_with_a_channel_the_site_gets_what_that_channel_may_sell(bitrix, recorder, mappings, site, record):
    fake, _ = bitrix
    fake.add_product("101")
    fake.add_product("102")
    _stock_with_policies(record)
    worker = _worker(recorder, mappings, bitrix, "online")
    worker.run_until_idle()
    # shop-1: min(sellable 10 - 2 - 2, quota 5 - 2 reserved online) = 3; shop-2 has no quota for
    # the channel: its sellable, 5. SKU-2 has no policy anywhere: available, 3 + 3.
    assert _quantities(fake) == {"101": 8.0, "102": 6.0}
    # A store's default policy moves every SKU of that store without its own, and is pushed.
    record(_policy("shop-2", "*", 4))
    worker.run_until_idle()
    assert _quantities(fake) == {"101": 3.0 + 1.0, "102": 3.0 + 0.0}


def test_without_a_channel_the_site_gets_available_whatever_the_policies(
    bitrix, recorder, mappings, site, record
):
    fake, _ = bitrix
    fake.add_product("101")
    fake.add_product("102")
    _stock_with_policies(record)
    worker = _worker(recorder, mappings, bitrix, None)
    worker.run_until_idle()
    assert _quantities(fake) == {"101": 8.0 + 5.0, "102": 6.0}
    calls = len(fake.calls)
    record(_policy("shop-2", "*", 4))
    worker.run_until_idle()
    assert len(fake.calls) == calls  # a policy changes nothing the site is given
