"""Reconciliation never destroys by default: partial snapshots, reviewed reports applied by run id, limits."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BOTH_DATABASES, either_database, event
from ledger_stand_ins import RefusingLedger

from adapters import cli
from adapters.db import open_database, transaction
from adapters.mappings import MappingError
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.outbound import TargetUnavailable
from adapters.reconcile import make_report
from adapters.reconcile_apply import (
    ApplyLimits,
    ApplyUnfinished,
    ChangeAboveLimits,
    ReportSuperseded,
    adjustment_events,
    apply_report,
)
from adapters.reconcile_runs import load_report, save_report
from adapters.sink import LedgerSink
from adapters.snapshots import read_csv_snapshot, read_moysklad_snapshot
from ledger.bootstrap import build_ledger
from ledger.cli import main
from ledger.config import Settings
from ledger.domain.model import EventType

RECEIPT, RESERVATION = EventType.RECEIPT, EventType.RESERVATION
STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
RESERVED = "0b3c0000-0000-0000-0000-0000000000a1"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"
LIMITS = ApplyLimits(line_units_max=100, changed_share_max=0.2, share_min_skus=20)


def count_file(path: Path, *rows: str) -> Path:
    path.write_text("store_id,sku,on_hand,uom\n" + "".join(f"{row}\n" for row in rows))
    return path


def levels(ledger: Any, store: str, *skus: str) -> dict[str, int]:
    ledger.refresh()
    return {v.sku: v.level.on_hand_units for v in ledger.levels(store, list(skus))}


def lines(report: Any) -> list[tuple[str, str, int, int, int]]:
    return [
        (d.store_id, d.sku, d.ledger_units, d.external_units, d.difference_units)
        for d in report.discrepancies
    ]


# -- CSV: a partial count --------------------------------------------------------------------------


def test_a_partial_count_changes_only_what_it_counted_and_lists_the_rest_as_untouched(
    tmp_path, recorder, ledger, record
):
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5)))
    snapshot = read_csv_snapshot(count_file(tmp_path / "count.csv", "shop-1,SKU-1,9,"))

    report = make_report(recorder, snapshot, run_id="r1")
    save_report(recorder, report)
    apply_report(recorder, load_report(recorder, "r1"), LedgerSink(ledger), LIMITS)

    assert lines(report) == [("shop-1", "SKU-1", 10, 9, -1)]
    assert [(u.sku, u.ledger_units) for u in report.untouched] == [("SKU-2", 5)]
    assert levels(ledger, "shop-1", "SKU-1", "SKU-2") == {"SKU-1": 9, "SKU-2": 5}


def test_absent_as_zero_counts_every_unlisted_sku_of_the_stores_compared_as_zero(tmp_path, recorder, record):
    record(event(RECEIPT, "shop-1", ("SKU-1", 10), ("SKU-2", 5)), event(RECEIPT, "shop-2", ("SKU-2", 7)))
    snapshot = read_csv_snapshot(count_file(tmp_path / "count.csv", "shop-1,SKU-1,10,"))

    report = make_report(recorder, snapshot.absent_as_zero(["shop-1"]), run_id="r1", stores=["shop-1"])

    assert lines(report) == [("shop-1", "SKU-2", 5, 0, -5)]
    assert report.untouched == [] and report.stores == ["shop-1"]  # shop-2 was not compared


def test_counted_units_are_converted_and_an_unknown_unit_is_refused(tmp_path, recorder, mapped, mappings):
    mapped(("csv", "unit", "SKU-3", "box", None, 6))
    snapshot = read_csv_snapshot(count_file(tmp_path / "c.csv", "shop-1,SKU-3,2,box"), mappings)
    assert dict(snapshot.on_hand) == {("shop-1", "SKU-3"): 12}
    with pytest.raises(ValueError, match="unknown unit 'pallet'"):
        read_csv_snapshot(count_file(tmp_path / "d.csv", "shop-1,SKU-1,1,pallet"), mappings)


# -- applying a reviewed report ----------------------------------------------------------------------


def test_apply_records_the_reviewed_lines_not_a_new_read_and_only_once(tmp_path, recorder, ledger, record):
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    count = count_file(tmp_path / "count.csv", "shop-1,SKU-1,7,")
    save_report(recorder, make_report(recorder, read_csv_snapshot(count), run_id="r1"))
    count_file(count, "shop-1,SKU-1,0,")  # the file changes after the review: not read again
    record(event(EventType.SALE, "shop-1", ("SKU-1", 2)))  # a sale after the review is kept

    first = apply_report(recorder, load_report(recorder, "r1"), LedgerSink(ledger), LIMITS)
    again = LedgerSink(ledger).record(adjustment_events(load_report(recorder, "r1")))  # same ids

    assert first == 1
    assert [r.outcome.value for r in again] == ["duplicate"]
    assert levels(ledger, "shop-1", "SKU-1") == {"SKU-1": 5}  # 10 - 2 sold - 3 reviewed
    assert load_report(recorder, "r1").applied_events == 1


def test_a_change_past_the_limits_needs_force(tmp_path, recorder, ledger, record):
    record(event(RECEIPT, "shop-1", *[(f"SKU-{n}", 5) for n in range(25)]))
    many = [f"shop-1,SKU-{n},4," for n in range(6)]  # 6 of 25 SKUs: 24 % > 20 %
    save_report(
        recorder,
        make_report(recorder, read_csv_snapshot(count_file(tmp_path / "a.csv", *many)), run_id="many"),
    )
    save_report(
        recorder,
        make_report(
            recorder, read_csv_snapshot(count_file(tmp_path / "b.csv", "shop-1,SKU-0,500,")), run_id="big"
        ),
    )

    with pytest.raises(ChangeAboveLimits, match=r"6 of the 25 SKUs") as many_raised:
        apply_report(recorder, load_report(recorder, "many"), LedgerSink(ledger), LIMITS)
    with pytest.raises(ChangeAboveLimits, match=r"more than 100 units.*shop-1/SKU-0 \+495"):
        apply_report(recorder, load_report(recorder, "big"), LedgerSink(ledger), LIMITS)
    assert levels(ledger, "shop-1", "SKU-0") == {"SKU-0": 5}  # nothing recorded
    assert many_raised.value.run_id == "many"

    apply_report(recorder, load_report(recorder, "big"), LedgerSink(ledger), LIMITS, force=True)
    assert levels(ledger, "shop-1", "SKU-0") == {"SKU-0": 500}


def test_the_share_that_needs_force_counts_only_the_skus_held_not_the_stores_old_ones_at_zero(
    tmp_path, recorder, ledger, record
):
    """Counted over every level row, 30 SKUs sold out long ago watered 6 changes of 25 SKUs held
    down to 11 %, and a report zeroing a quarter of the store went through without --force."""
    record(event(RECEIPT, "shop-1", *[(f"OLD-{n}", 1) for n in range(30)]))
    record(event(EventType.ADJUSTMENT, "shop-1", *[(f"OLD-{n}", -1) for n in range(30)], reason="sold out"))
    record(event(RECEIPT, "shop-1", *[(f"SKU-{n}", 5) for n in range(25)]))
    zeroed = [f"shop-1,SKU-{n},0," for n in range(6)]
    report = make_report(recorder, read_csv_snapshot(count_file(tmp_path / "a.csv", *zeroed)), run_id="z")
    save_report(recorder, report)

    assert report.ledger_skus == 25
    with pytest.raises(ChangeAboveLimits, match=r"6 of the 25 SKUs"):
        apply_report(recorder, load_report(recorder, "z"), LedgerSink(ledger), LIMITS)
    assert levels(ledger, "shop-1", "SKU-0") == {"SKU-0": 5}


def test_a_report_made_before_another_was_applied_to_its_stores_is_refused(
    tmp_path, recorder, ledger, record
):
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    count = read_csv_snapshot(count_file(tmp_path / "count.csv", "shop-1,SKU-1,8,"))
    save_report(recorder, make_report(recorder, count, run_id="first"))
    save_report(recorder, make_report(recorder, count, run_id="second"))  # the same count, reviewed twice
    apply_report(recorder, load_report(recorder, "first"), LedgerSink(ledger), LIMITS)

    with pytest.raises(ReportSuperseded, match="first"):
        apply_report(recorder, load_report(recorder, "second"), LedgerSink(ledger), LIMITS)
    assert levels(ledger, "shop-1", "SKU-1") == {"SKU-1": 8}  # corrected once, not twice


@pytest.fixture(params=BOTH_DATABASES)
def ledger_on_either(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(ledger, recorder) on SQLite, then on PostgreSQL."""
    url = either_database(request, tmp_path)
    ledger = build_ledger(Settings(database_url=url, request_timeout_s=20))
    ledger.start()
    recorder = open_database(url, 4, 10)
    try:
        yield ledger, recorder
    finally:
        recorder.close()
        ledger.stop()


