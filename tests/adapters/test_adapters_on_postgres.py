"""The adapters' own SQL on PostgreSQL: positions, parking, outbox, inbox, mappings and status."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import FAST, event

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.db import open_database, transaction
from adapters.deliveries import Delivery
from adapters.inbound import InboxWorker, store_delivery
from adapters.mappings import MappingRow, Mappings, save
from adapters.outbound import OutboundWorker, enqueue, read_position
from adapters.spool import DeliverySpool
from adapters.status import read_status
from ledger.bootstrap import build_ledger
from ledger.clock import utc_text
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


def test_a_demand_corrected_deleted_and_redelivered_is_recorded_once_on_postgresql(
    pg_url, pg_ledger, moysklad
):
    from adapters.moysklad import MoySkladClient, MoySkladConfig
    from adapters.moysklad_demands import DemandSync
    from adapters.sink import LedgerSink

    fake, server = moysklad
    store_uuid, product = "7a1f0000-0000-0000-0000-000000000001", "0b3c0000-0000-0000-0000-0000000000b2"
    fake.stores.add(store_uuid)
    fake.products[product] = "product"
    recorder = open_database(pg_url, 4, 10)
    try:
        save(
            recorder,
            [
                MappingRow("moysklad", "store", "shop-1", store_uuid),
                MappingRow("moysklad", "sku", "SKU-1", product),
            ],
        )
        pg_ledger.submit_and_wait([event(EventType.RECEIPT, "shop-1", ("SKU-1", 10))])
        client = MoySkladClient(MoySkladConfig(base_url=server.url + "/api/remap/1.2", token=fake.token))
        sync = DemandSync(recorder, Mappings(recorder, refresh_s=0), client, LedgerSink(pg_ledger))
        old = fake.add_demand(store_uuid, [(product, 1)])  # shipped before corrections were followed
        pg_ledger.submit_and_wait(
            [
                dataclasses.replace(
                    event(EventType.SHIPMENT, "shop-1", ("SKU-1", 1), source="moysklad"),
                    event_id=f"demand:{old}",
                )
            ]
        )
        demand = fake.add_demand(store_uuid, [(product, 4)])

        assert sync.handle(fake.webhook_body(demand)) == 1
        fake.update_demand(demand, positions=[(product, 2)])
        fake.update_demand(old, positions=[(product, 3)])
        assert sync.handle(fake.webhook_body(demand, "UPDATE")) == 1
        assert sync.handle(fake.webhook_body(demand, "UPDATE")) == 0
        assert sync.handle(fake.webhook_body(old, "UPDATE")) == 1
        fake.delete_demand(demand)
        assert sync.handle(fake.webhook_body(demand, "DELETE")) == 1
        assert sync.handle(fake.webhook_body(demand, "DELETE")) == 0

        (level,) = pg_ledger.levels("shop-1", ["SKU-1"])
        assert level.level.on_hand_units == 7  # 10, the old demand's 3, the deleted one's 0
    finally:
        recorder.close()


def test_a_spooled_delivery_postgresql_refuses_is_set_aside_with_an_alert_and_the_drain_goes_on(
    pg_url, tmp_path
):
    """A delivery id with a NUL, spooled before the receiver refused it: PostgreSQL refuses the
    insert (DataError) on every round, and the drain stopped there, and all inbound with it."""
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=10)
    received_at = utc_text(datetime.now(UTC) - timedelta(seconds=10))
    body = '{"id": "PO-1", "status": "PICKED"}'
    spool.append(Delivery("wms", "PO-\x00:PICKED", received_at, body))
    spool.append(Delivery("wms", "PO-2:PICKED", received_at, body.replace("PO-1", "PO-2")))
    recorder = open_database(pg_url, 4, 10)
    try:
        seen: list[str] = []
        inbox = InboxWorker(recorder, {"wms": lambda payload: seen.append(payload["id"])}, spool=spool)

        assert inbox.run_once() == (1, 0)

        assert seen == ["PO-2"] and spool.pending(10) == []
        assert len(list((tmp_path / "spool" / "set-aside").iterdir())) == 1
        with transaction(recorder) as tx:
            (alert,) = tx.fetchall("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
        assert "the database refuses it" in alert["detail"]
    finally:
        recorder.close()
