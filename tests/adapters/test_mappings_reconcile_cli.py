"""Mappings from CSV and the `ledger` subcommands around them (reconciliation: test_reconcile.py)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST, event

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.mappings import MappingError, Mappings, load_csv
from adapters.outbound import OutboundWorker
from ledger.cli import main
from ledger.domain.model import EventType

RECEIPT = EventType.RECEIPT
MAPPINGS_CSV = """system,kind,local_id,external_id,external_type,factor
bitrix,sku,SKU-1,101,product,
bitrix,store,shop-1,1,,
moysklad,sku,SKU-1,0b3c-1,variant,
wms,unit,SKU-1,box,,12
wms,status,PICKING_ERROR,PE,release,
"""


def test_a_mappings_csv_is_loaded_and_read_back_by_kind(tmp_path, recorder):
    path = tmp_path / "mappings.csv"
    path.write_text(MAPPINGS_CSV)

    assert load_csv(recorder, path) == 5

    mappings = Mappings(recorder, refresh_s=0)
    assert mappings.external("bitrix", "sku", "SKU-1").external_id == "101"  # type: ignore[union-attr]
    assert mappings.local("moysklad", "sku", "0b3c-1") == "SKU-1"
    assert mappings.unit("wms", "SKU-1") == ("box", 12)
    assert mappings.to_external_units("wms", "SKU-1", 30) == 2
    assert mappings.to_base_units("wms", "SKU-1", 3) == 36
    assert mappings.status("wms", "PICKING_ERROR").action == "release"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bad_row", "complaint"),
    [
        ("shopify,sku,SKU-1,1,,", "system must be one of"),
        ("bitrix,sku,SKU 1,1,,", "not a valid ledger id"),
        ("wms,unit,SKU-1,box,,0", "factor >= 1"),
        ("bitrix,sku,SKU-2,,,", "are required"),
    ],
)
def test_a_bad_row_names_its_line_and_nothing_of_the_file_is_loaded(tmp_path, recorder, bad_row, complaint):
    path = tmp_path / "mappings.csv"
    path.write_text(MAPPINGS_CSV + bad_row + "\n")

    with pytest.raises(MappingError, match=complaint) as raised:
        load_csv(recorder, path)

    assert ":7:" in str(raised.value)
    assert Mappings(recorder, refresh_s=0).external("bitrix", "sku", "SKU-1") is None


def test_an_edited_mapping_is_used_by_a_running_adapter_after_the_refresh(bitrix, recorder, mapped, record):
    fake, server = bitrix
    fake.add_product("101")
    fake.add_product("202")
    mapped(("bitrix", "store", "shop-1", "1"), ("bitrix", "sku", "SKU-1", "101"))
    mappings = Mappings(recorder, refresh_s=0)
    target = BitrixTarget(
        recorder, mappings, BitrixConfig(webhook_url=server.url + fake.webhook_path, requests_per_s=1000.0)
    )
    worker = OutboundWorker(recorder, target, FAST)
    record(event(RECEIPT, "shop-1", ("SKU-1", 4)))
    worker.run_until_idle()
    mapped(("bitrix", "sku", "SKU-1", "202"))  # the product was re-created in Bitrix with a new id

    record(event(RECEIPT, "shop-1", ("SKU-1", 1)))
    worker.run_until_idle()

    assert fake.products["202"]["quantity"] == 5.0


def test_the_ledger_commands_load_mappings_and_report_status(
    tmp_path, monkeypatch, database_url, ledger, capsys: Any
):
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    (tmp_path / "m.csv").write_text(MAPPINGS_CSV)

    assert main(["mappings", "load", str(tmp_path / "m.csv")]) == 0
    capsys.readouterr()
    assert main(["mappings", "list", "--system", "wms"]) == 0
    assert "wms,status,PICKING_ERROR,PE,release," in capsys.readouterr().out
    assert main(["adapters", "status"]) == 0
    assert main(["adapters", "status", "--metrics"]) == 0
