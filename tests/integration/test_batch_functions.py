"""The one-statement batch function of each release and setting (`ledger_write_batch_<digest>`):
`ledger migrate --drop-other-batch-functions` drops the others, and a writer whose own function was
dropped makes it again and records the batch the ordinary way, losing nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg
from support import db
from support import events as ev
from support.postgres import EmbeddedPostgres
from support.server import run_ledger_command

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome
from ledger.storage.opening import open_recorder
from ledger.storage.recorders import PostgresLedgerRecorder
from ledger.writer.thread import ThreadWriterClient

EXIT_USAGE = 2
AN_EARLIER_RELEASES = "ledger_write_batch_00000000deadbeef"


def _functions(database_url: str) -> list[str]:
    rows = db.query(
        database_url,
        "SELECT proname FROM pg_proc WHERE proname LIKE 'ledger\\_write\\_batch%%' "
        "AND pronamespace = current_schema()::regnamespace ORDER BY proname",
    )
    return [row["proname"] for row in rows]


def test_migrate_drops_the_other_batch_functions_and_keeps_this_releases(postgres: EmbeddedPostgres) -> None:
    database_url = postgres.create_database("batch_functions_drop")
    recorder = open_recorder(database_url, 2, 30)
    assert isinstance(recorder, PostgresLedgerRecorder)
    ours = recorder.batch_function
    recorder.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {AN_EARLIER_RELEASES}(p bigint) RETURNS bigint LANGUAGE sql AS 'SELECT p'"
        )
    assert _functions(database_url) == sorted([ours, AN_EARLIER_RELEASES])
    done = run_ledger_command(database_url, "migrate", "--drop-other-batch-functions")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        f"dropped {AN_EARLIER_RELEASES}",
        f"dropped 1 batch function(s); kept this release's {ours}",
    ]
    assert _functions(database_url) == [ours]


def test_the_option_on_sqlite_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_ledger_command(
        f"sqlite:///{tmp_path / 'ledger.db'}", "migrate", "--drop-other-batch-functions"
    )
    assert done.returncode == EXIT_USAGE
    assert "for PostgreSQL" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "ledger.db").exists()


def test_a_writer_whose_function_was_dropped_makes_it_again_and_loses_nothing(
    postgres: EmbeddedPostgres,
) -> None:
    database_url = postgres.create_database("batch_functions_heal")
    ledger = build_ledger(Settings(database_url=database_url, writer_optimistic=True))
    ledger.start()
    try:
        assert isinstance(ledger.writer, ThreadWriterClient)
        writer = ledger.writer.writer
        store = "store-1"
        [received] = ledger.submit_and_wait(
            [ev.stock_event("r1", "stock.receipt", store, [("SKU-1", 5)], source="tests/functions")]
        )
        [function] = _functions(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP FUNCTION {function}")
        won_before, lost_before = writer.optimistic_won, writer.optimistic_lost
        [sold] = ledger.submit_and_wait(
            [ev.stock_event("s1", "stock.sale", store, [("SKU-1", 2)], source="tests/functions")]
        )
        assert (received.outcome, sold.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
        assert (writer.optimistic_won, writer.optimistic_lost) == (won_before, lost_before + 1)
        assert _functions(database_url) == [function], "made again"
        writer._contended_until = 0.0  # bet again at once
        [sold_again] = ledger.submit_and_wait(
            [ev.stock_event("s2", "stock.sale", store, [("SKU-1", 1)], source="tests/functions")]
        )
        assert (sold_again.outcome, writer.optimistic_won) == (Outcome.ACCEPTED, won_before + 1)
        [level] = ledger.levels(store, ["SKU-1"])
        assert level.level.on_hand_units == 2
    finally:
        ledger.stop()
