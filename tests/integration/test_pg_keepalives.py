"""PostgreSQL: a writer whose machine is lost, or cut off, does not hold the writers' lock for long.
Every pooled session is made with TCP keepalives on both ends and a user timeout, so that the
server finds a lost peer within seconds, not the system's two hours, and ends its session
(ledger/storage/pg_sessions.py). A lost machine cannot be staged here: what is checked is that
every session is made so. SQLite has no sessions across machines: its writers are one process's."""

from __future__ import annotations

from typing import Any

from ledger.bootstrap import open_database
from ledger.config import Settings


def test_every_pooled_session_is_made_with_keepalives(postgres: Any) -> None:
    recorder = open_database(Settings(database_url=postgres.create_database()))
    try:
        with recorder.datastore.get_connection() as conn:
            made_with = conn.info.get_parameters()
    finally:
        recorder.close()
    assert made_with["keepalives"] == "1"
    assert made_with["keepalives_idle"] == "5"
    assert "tcp_keepalives_idle=5" in made_with["options"]
    assert "tcp_user_timeout=15000" in made_with["options"]
