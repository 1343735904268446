"""A PostgreSQL database in an encoding other than UTF8 is refused at the start, in one line: ids
and names are Unicode, and in SQL_ASCII psycopg hands back bytes where text was meant (the start
failed with a traceback)."""

from __future__ import annotations

from support.ids import unique
from support.postgres import EmbeddedPostgres
from support.server import run_ledger_command


def test_a_database_not_in_utf8_is_refused_in_one_line(postgres: EmbeddedPostgres) -> None:
    name = unique("ascii").replace("-", "_").lower()
    postgres.server.psql(
        f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;"
    )
    done = run_ledger_command(f"postgresql://postgres@/{name}?host={postgres.socket_dir}", "migrate")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("ledger migrate: ") and "the encoding SQL_ASCII" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