def test_two_reports_over_one_store_applied_at_once_correct_it_once(tmp_path, ledger_on_either):
    """Two counts of one shelf, each reviewed and applied at the same moment: both passed the check
    before either was marked applied, and both recorded (10 - 1 - 1 = 8)."""
    ledger, recorder = ledger_on_either
    ledger.submit_and_wait([event(RECEIPT, "shop-1", ("SKU-1", 10))])
    count = read_csv_snapshot(count_file(tmp_path / "count.csv", "shop-1,SKU-1,9,"))
    for run in ("person", "scanner"):
        save_report(recorder, make_report(recorder, count, run_id=run))

    class SlowLedger(LedgerSink):
        def record(self, events: Any) -> Any:
            time.sleep(0.5)  # both applies are under way before either records
            return super().record(events)

    outcomes: list[str] = []

    def apply(run: str) -> None:
        try:
            apply_report(recorder, load_report(recorder, run), SlowLedger(ledger), LIMITS)
            outcomes.append("applied")
        except (ReportSuperseded, ApplyUnfinished):
            outcomes.append("refused")

    threads = [threading.Thread(target=apply, args=(run,)) for run in ("person", "scanner")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["applied", "refused"]
    assert levels(ledger, "shop-1", "SKU-1") == {"SKU-1": 9}


class _StopsPartway(LedgerSink):
    """Records the first event of an apply, then fails, as a crash between two would."""

    def record(self, events: Any) -> Any:
        super().record(list(events[:1]))
        raise TimeoutError("the ledger did not answer in time")


def test_an_apply_that_stopped_partway_keeps_other_reports_over_its_stores_out_until_it_ends(
    tmp_path, ledger_on_either
):
    """Whether its partial corrections are in another report's figures is unknown, so that report is
    refused until the stopped one is applied again (and then, made before it, for good)."""
    ledger, recorder = ledger_on_either
    ledger.submit_and_wait([event(RECEIPT, store, ("SKU-1", 10)) for store in ("shop-1", "shop-2")])
    count = read_csv_snapshot(count_file(tmp_path / "count.csv", "shop-1,SKU-1,9,", "shop-2,SKU-1,9,"))
    save_report(recorder, make_report(recorder, count, run_id="first"))
    with pytest.raises(TimeoutError):
        apply_report(recorder, load_report(recorder, "first"), _StopsPartway(ledger), LIMITS)
    assert levels(ledger, "shop-1", "SKU-1") == {"SKU-1": 9}  # one store of the two corrected
    assert levels(ledger, "shop-2", "SKU-1") == {"SKU-1": 10}

    shop_2 = read_csv_snapshot(count_file(tmp_path / "again.csv", "shop-2,SKU-1,9,"))
    save_report(recorder, make_report(recorder, shop_2, run_id="later"))
    with pytest.raises(ApplyUnfinished, match="first"):
        apply_report(recorder, load_report(recorder, "later"), LedgerSink(ledger), LIMITS)

    assert apply_report(recorder, load_report(recorder, "first"), LedgerSink(ledger), LIMITS) == 2
    with pytest.raises(ReportSuperseded, match="first"):
        apply_report(recorder, load_report(recorder, "later"), LedgerSink(ledger), LIMITS)
    assert levels(ledger, "shop-2", "SKU-1") == {"SKU-1": 9}  # corrected once, not twice


# -- MoySklad: every row, every page -------------------------------------------------------------------


def client_for(server: Any, **overrides: Any) -> MoySkladClient:
    config = MoySkladConfig(
        base_url=server.url + "/api/remap/1.2", token="fake-moysklad-token", timeout_s=2.0
    )
    return MoySkladClient(dataclasses.replace(config, **overrides))


@pytest.fixture
def account(moysklad: Any, mapped: Any) -> Any:
    fake, _ = moysklad
    fake.stores.add(STORE_UUID)
    fake.products.update({RESERVED: "product", PRODUCT: "product"})
    mapped(
        ("moysklad", "store", "shop-1", STORE_UUID),
        ("moysklad", "sku", "SKU-R", RESERVED, "product"),
        ("moysklad", "sku", "SKU-2", PRODUCT, "product"),
    )
    return moysklad


def test_a_fully_reserved_item_is_read_as_its_stock_not_as_zero(account, recorder, mappings, record):
    fake, server = account
    record(
        event(RECEIPT, "shop-1", ("SKU-R", 18), ("SKU-2", 3)),
        event(RESERVATION, "shop-1", ("SKU-R", 18), reservation_id="res-1", order_id="B-1"),
    )
    fake.stock[(RESERVED, STORE_UUID)] = {"stock": 18.0, "reserve": 18.0}  # available 0
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 2.0}

    snapshot = read_moysklad_snapshot(client_for(server), mappings)
    report = make_report(recorder, snapshot, run_id="m1")
    complete = make_report(recorder, snapshot.absent_as_zero(["shop-1"]), run_id="m2")

    assert snapshot.on_hand[("shop-1", "SKU-R")] == 18
    assert lines(report) == lines(complete) == [("shop-1", "SKU-2", 3, 2, -1)]
    assert report.untouched == []


