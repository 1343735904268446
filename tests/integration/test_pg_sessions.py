"""PostgreSQL: the ledger's sessions have autovacuum cancelled soon when it holds what they wait for.

Autovacuum takes a lock that a rebuild's swap (and a migration) waits for, and PostgreSQL cancels
it only when the waiting session runs its deadlock check, `deadlock_timeout` after it began to
wait (1 s by default): so a rebuild's swap failed its attempts behind autovacuum of the
projections (ledger/storage/pg_sessions.py). The writers' lock does not wait for it
(test_writers_lock.py). An autovacuum cannot be made to run on cue in a test; what is
checked is that every session of the recorder that `ledger serve`'s writer and `ledger rebuild`
open (bootstrap.open_database) waits only `LEDGER_DB_DEADLOCK_TIMEOUT_MS` before that check, and
that a role that may not set it still works, and is told. SQLite has no autovacuum to wait for.
"""

from __future__ import annotations

import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from support.ids import unique
from support.server import run_ledger_command

from ledger.bootstrap import open_database
from ledger.config import Settings
from ledger.storage.pg_sessions import DEADLOCK_TIMEOUT_MS_DEFAULT

POOL_SIZE = 3


def _deadlock_timeouts(settings: Settings) -> list[str]:
    """`deadlock_timeout` as each of the pool's connections sees it, all held at once (so that each
    is a connection of its own, configured as the pool made it)."""
    recorder = open_database(settings.model_copy(update={"db_pool_size": POOL_SIZE}))
    try:
        with contextlib.ExitStack() as held:
            connections = [held.enter_context(recorder.datastore.get_connection()) for _ in range(POOL_SIZE)]
            shown = [conn.execute("SHOW deadlock_timeout").fetchone() for conn in connections]
            return [row["deadlock_timeout"] for row in shown]
    finally:
        recorder.close()


def _server_default(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW deadlock_timeout").fetchone()
        assert row is not None
        return str(row[0])


def test_every_session_of_the_ledger_has_autovacuum_cancelled_within_the_setting(postgres):
    database_url = postgres.create_database()
    assert _server_default(database_url) == "1s"  # what the ledger's sessions must not keep
    assert DEADLOCK_TIMEOUT_MS_DEFAULT == 100
    assert _deadlock_timeouts(Settings(database_url=database_url)) == ["100ms"] * POOL_SIZE
    chosen = Settings(database_url=database_url, db_deadlock_timeout_ms=250)
    assert _deadlock_timeouts(chosen) == ["250ms"] * POOL_SIZE
    kept = Settings(database_url=database_url, db_deadlock_timeout_ms=0)
    assert _deadlock_timeouts(kept) == ["1s"] * POOL_SIZE


@pytest.fixture
def unprivileged_url(postgres):
    """A database owned by a role that is no superuser and was granted nothing on parameters."""
    admin_url = postgres.create_database()
    role, name = unique("plain").replace("-", "_"), unique("plaindb").replace("-", "_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {name} OWNER {role}")
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}", path=f"/{name}"))


def test_a_role_that_may_not_set_it_keeps_the_servers_value_and_is_told(unprivileged_url, caplog):
    with caplog.at_level(logging.WARNING, logger="ledger.storage"):
        assert _deadlock_timeouts(Settings(database_url=unprivileged_url)) == ["1s"] * POOL_SIZE
    told = [record.getMessage() for record in caplog.records if "deadlock_timeout" in record.getMessage()]
    assert len(told) == 1, told  # once, not once a connection
    assert "GRANT SET ON PARAMETER deadlock_timeout" in told[0]


def test_a_command_that_opens_the_database_twice_tells_a_role_that_may_not_set_it_once(postgres):
    """A role granted only CONNECT: `ledger adapters status` (on a database with no ledger) and
    `ledger tokens list` (on a ledger) open the database twice, to look at it and then to read or
    refuse it, and each opening told the same thing again."""
    admin_url = postgres.create_database()
    ledger_url = postgres.create_database()
    assert run_ledger_command(ledger_url, "migrate").returncode == 0
    role = unique("connect").replace("-", "_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")  # CONNECT is PUBLIC's, and nothing else
    for database_url, command in ((admin_url, ("adapters", "status")), (ledger_url, ("tokens", "list"))):
        parts = urlsplit(database_url)
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}"))
        done = run_ledger_command(as_role, *command, deadline_s=60)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("cannot set deadlock_timeout") == 1, (command, done.stderr)
