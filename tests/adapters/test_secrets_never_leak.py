"""No secret the adapters were given leaves them (issue #11, item 9): a run with every secret set and
things going wrong (Bitrix unreachable, a forged webhook, a bad signature), then a grep of all they
said and kept: the log, `ledger adapters status` (and `--metrics`), `ledger adapters run --once`,
/metrics, the answers to the webhooks and every text column of the adapters' tables."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import event

from adapters.db import transaction
from adapters.masking import mask, remember_settings, url_secrets
from adapters.runner import Runner, build_adapters
from adapters.signatures import SignatureScheme
from adapters.sink import LedgerSink
from ledger.cli import main
from ledger.config import Settings
from ledger.domain.model import EventType

DEADLINE_S = 15.0
ADAPTER_TABLES = (
    "adapter_positions",
    "adapter_parked",
    "adapter_outbox",
    "adapter_inbox",
    "adapter_journal",
    "adapter_wms_orders",
    "adapter_mappings",
    "adapter_status_map",
    "adapter_reconcile_runs",
)


def wait_until(check: Any, what: str) -> None:
    until = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < until, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.02)


def closed_port() -> int:
    """A port nothing listens on (bound, then released): Bitrix is unreachable there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def table_text(recorder: Any) -> str:
    with transaction(recorder) as tx:
        rows = [dict(row) for table in ADAPTER_TABLES for row in tx.fetchall(f"SELECT * FROM {table}")]
    return json.dumps(rows, default=str)


def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # quiet by default; here its URLs are checked too


