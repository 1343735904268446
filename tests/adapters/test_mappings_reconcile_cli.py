"""Mappings from CSV and the `ledger` subcommands around them (reconciliation: test_reconcile.py)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST, event

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.cli import PUSH_TARGETS
from adapters.mappings import MappingError, Mappings, load_csv
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.outbound import OutboundWorker
from adapters.wms import WmsPickingTarget
from adapters.wms_inbound import WmsInboundTarget
from ledger.cli import EXIT_USAGE, main
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
        ("wms,unit,SKU-1,box,,0", "factor from 1 to"),
        ("wms,unit,SKU-1,box,,99999999999999999999999999", "factor from 1 to"),  # was an OverflowError
        ("bitrix,sku,SKU-2,,,", "are required"),
        ("wms,status,PICKING,Q,explode,", "action"),  # a typo for release or ship did nothing, silently
        ("bitrix,sku,SKU-2,1\x002,,", "NUL"),  # PostgreSQL cannot store it
        ("bitrix,sku,SKU-2,7,produkt,", "a bitrix sku row's external_type"),  # parked at every push
        ("moysklad,sku,SKU-2,7,offer,", "'service'., not 'offer'"),
    ],
)
def test_a_bad_row_names_its_line_and_nothing_of_the_file_is_loaded(tmp_path, recorder, bad_row, complaint):
    path = tmp_path / "mappings.csv"
    path.write_text(MAPPINGS_CSV + bad_row + "\n")

    with pytest.raises(MappingError, match=complaint) as raised:
        load_csv(recorder, path)

    assert ":7:" in str(raised.value)
    assert Mappings(recorder, refresh_s=0).external("bitrix", "sku", "SKU-1") is None


@pytest.mark.parametrize("system", ["moysklad", "wms"])
def test_one_moysklad_or_wms_store_is_mapped_from_one_ledger_store_only(tmp_path, recorder, system):
    """Their stores are read back by external id (demands, stock reports): shared, a reconciliation
    gave each ledger store the whole stock. Bitrix sums the ledger stores mapped to one of its stores."""
    path = tmp_path / "mappings.csv"
    path.write_text(MAPPINGS_CSV + f"{system},store,shop-1,main,,\n")
    assert load_csv(recorder, path) == 6
    again = tmp_path / "more.csv"
    again.write_text(
        "system,kind,local_id,external_id,external_type,factor\n"
        f"bitrix,store,backroom,1,,\nbitrix,sku,SKU-9,109,product,\n{system},store,backroom,main,,\n"
    )

    with pytest.raises(
        MappingError, match=f"{system} store main is mapped from 2 ledger stores .backroom, shop-1."
    ):
        load_csv(recorder, again)

    mappings = Mappings(recorder, refresh_s=0)
    assert mappings.external("bitrix", "sku", "SKU-9") is None  # nothing of the file is loaded
    assert sorted(mappings.all(system, "store")) == ["shop-1"]
    bitrix_shared = tmp_path / "bitrix.csv"
    bitrix_shared.write_text(
        "system,kind,local_id,external_id,external_type,factor\nbitrix,store,backroom,1,,\n"
    )
    assert load_csv(recorder, bitrix_shared) == 1
    assert sorted(Mappings(recorder, refresh_s=0).all("bitrix", "store")) == ["backroom", "shop-1"]


def test_one_moysklad_product_or_variant_is_mapped_from_one_ledger_sku_only(tmp_path, recorder):
    """Demands and the stock report are read back by the product's uuid: shared by two ledger SKUs,
    a reconciliation gave one of them the stock of both (and, absent as zero, the other 0)."""
    path = tmp_path / "mappings.csv"
    path.write_text(MAPPINGS_CSV)
    load_csv(recorder, path)
    again = tmp_path / "more.csv"
    again.write_text(
        "system,kind,local_id,external_id,external_type,factor\n"
        "bitrix,sku,SKU-9,109,product,\nmoysklad,sku,SKU-9,0b3c-1,variant,\n"
    )

    with pytest.raises(
        MappingError, match=r"moysklad sku 0b3c-1 is mapped from 2 ledger skus \(SKU-1, SKU-9\)"
    ):
        load_csv(recorder, again)

    mappings = Mappings(recorder, refresh_s=0)
    assert mappings.external("bitrix", "sku", "SKU-9") is None  # nothing of the file is loaded
    assert sorted(mappings.all("moysklad", "sku")) == ["SKU-1"]


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


def test_the_push_targets_a_command_names_are_the_targets_names() -> None:
    assert set(PUSH_TARGETS) == {
        BitrixTarget.name,
        MoySkladOrdersTarget.name,
        WmsPickingTarget.name,
        WmsInboundTarget.name,
    }


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["adapters", "retry-parked", "bogus"], "invalid choice: 'bogus'"),  # was '0 parked item(s)', exit 0
        (["adapters", "run", "--once", "--only", "wsm"], "invalid choice: 'wsm'"),  # ran nothing, exit 0
        (["adapters", "retry-parked", "bitrix", "--key", "NOSUCH"], "no parked item 'NOSUCH'"),
        (["adapters", "status", "--parked", "99999999999999999999999"], "--parked"),  # an OverflowError
        (["reconcile", "--source", "csv", "--run-id", "r" * 300], "--run-id"),  # stored, then failed
        (["reconcile", "--source", "csv", "--run-id", "../../etc/x"], "--run-id"),
        (["reconcile", "--source", "csv", "--run-id", ".."], "--run-id"),
        (["reconcile", "--source", "csv"], "the file lists no store"),  # compared 0 pairs, exit 0
    ],
)
def test_a_command_naming_what_is_not_there_is_refused_in_one_line(
    tmp_path, monkeypatch, database_url, ledger, capsys: Any, argv: list[str], complaint: str
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    (tmp_path / "snapshot.csv").write_text("store_id,sku,on_hand\n")
    monkeypatch.chdir(tmp_path)
    try:
        code = main([*argv, *(["--file", "snapshot.csv"] if argv[0] == "reconcile" else [])])
    except SystemExit as exited:  # argparse's refusal
        code = exited.code
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and complaint in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.glob("*.json")) == []  # no report was written or stored for a refused run id


@pytest.mark.parametrize(
    "argv",
    [
        ["adapters", "status"],
        ["adapters", "retry-parked", "bitrix"],
        ["mappings", "list"],
        ["mappings", "load", "m.csv"],
        ["reconcile", "--apply", "count-1"],
        ["reconcile", "--source", "csv", "--file", "count.csv", "--quiet"],
    ],
)
def test_a_command_that_must_find_a_ledger_refuses_a_sqlite_file_that_is_not_there(
    tmp_path, monkeypatch, capsys: Any, argv: list[str]
) -> None:
    """A mistyped path made a new, empty ledger: `reconcile` then reported the whole count as
    differences from zero, ready to be applied, as the ledger's own commands never would."""
    missing = tmp_path / "typo" / "ledger.db"
    missing.parent.mkdir()
    (tmp_path / "m.csv").write_text(MAPPINGS_CSV)
    (tmp_path / "count.csv").write_text("store_id,sku,on_hand\nstore-1,SKU-1,9\n")
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{missing}")
    monkeypatch.chdir(tmp_path)

    code = main(argv)

    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{missing}: no such database" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not missing.exists() and list(tmp_path.glob("*.json")) == []