def test_a_moysklad_store_mapped_from_two_ledger_stores_is_not_reconciled_into_both(
    account, recorder, mappings, record
):
    """Mapped before loading refused it (an older database): each ledger store was given the whole
    of the MoySklad store's stock, and an apply made 30 units out of 15."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10)), event(RECEIPT, "backroom", ("SKU-2", 5)))
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 15.0}
    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('moysklad', 'store', 'backroom', %s, NULL, '2026-12-01T00:00:00Z')",
            (STORE_UUID,),
        )

    with pytest.raises(MappingError, match=f"moysklad store {STORE_UUID} is mapped from 2 ledger stores"):
        read_moysklad_snapshot(client_for(server), mappings)


def test_a_moysklad_product_mapped_from_two_ledger_skus_is_not_reconciled_into_one_of_them(
    account, recorder, mappings, record
):
    """Mapped before loading refused it (an older database): the product's 15 units went to one SKU
    (the other's 5 kept, 20 out of 15), or, absent as zero, the other SKU was zeroed."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 10), ("SKU-X", 5)))
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 15.0}
    with transaction(recorder) as tx:  # as an older release let it be loaded
        tx.execute(
            "INSERT INTO adapter_mappings (system, kind, local_id, external_id, external_type, updated_at) "
            "VALUES ('moysklad', 'sku', 'SKU-X', %s, 'product', '2026-12-01T00:00:00Z')",
            (PRODUCT,),
        )

    with pytest.raises(MappingError, match=f"moysklad sku {PRODUCT} is mapped from 2 ledger skus"):
        read_moysklad_snapshot(client_for(server), mappings)


