"""Schema migrations (ledger/storage/migrations.py): recorded once each, a database that needs a
newer release refused in one line, one that a newer release only expanded accepted, `ledger migrate
--check` listing without applying, and concurrent starts that do not race."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from support import db
from support.ids import unique
from support.postgres import EmbeddedPostgres
from support.server import REPO_ROOT, free_port, ledger_env, run_ledger_command

from ledger.storage.migrations import LATEST_VERSION, MIGRATIONS
from ledger.storage.migrator import SchemaTooNew
from ledger.storage.opening import open_recorder

EXIT_USAGE = 2
CONCURRENT_STARTS = 4


def _versions(database_url: str) -> list[tuple[int, str]]:
    rows = db.query(database_url, "SELECT version, kind FROM ledger_schema_versions ORDER BY version")
    return [(row["version"], row["kind"]) for row in rows]


def _record(database_url: str, version: int, kind: str, oldest_compatible: int) -> None:
    statement = (
        "INSERT INTO ledger_schema_versions (version, name, kind, oldest_compatible, applied_at, seconds) "
        "VALUES (%s, 'from a newer release', %s, %s, '2027-01-01T00:00:00.000000Z', 0)"
    )
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db.sqlite_path(database_url)) as conn:
            conn.execute(statement.replace("%s", "?"), (version, kind, oldest_compatible))
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statement, (version, kind, oldest_compatible))  # type: ignore[arg-type]


def _open(database_url: str) -> None:
    open_recorder(database_url, 2, 30).close()


def test_a_read_only_recorder_reads_in_a_read_only_session_on_postgresql(postgres: EmbeddedPostgres) -> None:
    """The commands that only read (`ledger verify`, `migrate --check`, `tokens list`, `adapters
    status`, `mappings list`) open the database read-only: on SQLite the file is left as it was; on
    PostgreSQL the session itself refuses a write, whatever a later change makes them send."""
    database_url = str(postgres.create_database())
    _open(database_url)
    reader = open_recorder(database_url, 2, 30, create_tables=False, read_only=True)
    try:
        with reader.read_transaction() as tx:
            row = tx.fetchone("SHOW transaction_read_only")
        assert row is not None and row["transaction_read_only"] == "on"
    finally:
        reader.close()


def test_a_new_database_records_every_migration_once(database_url: str) -> None:
    _open(database_url)
    expected = [(migration.version, migration.kind) for migration in MIGRATIONS]
    assert _versions(database_url) == expected
    _open(database_url)  # nothing left to apply
    assert _versions(database_url) == expected
    done = run_ledger_command(database_url, "migrate", "--check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"schema version {LATEST_VERSION}; this release knows up to {LATEST_VERSION}",
        "nothing to apply",
    ]


def test_ledger_migrate_check_lists_and_applies_nothing_then_migrate_applies(database_url: str) -> None:
    done = run_ledger_command(database_url, "migrate", "--check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"schema version 0; this release knows up to {LATEST_VERSION}"
    assert lines[1:] == [f"would apply {m.version} ({m.kind}): {m.name}" for m in MIGRATIONS]
    assert db.query(database_url, _TABLES[database_url.split(":", maxsplit=1)[0]]) == []  # nothing was made

    done = run_ledger_command(database_url, "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [f"applied {m.version} ({m.kind}): {m.name}" for m in MIGRATIONS]
    assert [version for version, _ in _versions(database_url)] == list(range(1, LATEST_VERSION + 1))
    again = run_ledger_command(database_url, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1:] == ["nothing to apply"]


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
}


def test_a_schema_a_newer_release_only_expanded_is_used_as_it_is(database_url: str) -> None:
    _open(database_url)
    _record(database_url, LATEST_VERSION + 1, "expand", 0)
    _open(database_url)  # the release before keeps working during a rollout (and after a rollback)
    done = run_ledger_command(database_url, "migrate", "--check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"schema version {LATEST_VERSION + 1}; this release knows up to {LATEST_VERSION}",
        "nothing to apply",
    ]


def test_a_schema_that_needs_a_newer_release_is_refused_in_one_line(database_url: str) -> None:
    _open(database_url)
    _record(database_url, LATEST_VERSION + 1, "contract", LATEST_VERSION + 1)
    with pytest.raises(SchemaTooNew):
        _open(database_url)
    port = str(free_port())  # refused before it listens; a port it could listen on all the same
    for command in (("serve", "--port", port), ("migrate",), ("migrate", "--check"), ("verify",)):
        done = run_ledger_command(database_url, *command, deadline_s=60)
        assert done.returncode == EXIT_USAGE, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.splitlines()
        assert line == (
            f"ledger {command[0]}: the database's schema is at version {LATEST_VERSION + 1} and needs a "
            f"release that knows version {LATEST_VERSION + 1} or later; this release knows up to "
            f"{LATEST_VERSION}: run a newer release"
        ), line


def test_a_contract_step_a_release_still_runs_with_is_not_refused(database_url: str) -> None:
    """A contract migration of the next release removes only what this one no longer uses."""
    _open(database_url)
    _record(database_url, LATEST_VERSION + 1, "contract", LATEST_VERSION)
    _open(database_url)


def test_concurrent_starts_on_a_new_database_apply_each_migration_once(database_url: str) -> None:
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "migrate"],
            env=ledger_env(database_url),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(CONCURRENT_STARTS)
    ]
    outputs = [start.communicate(timeout=120) for start in starts]
    assert [start.returncode for start in starts] == [0] * CONCURRENT_STARTS, outputs
    applied = [line for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("applied ")]
    assert sorted(applied) == sorted(f"applied {m.version} ({m.kind}): {m.name}" for m in MIGRATIONS)
    assert [version for version, _ in _versions(database_url)] == list(range(1, LATEST_VERSION + 1))


def test_a_role_that_may_not_create_the_schema_is_refused_in_one_line(postgres: EmbeddedPostgres) -> None:
    """A role the database's owner granted only CONNECT (PostgreSQL 15 and later: no CREATE in the
    public schema for others), a plain mistake of setup: told in one line, like SQLite's read-only
    file, not with the traceback of psycopg's InsufficientPrivilege (found by review)."""
    admin_url = postgres.create_database()
    role = unique("plain").replace("-", "_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}"))
    # A rebuild makes no ledger where there is none (tests/e2e/test_cli.py): it says so first.
    for command, problem in (
        (("migrate",), "permission denied"),
        (("rebuild", "--quiet"), "holds no ledger (no ledger_events table): `ledger migrate` makes one"),
    ):
        # (0: the server's deadlock_timeout, which this role may not set: no warning about it)
        done = run_ledger_command(url, *command, deadline_s=60, env={"LEDGER_DB_DEADLOCK_TIMEOUT_MS": "0"})
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert done.returncode == EXIT_USAGE, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"ledger {command[0]}: "), line
        assert problem in line, line
        if command == ("migrate",):
            assert line.startswith("ledger migrate: cannot use the database at "), line