def test_two_loads_at_once_cannot_both_map_one_moysklad_store_on_postgresql(postgres, monkeypatch):
    """Each load checked the table without the other's rows (READ COMMITTED), and both kept a
    MoySklad store mapped from two ledger stores (found by review)."""
    import threading
    import time

    from adapters import mappings as loading
    from adapters.db import open_database, transaction
    from adapters.mappings import MappingRow, save

    recorder = open_database(str(postgres.create_database()), 4, 10)
    checked = threading.Event()
    check = loading._refuse_shared_stores

    def check_then_pause(tx: Any) -> None:
        check(tx)
        if not checked.is_set():
            checked.set()
            time.sleep(1.0)  # the second load runs meanwhile, before this one commits

    monkeypatch.setattr(loading, "_refuse_shared_stores", check_then_pause)
    outcomes: list[str] = []

    def load(store: str) -> None:
        try:
            save(recorder, [MappingRow("moysklad", "store", store, "7a1f-shared")])
            outcomes.append("saved")
        except MappingError:
            outcomes.append("refused")

    first = threading.Thread(target=load, args=("shop-1",))
    first.start()
    assert checked.wait(20)
    second = threading.Thread(target=load, args=("backroom",))
    second.start()
    for thread in (first, second):
        thread.join(30)
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT local_id FROM adapter_mappings WHERE system = 'moysklad' AND kind = 'store'"
        )
    recorder.close()
    assert sorted(outcomes) == ["refused", "saved"]
    assert [row["local_id"] for row in rows] == ["shop-1"]