def test_the_fake_leaves_out_zero_available_rows_unless_quantity_mode_all_is_asked(account):
    fake, server = account
    fake.stock[(RESERVED, STORE_UUID)] = {"stock": 18.0, "reserve": 18.0}
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 2.0}
    client = client_for(server)

    by_default = client.request("GET", "report/stock/all").json()
    every_row = client.request("GET", "report/stock/all", params={"filter": "quantityMode=all"}).json()

    assert [row["stock"] for row in by_default["rows"]] == [2.0]
    assert sorted(row["stock"] for row in every_row["rows"]) == [2.0, 18.0]


def test_an_archived_product_with_stock_is_read_not_counted_as_zero(account, recorder, mappings, record):
    """Archived in MoySklad with its units still on the shelf (seed 001: "check via archived:
    true"): left out of the report by default, it would be counted 0 by --absent-as-zero."""
    fake, server = account
    record(event(RECEIPT, "shop-1", ("SKU-2", 3)))
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 3.0}
    fake.archived.add(PRODUCT)

    snapshot = read_moysklad_snapshot(client_for(server), mappings)
    complete = make_report(recorder, snapshot.absent_as_zero(["shop-1"]), run_id="a1")

    assert snapshot.on_hand[("shop-1", "SKU-2")] == 3
    assert lines(complete) == []


