"""The adapters' state as the ledger's console shows it (the `stock_ledger.console` entry point),
on both databases: the same figures as `ledger adapters status`, masked, and nothing made when no
adapter ever ran."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.console import adapter_states
from adapters.db import ensure_schema, is_sqlite, transaction
from adapters.status import read_status
from ledger.api.console.adapter_states import CONSOLE_PLUGINS, AdapterState

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recorder(ledger_only_recorder: Any) -> Any:
    """On both databases, without the adapters' tables (conftest.py)."""
    return ledger_only_recorder


def _tables(recorder: Any) -> int:
    catalogue = "sqlite_master WHERE name" if is_sqlite(recorder) else "pg_tables WHERE tablename"
    with transaction(recorder) as tx:
        found = tx.fetchone(f"SELECT COUNT(*) AS n FROM {catalogue} LIKE %s", ("adapter_%",))
    assert found is not None
    return int(found["n"])


def test_a_ledger_where_no_adapter_ran_shows_none_and_gains_no_table(recorder: Any) -> None:
    assert adapter_states(recorder) == []
    assert _tables(recorder) == 0


def test_each_target_shows_its_position_lag_parked_items_and_masked_last_error(recorder: Any) -> None:
    ensure_schema(recorder)
    secret_url = "https://shop.bitrix24.ru/rest/1/s3cr3tw3bh00k/crm.product.list"
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, parked_total, "
            "last_error, last_push_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            ("bitrix", 0, 12, 3, 2, f"503 from {secret_url}", "2026-12-01T10:00:00.000000Z", "now"),
        )
        for key in ("A", "B"):
            tx.execute(
                "INSERT INTO adapter_parked (adapter, item_key, position, reason, attempts, payload, "
                "parked_at, retry_requested) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                ("bitrix", key, 0, "refused", 5, "{}", "now", 0),
            )
    [state] = adapter_states(recorder)
    [status] = read_status(recorder)
    assert state == AdapterState(
        adapter="bitrix",
        position=0,
        lag_events=status.lag_events,
        parked_now=2,
        outbox_pending=0,
        failures_total=3,
        last_error=status.last_error,
        last_push_at="2026-12-01T10:00:00.000000Z",
    )
    assert state.last_error is not None and "s3cr3tw3bh00k" not in state.last_error


def test_the_adapters_package_declares_its_state_reader_for_the_console() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[CONSOLE_PLUGINS] == {"adapters": "adapters.console:adapter_states"}
