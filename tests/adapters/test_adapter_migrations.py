"""The adapters' tables come from migrations of their own (adapters/migrations.py), recorded in
`adapter_schema_versions` on both databases: once each, and on a database whose tables an earlier
release made without recording anything, only recorded."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.db import ensure_schema, is_sqlite, transaction
from adapters.migrations import MIGRATIONS
from adapters.schema import DDL


@pytest.fixture
def recorder(ledger_only_recorder: Any) -> Any:
    """On both databases, without the adapters' tables (conftest.py)."""
    return ledger_only_recorder


def _recorded(recorder: Any) -> list[tuple[int, str]]:
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT version, kind FROM adapter_schema_versions ORDER BY version")
    return [(int(row["version"]), row["kind"]) for row in rows]


def _adapter_tables(recorder: Any) -> set[str]:
    catalogue = (
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE %s"
        if is_sqlite(recorder)
        else "SELECT tablename AS name FROM pg_tables "
        "WHERE schemaname = current_schema() AND tablename LIKE %s"
    )
    with transaction(recorder) as tx:
        return {row["name"] for row in tx.fetchall(catalogue, ("adapter%",))}


def test_every_migration_is_applied_and_recorded_once(recorder: Any) -> None:
    ensure_schema(recorder)
    expected = [(migration.version, migration.kind) for migration in MIGRATIONS]
    assert _recorded(recorder) == expected
    assert {"adapter_positions", "adapter_outbox", "adapter_schema_versions"} <= _adapter_tables(recorder)
    ensure_schema(recorder)  # nothing left to apply
    assert _recorded(recorder) == expected


def test_tables_an_earlier_release_made_are_kept_and_the_migration_only_recorded(recorder: Any) -> None:
    with transaction(recorder) as tx:
        for ddl in DDL:  # as releases before adapter migrations made them, at every start
            tx.execute(ddl)
        tx.execute(
            "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, parked_total, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
            ("bitrix", 42, 1, 0, 0, "now"),
        )
    ensure_schema(recorder)
    # 1 found made, so only recorded; the later ones applied.
    assert _recorded(recorder) == [(migration.version, migration.kind) for migration in MIGRATIONS]
    with transaction(recorder) as tx:
        kept = tx.fetchone("SELECT position FROM adapter_positions WHERE adapter = %s", ("bitrix",))
    assert kept is not None and int(kept["position"]) == 42


@pytest.mark.parametrize("kind", ("sqlite", "postgres"))
def test_the_reading_commands_make_no_table_in_a_ledger_no_adapter_has_run_on(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, kind: str
) -> None:
    """`ledger adapters status` and `ledger mappings list` opened the database as `adapters run`
    does, and made the adapters' tables: a command that only reads changes nothing, and finds
    nothing to show."""
    from ledger.cli import main
    from ledger.storage.opening import open_recorder

    if kind == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        database_url = str(request.getfixturevalue("postgres").create_database())
    ledger_only = open_recorder(database_url, 2, 10)
    try:
        monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
        assert main(["adapters", "status"]) == 0
        assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["adapter", "position"]
        assert main(["adapters", "status", "--metrics"]) == 0
        assert "ledger_adapter_position" in capsys.readouterr().out
        assert main(["mappings", "list"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "system,kind,local_id,external_id,external_type,factor"
        ]
        assert _adapter_tables(ledger_only) == set()
    finally:
        ledger_only.close()