def test_the_fake_leaves_out_archived_products_unless_asked(account):
    fake, server = account
    fake.stock[(RESERVED, STORE_UUID)] = {"stock": 18.0}
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 2.0}
    fake.archived.add(PRODUCT)
    client = client_for(server)

    def stocks(conditions: str) -> Any:
        answer = client.request("GET", "report/stock/all", params={"filter": conditions})
        return (
            sorted(row["stock"] for row in answer.json()["rows"]) if answer.status == 200 else answer.status
        )

    assert stocks("quantityMode=all") == [18.0]  # the default: not archived only
    assert stocks("archived=true") == [2.0]
    assert stocks("archived=false;archived=true") == [2.0, 18.0]
    assert stocks("archived=yes") == 400
    assert stocks("archived!=true") == 400  # `=` only
    assert stocks("archive=true") == 400  # no such filter
    assert stocks("store!=" + client.meta("store", STORE_UUID)["meta"]["href"]) != 400  # documented


def test_the_whole_report_is_read_page_by_page(account, recorder, mapped, mappings):
    fake, server = account
    products = [f"0b3c0000-0000-0000-0000-{n:012d}" for n in range(2500)]
    for n, uuid in enumerate(products):
        fake.products[uuid] = "product"
        fake.stock[(uuid, STORE_UUID)] = {"stock": float(n % 3)}  # a third of them hold 0
    mapped(*[("moysklad", "sku", f"BULK-{n}", uuid, "product") for n, uuid in enumerate(products)])

    snapshot = read_moysklad_snapshot(client_for(server), mappings)

    assert len(snapshot.on_hand) == 2500 and fake.report_pages_served == 3
    assert snapshot.on_hand[("shop-1", "BULK-2499")] == 2499 % 3


@pytest.mark.parametrize("change", ["a row leaves", "a row comes", "one leaves before, one comes after"])
def test_a_report_that_changes_between_its_pages_is_refused(account, mapped, mappings, monkeypatch, change):
    """Read by offset, a report whose rows move between two pages slides the rest: a row left
    unread would be counted 0 by --absent-as-zero (its stock zeroed), or a row read twice. A row
    that leaves before the offset and one that comes after it keep the report's size."""
    fake, server = account
    products = [f"0b3c0000-0000-0000-0000-{n:012d}" for n in range(1500)]
    for uuid in products:
        fake.products[uuid] = "product"
        fake.stock[(uuid, STORE_UUID)] = {"stock": 5.0}
    mapped(*[("moysklad", "sku", f"BULK-{n}", uuid, "product") for n, uuid in enumerate(products)])
    serve_page = type(fake)._stock_report
    newcomer = "0b3c0000-0000-0000-0000-999999999999"

    def moving(self: Any, request: Any) -> Any:
        reply = serve_page(self, request)
        if self.report_pages_served == 1:  # between the first page and the second
            if change != "a row comes":
                del self.stock[(products[3], STORE_UUID)]
            if change != "a row leaves":  # sorted last: after the offset
                self.products[newcomer] = "product"
                self.stock[(newcomer, STORE_UUID)] = {"stock": 1.0}
        return reply

    monkeypatch.setattr(type(fake), "_stock_report", moving)
    with pytest.raises(TargetUnavailable, match="changed while it was read"):
        read_moysklad_snapshot(client_for(server), mappings)


def test_the_client_sends_the_documented_accept_and_the_fake_refuses_any_other(account):
    _, server = account
    url = server.url + "/api/remap/1.2/report/stock/all"
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": "Bearer fake-moysklad-token",
            "Accept-Encoding": "gzip",
            "Accept": "application/json",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert json.loads(refused.value.read())["errors"][0]["code"] == 1062
    assert client_for(server).request("GET", "report/stock/all").status == 200


