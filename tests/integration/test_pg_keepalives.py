"""PostgreSQL: a writer whose machine is lost, or cut off, does not hold the writers' lock for long.
Every pooled session is made with TCP keepalives on both ends and a user timeout, so that the
server finds a lost peer within seconds, not the system's two hours, and ends its session
(ledger/storage/pg_sessions.py). A lost machine cannot be staged here: what is checked is that
every session is made so. SQLite has no sessions across machines: its writers are one process's."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_the_urls_libpq_options_reach_every_session_beside_the_keepalives(postgres: Any) -> None:
    """Only `?host=` was read: `?sslmode=verify-full&sslrootcert=...` was dropped without a word, and
    libpq's default (`prefer`) could talk to a server without TLS in plain text."""
    url = postgres.create_database()
    # (libpq does not use TLS over this Unix socket: sslmode reaching it is what can be checked here)
    options = "&sslmode=require&application_name=till-42&options=-c%20statement_timeout%3D9000"
    recorder = open_database(Settings(database_url=url + options))
    try:
        with recorder.datastore.get_connection() as conn:
            made_with = conn.info.get_parameters()
            timeout = conn.execute("SHOW statement_timeout").fetchone()
    finally:
        recorder.close()
    assert made_with["application_name"] == "till-42" and made_with["sslmode"] == "require"
    assert list(timeout.values() if isinstance(timeout, dict) else timeout) == ["9s"]
    assert "tcp_keepalives_idle=5" in made_with["options"]  # added to, not replaced


def test_an_option_libpq_does_not_know_is_refused_naming_it(postgres: Any) -> None:
    with pytest.raises(ValueError, match='invalid URI query parameter: "sslmod"'):
        open_database(Settings(database_url=postgres.create_database() + "&sslmod=require"))


def test_the_urls_server_settings_reach_the_writers_leadership_session(postgres: Any) -> None:
    """The leadership session (writer/leadership.py) passed the keepalives' `options` over the URL's:
    a `?options=-c search_path=...` set for the pool was dropped there, and its table looked up
    elsewhere."""
    from ledger.writer.leadership import Leadership

    url = postgres.create_database() + "&options=-c%20statement_timeout%3D9000"
    leadership = Leadership(url)
    try:
        session = leadership._session()
        made_with = session.info.get_parameters()
        timeout = session.execute("SHOW statement_timeout").fetchone()
    finally:
        leadership.close()
    assert list(timeout.values() if isinstance(timeout, dict) else timeout) == ["9s"]
    assert "tcp_keepalives_idle=5" in made_with["options"]


def test_the_urls_options_are_read_as_libpq_reads_them_a_plus_kept(postgres: Any) -> None:
    """libpq decodes %XX only: a `+` in a value (a certificate's path, a password) is a `+`. The
    query was read as a form (`+` as a space), so the pool's sessions got another value than the
    sessions libpq makes from the URL itself (verify's, the leader's)."""
    url = postgres.create_database() + "&application_name=till+42"
    recorder = open_database(Settings(database_url=url))
    try:
        with recorder.datastore.get_connection() as conn:
            made_with = conn.info.get_parameters()
    finally:
        recorder.close()
    assert made_with["application_name"] == "till+42"
