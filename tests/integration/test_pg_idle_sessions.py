"""PostgreSQL: a session whose client is gone or frozen does not hold the writers' lock for long
(ledger/storage/pg_sessions.py). Every pooled session is made with TCP keepalives (a lost machine
is found out in seconds, not the system's two hours), and the server ends a transaction its
client left idle for IDLE_IN_TRANSACTION_S; every other writer then takes the lock. SQLite has no
sessions across machines: its writers are one process's."""

from __future__ import annotations

import time

import psycopg
import pytest
from eventsourcing import persistence

from ledger.bootstrap import open_database
from ledger.config import Settings
from ledger.storage import pg_sessions

IDLE_S = 0.5


@pytest.fixture
def database_url(postgres) -> str:
    return postgres.create_database()


def test_a_transaction_left_idle_holding_the_writers_lock_is_ended_and_the_lock_freed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_sessions, "IDLE_IN_TRANSACTION_S", IDLE_S)
    frozen, other = (
        open_database(Settings(database_url=database_url)),
        open_database(Settings(database_url=database_url, db_lock_timeout_s=5)),
    )
    try:
        ended = (psycopg.errors.IdleInTransactionSessionTimeout, persistence.InternalError)
        with (
            pytest.raises(ended, match="idle-in-transaction"),
            frozen.datastore.transaction(commit=True) as cursor,
        ):
            for statement in frozen.lock_table_statements:
                cursor.execute(statement)
            time.sleep(IDLE_S * 4)  # a client that froze between two statements
            cursor.execute("SELECT 1")
        started = time.monotonic()
        with other.datastore.transaction(commit=True) as cursor:
            for statement in other.lock_table_statements:
                cursor.execute(statement)
        assert time.monotonic() - started < 1, "the lock was still held"
    finally:
        frozen.close()
        other.close()


def test_every_pooled_session_is_made_with_keepalives(database_url: str) -> None:
    recorder = open_database(Settings(database_url=database_url))
    try:
        with recorder.datastore.get_connection() as conn:
            made_with = conn.info.get_parameters()
            row = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
    finally:
        recorder.close()
    assert made_with["keepalives"] == "1"
    assert "tcp_user_timeout=15000" in made_with["options"]
    assert row["idle_in_transaction_session_timeout"] == f"{int(pg_sessions.IDLE_IN_TRANSACTION_S)}s"