# -- the command line, as the README's walkthrough runs it --------------------------------------------


def test_a_refusal_or_no_answer_while_applying_is_one_line_and_exit_2_and_the_run_stays_unapplied(
    tmp_path, monkeypatch, database_url, ledger, record, capsys
):
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    record(event(RECEIPT, "store-1", ("SKU-1", 10)))
    count = count_file(tmp_path / "count.csv", "store-1,SKU-1,9,")
    report = ["reconcile", "--source", "csv", "--file", str(count), "--out-dir", str(tmp_path), "--quiet"]
    assert main([*report, "--run-id", "count-1"]) == 0
    capsys.readouterr()
    real = cli._ledger_sink

    for refusing in (lambda e: True, None):  # answered invalid; then no answer at all

        def sink_for(settings: Any, refusing: Any = refusing) -> tuple[Any, Any]:
            sink, book = real(settings)
            if refusing is None:
                return LedgerSink(_NoAnswer()), book
            return LedgerSink(RefusingLedger(sink.ledger, refusing)), book

        monkeypatch.setattr(cli, "_ledger_sink", sink_for)
        assert main(["reconcile", "--apply", "count-1"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "is not marked applied" in err
        assert ("will be again" in err) == (refusing is not None)

    monkeypatch.setattr(cli, "_ledger_sink", real)
    assert main(["reconcile", "--apply", "count-1"]) == 0  # then applied, once
    assert levels(ledger, "store-1", "SKU-1") == {"SKU-1": 9}


class _NoAnswer:
    def submit_and_wait(self, events: list[Any]) -> Any:
        raise TimeoutError("the ledger did not answer in time")


def test_the_command_reports_first_and_applies_the_reviewed_run_by_its_id(
    tmp_path, monkeypatch, database_url, ledger, record, capsys
):
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    record(event(RECEIPT, "store-1", ("SKU-1", 10), ("SKU-2", 5)))
    count = count_file(tmp_path / "count.csv", "store-1,SKU-1,9,")
    out = tmp_path / "out"

    report = ["reconcile", "--source", "csv", "--file", str(count), "--out-dir", str(out), "--quiet"]
    assert main([*report, "--run-id", "count-1"]) == 0
    printed = capsys.readouterr().out
    assert "store-1      SKU-1                  10         9       -1" in printed
    assert "not in the snapshot, left untouched: store-1/SKU-2 (5)" in printed
    assert "ledger reconcile --apply count-1" in printed
    assert levels(ledger, "store-1", "SKU-1", "SKU-2") == {"SKU-1": 10, "SKU-2": 5}  # nothing changed yet
    assert json.loads((out / "reconcile-csv-count-1.json").read_text())["untouched_count"] == 1

    assert main(["reconcile", "--apply"]) == 2  # a run id is required
    assert main([*report, "--apply"]) == 2  # the old one-step form reads and applies: refused
    assert main(["reconcile", "--apply", "count-1"]) == 0
    assert "recorded 1 stock.adjustment event(s)" in capsys.readouterr().out
    assert main(["reconcile", "--apply", "count-1"]) == 0
    assert "applied before" in capsys.readouterr().out

    assert levels(ledger, "store-1", "SKU-1", "SKU-2") == {"SKU-1": 9, "SKU-2": 5}

    count_file(count, "store-1,SKU-2,500,")  # a typo of 5: past the 100-unit limit
    assert main([*report, "--run-id", "count-2"]) == 0
    capsys.readouterr()
    assert main(["reconcile", "--apply", "count-2"]) == 2
    assert "SKU-2 +495" in capsys.readouterr().err
    assert levels(ledger, "store-1", "SKU-2") == {"SKU-2": 5}
    assert main(["reconcile", "--apply", "count-2", "--force"]) == 0
    assert levels(ledger, "store-1", "SKU-2") == {"SKU-2": 500}


def test_each_run_keeps_report_files_of_its_own_whatever_dots_its_id_holds(
    tmp_path, monkeypatch, database_url, ledger, record, capsys
):
    """A run id may hold dots (`2026.12.07`). The files were named with Path.with_suffix, which took
    the id's last dot for a suffix: runs `count.1` and `count.2` both wrote reconcile-csv-count.csv,
    the second over the report of the first while it was being reviewed (found by review)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    record(event(RECEIPT, "store-1", ("SKU-1", 10)))
    count = count_file(tmp_path / "count.csv", "store-1,SKU-1,9,")
    out = tmp_path / "out"
    report = ["reconcile", "--source", "csv", "--file", str(count), "--out-dir", str(out), "--quiet"]

    assert main([*report, "--run-id", "count.1"]) == 0
    first = capsys.readouterr().out
    count_file(count, "store-1,SKU-1,8,")
    assert main([*report, "--run-id", "count.2"]) == 0

    assert f"report: {out / 'reconcile-csv-count.1.csv'} and {out / 'reconcile-csv-count.1.json'}" in first
    for run, external in (("count.1", 9), ("count.2", 8)):
        body = json.loads((out / f"reconcile-csv-{run}.json").read_text())
        assert body["run_id"] == run and body["discrepancies"][0]["external_units"] == external
        written = (out / f"reconcile-csv-{run}.csv").read_text().splitlines()
        assert written[1] == f"store-1,SKU-1,10,{external},{external - 10}"


@pytest.mark.parametrize(
    "option", [["--master", "ledger"], ["--master", "external"], ["--out-dir", "elsewhere"]]
)
def test_apply_refuses_a_master_or_out_dir_rather_than_ignoring_it(
    tmp_path, monkeypatch, database_url, ledger, record, capsys, option
):
    """`--apply RUN --master ledger` recorded the report's lines: the option given was ignored."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    record(event(RECEIPT, "store-1", ("SKU-1", 10)))
    count = count_file(tmp_path / "count.csv", "store-1,SKU-1,9,")
    report = ["reconcile", "--source", "csv", "--file", str(count), "--out-dir", str(tmp_path), "--quiet"]
    assert main([*report, "--run-id", "count-1"]) == 0
    capsys.readouterr()

    code = main(["reconcile", "--apply", "count-1", *option])

    err = capsys.readouterr().err
    assert code == 2 and option[0] in err and len(err.strip().splitlines()) == 1, err
    assert levels(ledger, "store-1", "SKU-1") == {"SKU-1": 10}  # nothing recorded


def test_a_fractional_moysklad_stock_is_one_line_naming_the_store_and_sku(
    account, tmp_path, monkeypatch, database_url, ledger, capsys
):
    """It was a ValueError's traceback: no whole number of units can be compared, or recorded."""
    fake, server = account
    fake.stock[(PRODUCT, STORE_UUID)] = {"stock": 2.5}
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_MOYSKLAD_TOKEN", fake.token)
    monkeypatch.setenv("LEDGER_MOYSKLAD_BASE_URL", server.url + "/api/remap/1.2")

    code = main(["reconcile", "--source", "moysklad", "--out-dir", str(tmp_path), "--quiet"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and "2.5" in err and "shop-1" in err and "SKU-2" in err, err
    assert "\n" not in err and "Traceback" not in err, err
    assert list(tmp_path.glob("*.json")) == []


def test_a_wms_stock_answer_that_is_not_json_is_one_line_saying_so(
    tmp_path, monkeypatch, database_url, ledger, mapped, capsys
):
    """A proxy's maintenance page answered 200 was a JSONDecodeError's traceback."""
    from adapters.httpserver import HttpServer, Reply

    class Proxy:
        def handle(self, request: Any) -> Reply:
            return Reply(200, b"<html>maintenance</html>", content_type="text/html")

    mapped(("wms", "store", "store-1", "main"))
    server = HttpServer(Proxy()).start()
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_WMS_BASE_URL", server.url)
    monkeypatch.setenv("LEDGER_WMS_API_KEY", "wms-api-key-123456")
    try:
        code = main(["reconcile", "--source", "wms", "--out-dir", str(tmp_path), "--quiet"])
    finally:
        server.stop()

    err = capsys.readouterr().err.strip()
    assert code == 2 and "(HTTP 200, text/html) is not JSON" in err, err
    assert "\n" not in err and "Traceback" not in err, err
