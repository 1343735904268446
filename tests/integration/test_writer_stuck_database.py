"""A PostgreSQL that stops answering the writer's statement must not freeze the writer: past
LEDGER_DB_WRITER_ANSWER_WAIT_S the statement is cancelled and its session dropped, the callers are
answered, and the writer goes on with the next batch once the server answers again. `ledger serve`
as production runs it: PostgreSQL, the writer in its own process."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from support import api
from support import events as ev
from support.ids import unique
from support.postgres import EmbeddedPostgres

ANSWER_WAIT_S = 3
REQUEST_TIMEOUT_S = 8
# Long enough for the writer to give up a batch the ordinary way too (its retries, each bounded).
RECOVERY_DEADLINE_S = 90.0
# A statement that sleeps is the server not answering, whatever the reason (an I/O stall, a COMMIT
# waiting for a standby): neither a lock wait (LEDGER_DB_LOCK_TIMEOUT_S) nor a lost connection.
STALL = """
CREATE FUNCTION stall_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
CREATE TRIGGER stall BEFORE INSERT ON ledger_history FOR EACH ROW EXECUTE FUNCTION stall_history();
"""


def _execute(database_url: str, sql: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.encode())


def _stalled_statements(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'active' AND query LIKE %s",
            ("%ledger_write_batch%",),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_statement_the_server_never_answers_is_given_up_and_the_writer_goes_on(
    postgres: EmbeddedPostgres, serve: Any
) -> None:
    database_url = postgres.create_database("writer_stuck")
    server = serve(
        database_url,
        {
            "LEDGER_DB_LOCK_TIMEOUT_S": "1",
            "LEDGER_DB_WRITER_ANSWER_WAIT_S": str(ANSWER_WAIT_S),
            "LEDGER_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        },
    )
    store = unique("store")
    stalled_receipt = ev.receipt(store, ("SKU-1", 1), event_id="stalled")
    later_receipt = ev.receipt(store, ("SKU-1", 2), event_id="later")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("SKU-1", 5)))
        _execute(database_url, STALL)
        stalled = client.post("/v1/events", json=stalled_receipt, timeout=60)
        assert stalled.status_code == 503, stalled.text
        _execute(database_url, "DROP TRIGGER stall ON ledger_history")
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while (answer := client.post("/v1/events", json=later_receipt, timeout=60)).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the writer is still waiting for the statement it sent"
            time.sleep(0.5)
        assert answer.json()["results"][0]["outcome"] in ("accepted", "duplicate")
        assert _stalled_statements(database_url) == 0, "the stalled statement was left running"
        # A 503 leaves the outcome unknown: sent again, the stalled receipt is recorded once.
        again = api.post_events(client, stalled_receipt)[0]
        assert again["outcome"] in ("accepted", "duplicate"), again
        level = api.level(client, store, "SKU-1")
    assert level["on_hand"] == 5 + 1 + 2
    assert "did not answer" in server.log_path.read_text()


def test_a_read_the_server_holds_is_given_up_too(postgres: EmbeddedPostgres, serve: Any) -> None:
    """Before it decides a batch with a key memory lacks, the writer reads: a lock held on the log
    (by hand, a migration) held that read, and the writer with it, for as long as the lock."""
    database_url = postgres.create_database("writer_read_held")
    server = serve(
        database_url,
        {
            "LEDGER_DB_LOCK_TIMEOUT_S": "1",
            "LEDGER_DB_WRITER_ANSWER_WAIT_S": str(ANSWER_WAIT_S),
            "LEDGER_REQUEST_TIMEOUT_S": "60",  # longer than the writer's own waits: its answer comes first
        },
    )
    store = unique("store")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("SKU-1", 5)))
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE")
            held = client.post("/v1/events", json=ev.receipt(store, ("SKU-NEW", 1)), timeout=90)
            holder.rollback()
        problem = api.assert_problem(held, 503)
        assert problem["type"] == "unavailable", problem  # the writer's answer, not the request's timeout
        # For a moment after it the writer answers at once, without asking (Writer.unanswered_lately).
        later = ev.receipt(store, ("SKU-NEW", 1), event_id="after-hold")
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while (answer := client.post("/v1/events", json=later, timeout=60)).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the writer does not record again once the lock is let go"
            time.sleep(0.5)
        assert answer.json()["results"][0]["outcome"] == "accepted", answer.text
    assert "did not answer" in server.log_path.read_text()
