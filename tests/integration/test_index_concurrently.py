"""A migration's index on a large table is built while writes go on (migrations.IndexConcurrently):
on PostgreSQL it does not wait for the log's writers, a build that an open transaction holds up
ends the start in one line within LEDGER_MIGRATION_WAIT_S, and a build cut short is made again."""

from __future__ import annotations

import psycopg
import pytest
from support.postgres import EmbeddedPostgres
from support.server import run_ledger_command

from ledger.storage import migrator
from ledger.storage.migrations import MIGRATIONS, IndexConcurrently
from ledger.storage.opening import open_recorder

EVENTS_BY_TIME = "ledger_history_events_by_time"
VERSION = 13
WAIT_S = 3  # what a build may wait for a lock: a build that waits for the held batch fails with it
EXIT_USAGE = 2


@pytest.fixture
def pg_url(postgres: EmbeddedPostgres) -> str:
    url = postgres.create_database()
    open_recorder(url, 2, 30).close()  # every migration applied
    return url


def _index_step() -> IndexConcurrently:
    [migration] = [m for m in MIGRATIONS if m.version == VERSION]
    [step] = migration.postgres
    assert isinstance(step, IndexConcurrently) and step.name == EVENTS_BY_TIME
    return step


def _valid(conn: psycopg.Connection[tuple[object, ...]]) -> bool | None:
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
        (EVENTS_BY_TIME,),
    ).fetchone()
    return None if row is None else bool(row[0])


def test_the_index_is_built_while_a_batch_holds_the_log(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn, psycopg.connect(pg_url) as batch:
        conn.execute(f"DROP INDEX {EVENTS_BY_TIME}")
        # What a writer holds while its batch is in flight: the log's table, for its inserts. A
        # migration's own transaction takes EXCLUSIVE there, and would wait for the batch.
        batch.execute("LOCK TABLE ledger_events IN ROW EXCLUSIVE MODE")
        migrator._pg_index_concurrently(conn, _index_step(), WAIT_S)
        assert _valid(conn) is True
        batch.rollback()


def test_an_index_a_cut_build_left_invalid_is_built_again(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # What a build cut short leaves (CREATE INDEX CONCURRENTLY that failed, or was killed).
        invalidate = "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass"
        conn.execute(invalidate, (EVENTS_BY_TIME,))
        conn.execute("DELETE FROM ledger_schema_versions WHERE version = %s", (VERSION,))
        assert _valid(conn) is False
        open_recorder(pg_url, 2, 30).close()  # applies what is missing: migration 13
        assert _valid(conn) is True
        recorded = "SELECT 1 FROM ledger_schema_versions WHERE version = %s"
        assert conn.execute(recorded, (VERSION,)).fetchone() is not None


def test_a_build_an_open_transaction_holds_up_ends_in_one_line_and_the_next_start_finishes_it(
    pg_url: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn, psycopg.connect(pg_url) as report:
        conn.execute(f"DROP INDEX {EVENTS_BY_TIME}")
        conn.execute("DELETE FROM ledger_schema_versions WHERE version = %s", (VERSION,))
        # A long report: its snapshot is older than the build, which must wait it out.
        report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT count(*) FROM ledger_levels").fetchone()
        done = run_ledger_command(pg_url, "migrate", env={"LEDGER_MIGRATION_WAIT_S": str(WAIT_S)})
        assert done.returncode == EXIT_USAGE, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.splitlines()
        assert f"index {EVENTS_BY_TIME} was not built within {WAIT_S} s (LEDGER_MIGRATION_WAIT_S)" in line
        assert _valid(conn) is False  # what the cut build left
        report.rollback()
    done = run_ledger_command(pg_url, "migrate", env={"LEDGER_MIGRATION_WAIT_S": str(WAIT_S)})
    assert done.returncode == 0, done.stderr
    assert f"applied {VERSION} (expand)" in done.stdout, done.stdout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert _valid(conn) is True