def test_no_secret_appears_in_the_logs_status_metrics_answers_or_tables(
    monkeypatch, database_url, ledger, recorder, record, moysklad, wms, mapped, caplog, capsys
):
    secrets = {
        "bitrix token": secret("bxtoken"),
        "moysklad token": secret("mstoken"),
        "wms api key": secret("wmskey"),
        "moysklad webhook secret": secret("mshook"),
        "wms webhook secret": secret("wmshook"),
        "wms signing key": secret("wmssign"),
    }
    fake_moysklad, moysklad_server = moysklad
    fake_moysklad.token = secrets["moysklad token"]
    fake_wms, wms_server = wms
    fake_wms.api_key = secrets["wms api key"]
    bitrix_url = f"http://127.0.0.1:{closed_port()}/rest/1/{secrets['bitrix token']}/"
    environment = {
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_BITRIX_WEBHOOK_URL": bitrix_url,
        "LEDGER_MOYSKLAD_BASE_URL": moysklad_server.url + "/api/remap/1.2",
        "LEDGER_MOYSKLAD_TOKEN": secrets["moysklad token"],
        "LEDGER_MOYSKLAD_ORGANIZATION_ID": "org-1",
        "LEDGER_MOYSKLAD_AGENT_ID": "agent-1",
        "LEDGER_MOYSKLAD_WEBHOOK_SECRET": secrets["moysklad webhook secret"],
        "LEDGER_WMS_BASE_URL": wms_server.url + "/",
        "LEDGER_WMS_API_KEY": secrets["wms api key"],
        "LEDGER_WMS_WEBHOOK_SECRET": secrets["wms webhook secret"],
        "LEDGER_WMS_WEBHOOK_SIGNING_KEY": secrets["wms signing key"],
        "LEDGER_ADAPTERS_HTTP_PORT": "0",
        "LEDGER_ADAPTERS_POLL_INTERVAL_MS": "20",
        "LEDGER_ADAPTERS_BACKOFF_INITIAL_MS": "5",
        "LEDGER_ADAPTERS_BACKOFF_MAX_MS": "20",
        "LEDGER_ADAPTERS_REQUEST_RETRIES_MAX": "2",
        "LEDGER_ADAPTERS_RETRIES_MAX": "2",
        "LEDGER_ADAPTERS_INBOX_SETTLE_MS": "0",
        "LEDGER_ADAPTERS_MAPPINGS_REFRESH_S": "0",
        "LEDGER_BITRIX_TIMEOUT_S": "2",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    mapped(
        ("bitrix", "store", "shop-1", "1"),
        ("bitrix", "sku", "SKU-1", "101"),
        ("wms", "store", "shop-1", "main"),
    )
    _log_everything(caplog)
    settings = Settings()
    runner = Runner(build_adapters(settings, LedgerSink(ledger), recorder), settings).start()
    answers: list[httpx.Response] = []
    try:
        record(
            event(EventType.RECEIPT, "shop-1", ("SKU-1", 6)),
            event(EventType.RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="r-1", order_id="9"),
        )
        assert runner.server is not None
        base = runner.server.url
        href = "http://127.0.0.1:9/api/remap/1.2/entity/demand/d-1"  # a forged href: not MoySklad's
        forged = {"events": [{"meta": {"type": "demand", "href": href}, "action": "CREATE"}]}
        webhook = f"{base}/moysklad/webhook/{secrets['moysklad webhook secret']}"
        for url in (f"{webhook}?requestId=f-1", f"{base}/moysklad/webhook/x"):
            answers.append(httpx.post(url, content=json.dumps(forged), timeout=5))
        body = json.dumps({"id": "PO-404", "status": "PICKING"}).encode()
        wrong = {"X-Signature": SignatureScheme(b"not-the-key").sign(body)}
        answers.append(httpx.post(f"{base}/wms/status", content=body, headers=wrong, timeout=5))
        answers.append(httpx.get(f"{base}/metrics", timeout=5))

        def failed(adapter: str) -> bool:
            with transaction(recorder) as tx:
                row = tx.fetchone("SELECT last_error FROM adapter_positions WHERE adapter = %s", (adapter,))
            return row is not None and row["last_error"] is not None

        def given_up() -> bool:
            with transaction(recorder) as tx:
                return (
                    tx.fetchone("SELECT 1 AS x FROM adapter_inbox WHERE processed_at IS NOT NULL") is not None
                )

        wait_until(lambda: failed("bitrix"), "Bitrix found unreachable")
        wait_until(given_up, "the forged delivery given up")
        wait_until(lambda: fake_wms.by_external("shop-1:r-1:default") is not None, "a picking order")
    finally:
        runner.stop()
    assert [a.status_code for a in answers] == [200, 404, 401, 200]
    capsys.readouterr()
    assert main(["adapters", "status"]) == 0
    assert main(["adapters", "status", "--metrics"]) == 0
    for name in ("LEDGER_MOYSKLAD_TOKEN", "LEDGER_WMS_API_KEY"):  # no second in-process ledger: Bitrix only
        monkeypatch.delenv(name)
    assert main(["adapters", "run", "--once"]) == 1  # Bitrix is still unreachable, and says so, masked
    said = capsys.readouterr()

    # Every record, httpx's too: it logs each URL it is asked for, the test's own and the adapters'
    # (a Bitrix webhook URL holds its token), and adapters/http.py masks its records.
    log = "\n".join(caplog.handler.format(r) for r in caplog.records)
    outputs = {
        "the log": log,
        "the commands' output": said.out + said.err,
        "the answers": "".join(a.text + json.dumps(dict(a.headers)) for a in answers),
        "the tables": table_text(recorder),
    }
    for where, text in outputs.items():
        for name, value in secrets.items():
            assert value not in text, f"the {name} is in {where}"
    # And what was masked is still there to read: the URL, with its token masked.
    assert "/rest/1/***/" in log
    assert "/rest/1/***/" in outputs["the tables"]
    assert "bitrix: pushed 0" in said.out and "/rest/1/***/" in said.out
    assert "refused to send a request to http://127.0.0.1:9/" in outputs["the tables"]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("POST https://portal.example/rest/1/abc123tok/batch: x", "https://portal.example/rest/1/***/batch"),
        ("postgresql://ledger:pa55word@db:5432/ledger", "postgresql://***@db:5432/ledger"),
        ("POST /moysklad/webhook/hook-secret?requestId=1", "/moysklad/webhook/***?requestId=1"),
        ("POST /wms/status/hook-secret", "/wms/status/***"),
        ("GET https://wms.example/api?token=t0k&x=1", "https://wms.example/api?token=***&x=1"),
    ],
)
def test_secret_parts_of_urls_are_masked_by_their_shape(text: str, masked: str) -> None:
    assert masked in mask(text)


def test_the_database_password_is_masked_by_value_and_its_user_name_is_not() -> None:
    settings = Settings(database_url="postgresql://postgres:db-pa55word-7@db.internal/ledger")
    remember_settings(settings)
    said = mask("connected as postgres to postgresql://db.internal/ledger with db-pa55word-7")
    assert said == "connected as postgres to postgresql://db.internal/ledger with ***"


def test_the_secret_parts_of_a_configured_url_are_found() -> None:
    assert url_secrets("https://portal.example/rest/7/t0ken-value/") == ["t0ken-value"]
    assert url_secrets("postgresql://ledger:pa55word@db/ledger") == ["ledger", "pa55word"]
