"""What the adapters record by themselves names them in the history (`adapters/moysklad`, `adapters/wms`,
`adapters/reconcile`), and no token can take those names (issue #11, item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, event

from adapters import moysklad, reconcile_apply, wms
from adapters.inbound import InboxWorker, store_delivery
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_demands import DemandSync
from adapters.outbound import OutboundWorker
from adapters.reconcile import make_report
from adapters.reconcile_runs import load_report, save_report
from adapters.sink import LedgerSink
from adapters.snapshots import read_csv_snapshot
from adapters.wms import WmsClient, WmsConfig, WmsPickingTarget
from adapters.wms_statuses import WmsStatusProcessor
from ledger.access.scopes import InvalidGrant, check_name
from ledger.cli import main
from ledger.domain.model import EventType
from ledger.projections.queries import HistoryFilter

PRINCIPALS = (moysklad.PRINCIPAL, wms.PRINCIPAL, reconcile_apply.PRINCIPAL)
STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"


def principals(ledger: Any, store: str, type_: str) -> list[str | None]:
    ledger.refresh()
    return [row["principal"] for row in ledger.history(HistoryFilter(store, type=type_), 100)]


def test_the_adapters_principals_are_their_names() -> None:
    assert PRINCIPALS == ("adapters/moysklad", "adapters/wms", "adapters/reconcile")


def test_a_shipment_from_a_moysklad_demand_names_the_moysklad_adapter(
    moysklad: Any, mapped: Any, recorder: Any, mappings: Any, ledger: Any, record: Any
) -> None:
    fake, server = moysklad
    fake.stores.add(STORE_UUID)
    fake.products[PRODUCT] = "product"
    mapped(("moysklad", "store", "shop-1", STORE_UUID), ("moysklad", "sku", "SKU-2", PRODUCT, "product"))
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    client = MoySkladClient(MoySkladConfig(base_url=server.url + "/api/remap/1.2", token=fake.token))

    demands = DemandSync(recorder, mappings, client, LedgerSink(ledger))
    demands.handle(fake.webhook_body(fake.add_demand(STORE_UUID, [(PRODUCT, 4)])))

    assert principals(ledger, "shop-1", "stock.shipment") == ["adapters/moysklad"]


def test_a_release_after_a_picking_error_names_the_wms_adapter(
    wms: Any, mapped: Any, recorder: Any, mappings: Any, ledger: Any, record: Any
) -> None:
    fake, server = wms
    mapped(("wms", "store", "shop-1", "main"), ("wms", "status", "PICKING_ERROR", "PE", "release"))
    record(
        event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)),
        event(EventType.RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", order_id="B-7"),
    )
    client = WmsClient(WmsConfig(server.url + "/", fake.api_key, requests_per_s=1000))
    OutboundWorker(recorder, WmsPickingTarget(recorder, mappings, client), FAST).run_until_idle()
    order = fake.by_external("shop-1:r-1:default")
    assert order is not None
    processor = WmsStatusProcessor(recorder, mappings, LedgerSink(ledger), client)

    store_delivery(recorder, "wms", "d-1", {"id": order["id"], "status": "PICKING_ERROR"})
    assert InboxWorker(recorder, {"wms": processor.handle_delivery}).run_once() == (1, 0)

    assert principals(ledger, "shop-1", "stock.reservation_release") == ["adapters/wms"]


def test_an_applied_reconciliation_names_the_reconcile_adapter(
    tmp_path: Path, recorder: Any, ledger: Any, record: Any
) -> None:
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)))
    count = tmp_path / "count.csv"
    count.write_text("store_id,sku,on_hand\nshop-1,SKU-1,9\n")
    save_report(recorder, make_report(recorder, read_csv_snapshot(count), run_id="r1"))

    reconcile_apply.apply_report(
        recorder, load_report(recorder, "r1"), LedgerSink(ledger), reconcile_apply.ApplyLimits(100, 0.2, 20)
    )

    assert principals(ledger, "shop-1", "stock.adjustment") == ["adapters/reconcile"]


@pytest.mark.parametrize("name", [*PRINCIPALS, "ADAPTERS/WMS", "adapters/bitrix"])
def test_no_token_can_take_an_adapters_name(name: str) -> None:
    with pytest.raises(InvalidGrant, match="principal"):
        check_name(name)


def test_tokens_create_refuses_an_adapters_name(monkeypatch, database_url: str, capsys) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)

    assert main(["tokens", "create", "--name", "adapters/wms", "--role", "producer"]) != 0

    captured = capsys.readouterr()
    assert "principal" in captured.err and "sl_live_" not in captured.out
