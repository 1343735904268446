"""The adapters' tables come from migrations of their own (adapters/migrations.py), recorded in
`adapter_schema_versions` on both databases: once each, and on a database whose tables an earlier
release made without recording anything, only recorded."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.db import ensure_schema, is_sqlite, transaction
from adapters.migrations import MIGRATIONS
from adapters.moysklad_order_book import BookedReservation, booked_reservations, mark_deleted, remember_order
from adapters.schema import DDL
from ledger.storage.migrator import SchemaHistory, pg_migrate, sqlite_migrate


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


def test_the_book_of_moysklad_orders_keyed_by_store_keeps_every_reservation_booked_before(
    recorder: Any,
) -> None:
    """Migration 7 keys the book by (order, store, reservation): a database the release before
    made (migrations 1-6) keeps every reservation it booked, and books a second store's part under
    the same order and reservation id, which the old key (order, reservation) kept out."""
    before = SchemaHistory(
        "adapter_schema_versions", tuple(m for m in MIGRATIONS if m.version <= 6), takes_write_lock=False
    )
    if is_sqlite(recorder):
        sqlite_migrate(recorder, before)
    else:
        pg_migrate(recorder, recorder.migration_wait_s, before)
    with transaction(recorder) as tx:  # as the release before booked them
        for order_uuid, deleted_at in (("order-1", None), ("order-2", "2026-12-01T00:00:02.000000Z")):
            tx.execute(
                "INSERT INTO adapter_moysklad_orders (order_uuid, deleted_at, recorded_at) "
                "VALUES (%s, %s, %s)",
                (order_uuid, deleted_at, "2026-12-01T00:00:00.000000Z"),
            )
        for order_uuid, reservation_id, store_id, order_id, at in (
            ("order-1", "res-9", "shop-1", "B-9", "2026-12-01T00:00:00.000000Z"),
            ("order-1", "res-9b", "shop-1", "B-9", "2026-12-01T00:00:01.000000Z"),
            ("order-2", "res-7", "shop-2", "B-7", "2026-12-01T00:00:00.000000Z"),
        ):
            tx.execute(
                "INSERT INTO adapter_moysklad_order_reservations (order_uuid, reservation_id, store_id, "
                "order_id, recorded_at) VALUES (%s, %s, %s, %s, %s)",
                (order_uuid, reservation_id, store_id, order_id, at),
            )

    ensure_schema(recorder)
    assert _recorded(recorder) == [(migration.version, migration.kind) for migration in MIGRATIONS]
    columns = ("order_uuid", "store_id", "reservation_id", "order_id", "recorded_at")
    with transaction(recorder) as tx:
        moved = tx.fetchall(
            f"SELECT {', '.join(columns)} FROM adapter_moysklad_booked_reservations "
            "ORDER BY order_uuid, reservation_id"
        )
    assert [tuple(row[column] for column in columns) for row in moved] == [
        ("order-1", "shop-1", "res-9", "B-9", "2026-12-01T00:00:00.000000Z"),
        ("order-1", "shop-1", "res-9b", "B-9", "2026-12-01T00:00:01.000000Z"),
        ("order-2", "shop-2", "res-7", "B-7", "2026-12-01T00:00:00.000000Z"),
    ]
    assert booked_reservations(recorder, "order-1") == [
        BookedReservation("shop-1", "B-9", "res-9"),
        BookedReservation("shop-1", "B-9", "res-9b"),
    ]
    assert mark_deleted(recorder, "order-2") == [BookedReservation("shop-2", "B-7", "res-7")]

    # The new key: shop-3's part of the order under shop-1's reservation id is booked beside it,
    # and booking either again changes nothing.
    assert remember_order(recorder, "order-1", BookedReservation("shop-3", "B-9", "res-9"))
    assert remember_order(recorder, "order-1", BookedReservation("shop-1", "B-9", "res-9"))
    assert {(r.store_id, r.reservation_id) for r in booked_reservations(recorder, "order-1")} == {
        ("shop-1", "res-9"),
        ("shop-1", "res-9b"),
        ("shop-3", "res-9"),
    }
    assert len(booked_reservations(recorder, "order-1")) == 3
    ensure_schema(recorder)  # nothing left to apply
    assert len(booked_reservations(recorder, "order-1")) == 3


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
