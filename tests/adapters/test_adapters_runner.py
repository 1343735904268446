"""`ledger adapters run`: workers in their own threads from the settings, webhooks and /metrics over HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from conftest import event

from adapters.runner import Runner, build_adapters
from adapters.sink import LedgerSink
from ledger.cli import main
from ledger.config import Settings
from ledger.domain.model import EventType

DEADLINE_S = 15.0


def wait_until(check: Any, deadline_s: float = DEADLINE_S) -> None:
    until = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < until, "the condition was not met before the deadline"
        time.sleep(0.02)


def test_the_runner_pushes_in_its_own_threads_and_serves_webhooks_and_metrics(
    database_url, ledger, recorder, record, bitrix, wms, mapped
):
    fake, server = bitrix
    fake_wms, wms_server = wms
    fake.add_product("101")
    mapped(
        ("bitrix", "store", "shop-1", "1"),
        ("bitrix", "sku", "SKU-1", "101"),
        ("wms", "store", "shop-1", "main"),
        ("wms", "status", "PICKING_ERROR", "PE", "release"),
    )
    settings = Settings(
        database_url=database_url,
        bitrix_webhook_url=server.url + fake.webhook_path,
        bitrix_requests_per_s=100,
        wms_base_url=wms_server.url + "/",
        wms_api_key="fake-wms-key",
        wms_webhook_secret="w1",
        adapters_http_port=0,
        adapters_poll_interval_ms=20,
        adapters_mappings_refresh_s=0,
        wms_poll_interval_s=0.05,
    )
    runner = Runner(build_adapters(settings, LedgerSink(ledger), recorder), settings).start()
    try:
        record(
            event(EventType.RECEIPT, "shop-1", ("SKU-1", 6)),
            event(EventType.RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", order_id="9"),
        )
        wait_until(lambda: fake.products["101"]["quantityReserved"] == 2.0)
        wait_until(lambda: fake_wms.by_external("shop-1:r-1:default") is not None)
        order = fake_wms.by_external("shop-1:r-1:default")
        assert runner.server is not None
        body = json.dumps({"id": order["id"], "status": "PICKING_ERROR"}).encode()  # type: ignore[index]
        request = urllib.request.Request(f"{runner.server.url}/wms/status/w1", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        wait_until(lambda: fake.products["101"]["quantityReserved"] == 0.0)
        with urllib.request.urlopen(f"{runner.server.url}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert 'ledger_adapter_alerts_total{adapter="wms"} 1.0' in metrics
        assert 'ledger_adapter_position{adapter="bitrix"}' in metrics
    finally:
        runner.stop()


def test_adapters_run_once_pushes_everything_and_exits(
    monkeypatch, database_url, record, bitrix, mapped, capsys
):
    fake, server = bitrix
    fake.add_product("101")
    mapped(("bitrix", "store", "shop-1", "1"), ("bitrix", "sku", "SKU-1", "101"))
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", 3)))
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_BITRIX_WEBHOOK_URL", server.url + fake.webhook_path)
    monkeypatch.setenv("LEDGER_BITRIX_REQUESTS_PER_S", "100")

    assert main(["adapters", "run", "--once", "--full"]) == 0

    assert fake.products["101"]["quantity"] == 3.0
    assert "bitrix: pushed" in capsys.readouterr().out


def test_adapters_run_makes_a_new_ledger_where_there_is_none_and_says_so(
    tmp_path, monkeypatch, bitrix, capsys
):
    """`adapters run` records as a ledger's writer does (webhooks into shipments): unlike the
    commands that only read or correct a ledger, it may be what starts one."""
    fake, server = bitrix
    new = tmp_path / "new.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{new}")
    monkeypatch.setenv("LEDGER_BITRIX_WEBHOOK_URL", server.url + fake.webhook_path)

    assert main(["adapters", "run", "--once"]) == 0

    assert new.exists() and f"no ledger at {new}: making a new one" in capsys.readouterr().err


def test_a_database_wait_not_below_the_deadline_is_refused_in_one_line_naming_it(
    monkeypatch, database_url, ledger, bitrix, capsys
):
    """It was a ValueError's traceback: the setting is the user's to put right."""
    fake, server = bitrix
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_BITRIX_WEBHOOK_URL", server.url + fake.webhook_path)
    monkeypatch.setenv("LEDGER_ADAPTERS_WEBHOOK_DEADLINE_MS", "1500")
    monkeypatch.setenv("LEDGER_ADAPTERS_WEBHOOK_DATABASE_WAIT_MS", "2000")

    code = main(["adapters", "run", "--once"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and "LEDGER_ADAPTERS_WEBHOOK_DATABASE_WAIT_MS" in err, err
    assert "\n" not in err and "Traceback" not in err, err
