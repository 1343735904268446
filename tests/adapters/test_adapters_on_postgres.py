"""The adapters' own SQL on PostgreSQL: positions, parking, outbox, inbox, mappings and status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FAST, event

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.db import open_database, transaction
from adapters.inbound import store_delivery
from adapters.mappings import MappingRow, Mappings, save
from adapters.outbound import OutboundWorker, enqueue, read_position
from adapters.status import read_status
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import EventType

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(postgres: Any) -> str:
    return str(postgres.create_database())


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[Any]:
    book = build_ledger(Settings(database_url=pg_url, db_pool_size=4))
    book.start()
    try:
        yield book
    finally:
        book.stop()


def test_a_push_cycle_parks_queues_and_tracks_its_position_on_postgresql(pg_url, pg_ledger, bitrix):
    fake, server = bitrix
    fake.add_product("101")
    fake.add_product("102")
    fake.failing_products["102"] = "locked"
    fake.orders["5"] = {"id": "5", "statusId": "N"}
    recorder = open_database(pg_url, 4, 10)
    try:
        save(
            recorder,
            [
                MappingRow("bitrix", "store", "shop-1", "1"),
                MappingRow("bitrix", "sku", "SKU-1", "101"),
                MappingRow("bitrix", "sku", "SKU-2", "102"),
                MappingRow("bitrix", "unit", "SKU-1", "pair", None, 2),
            ],
        )
        pg_ledger.submit_and_wait([event(EventType.RECEIPT, "shop-1", ("SKU-1", 9), ("SKU-2", 1))])
        with transaction(recorder) as tx:
            enqueue(tx, "bitrix", "status:5", {"order_id": "5", "status_id": "F"})
        assert store_delivery(recorder, "moysklad", "req-1", {"events": []})
        assert not store_delivery(recorder, "moysklad", "req-1", {"events": []})
        target = BitrixTarget(
            recorder,
            Mappings(recorder, refresh_s=0),
            BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0),
        )

        report = OutboundWorker(recorder, target, FAST).run_once()

        assert report.parked_keys == ["sku:SKU-2"] and report.pushed == 2
        assert fake.products["101"]["quantity"] == 4.0 and fake.orders["5"]["statusId"] == "F"
        assert read_position(recorder, "bitrix") == 1
        (status,) = read_status(recorder)
        assert (status.parked_now, status.outbox_pending, status.lag_events) == (1, 0, 0)
    finally:
        recorder.close()
