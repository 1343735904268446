"""A ledger in a PostgreSQL schema of its own (a URL's `options=-csearch_path=…`, or the role's default
search_path): every table of it, the log too, in that schema, and nothing in `public`. The event
library qualifies its tables with a schema it is told (`public` unless told), while the ledger's own
SQL names none: the log was made in `public` and every other table in the schema, and the service
failed at its first read."""

from __future__ import annotations

from urllib.parse import quote

from support import api
from support import events as ev
from support.ids import unique
from support.postgres import EmbeddedPostgres
from support.server import run_ledger_command


def _tables_in(pg: EmbeddedPostgres, database_url: str, schema: str) -> set[str]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {row[0] for row in rows}


def test_a_ledger_in_a_schema_of_its_own_keeps_every_table_there(postgres: EmbeddedPostgres, serve) -> None:
    database_url = postgres.create_database("own_schema")
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA stock")
    in_schema = f"{database_url}&options={quote('-csearch_path=stock')}"
    server = serve(in_schema)
    store, sku = unique("shop"), unique("SKU")
    with server.client() as client:
        api.record(client, ev.receipt(store, (sku, 5)), ev.reservation(store, "R-1", (sku, 2)))
        assert api.level(client, store, sku)["available"] == 3
    assert {"ledger_events", "ledger_levels", "ledger_history"} <= _tables_in(postgres, database_url, "stock")
    assert _tables_in(postgres, database_url, "public") == set()


def test_a_search_path_that_names_no_schema_is_refused_in_one_line(postgres: EmbeddedPostgres) -> None:
    database_url = postgres.create_database("no_schema")
    done = run_ledger_command(f"{database_url}&options={quote('-csearch_path=nosuch')}", "migrate")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ledger migrate: ") and "search_path names none" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_ledger_made_in_public_is_found_there_when_a_schema_comes_first_later(
    postgres: EmbeddedPostgres, serve
) -> None:
    # A role's search_path is "$user", public by default: a schema named after the role, made after
    # the ledger, comes first, and the ledger's log must still be the one in public, not a new one.
    database_url = postgres.create_database("later_schema")
    store, sku = unique("shop"), unique("SKU")
    first = serve(database_url)
    with first.client() as client:
        api.record(client, ev.receipt(store, (sku, 5)))
    first.stop()
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA stock")
    later = serve(f"{database_url}&options={quote('-csearch_path=stock,public')}")
    with later.client() as client:
        assert api.level(client, store, sku)["on_hand"] == 5
        api.record(client, ev.receipt(store, (sku, 1)))
        assert api.level(client, store, sku)["on_hand"] == 6
    assert _tables_in(postgres, database_url, "stock") == set()


def _functions_in(database_url: str, schema: str) -> set[str]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = %s)",
            (schema,),
        ).fetchall()
    return {row[0] for row in rows}


def _ledger_in_public_with_a_schema_first(postgres: EmbeddedPostgres, name: str) -> tuple[str, str]:
    """A ledger made in `public`, then a schema that comes first in the sessions' search_path: the
    database's URL, and the URL with that search_path."""
    import psycopg

    database_url = postgres.create_database(name)
    made = run_ledger_command(database_url, "migrate")
    assert made.returncode == 0, made.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA stock")
    return database_url, f"{database_url}&options={quote('-csearch_path=stock,public')}"


def test_a_later_migration_makes_its_tables_in_the_logs_schema_not_the_first_of_the_search_path(
    postgres: EmbeddedPostgres,
) -> None:
    """A migration's unqualified CREATE made its table in the first schema of the search_path, and
    its bookkeeping (`CREATE TABLE IF NOT EXISTS ledger_schema_versions`) an empty table of versions
    there: every migration then ran again, and made every table anew in that schema."""
    import psycopg

    from ledger.storage.migrations import EXPAND, LATEST_VERSION, MIGRATIONS, Migration
    from ledger.storage.migrator import LEDGER_SCHEMA, SchemaHistory, pg_migrate
    from ledger.storage.opening import open_recorder

    database_url, stock_first = _ledger_in_public_with_a_schema_first(postgres, "later_migration")
    future = Migration(
        LATEST_VERSION + 1,
        "a table of a later release",
        EXPAND,
        postgres=("CREATE TABLE IF NOT EXISTS ledger_later_table (id INTEGER PRIMARY KEY)",),
        sqlite=(),
    )
    recorder = open_recorder(stock_first, 2, 30)  # nothing to apply; this release's batch function
    try:
        later = SchemaHistory(LEDGER_SCHEMA.versions_table, (*MIGRATIONS, future))
        applied = pg_migrate(recorder, 30, later)
    finally:
        recorder.close()
    assert [migration.version for migration in applied] == [future.version]
    assert "ledger_later_table" in _tables_in(postgres, database_url, "public")
    assert _tables_in(postgres, database_url, "stock") == set()
    assert _functions_in(database_url, "stock") == set()
    with psycopg.connect(database_url) as conn:
        [(version,)] = conn.execute("SELECT MAX(version) FROM public.ledger_schema_versions").fetchall()
    assert version == future.version


def test_a_migration_the_database_lacks_lands_in_the_logs_schema(postgres: EmbeddedPostgres) -> None:
    """A database made by the release before the last migration, upgraded with a schema first."""
    import psycopg

    from ledger.storage.migrations import MIGRATIONS, IndexConcurrently

    oversold = MIGRATIONS[14]  # an index: whether it was made in public or in stock is seen
    [index] = oversold.postgres
    assert oversold.version == 15 and isinstance(index, IndexConcurrently)
    database_url, stock_first = _ledger_in_public_with_a_schema_first(postgres, "lacking_migration")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ledger_schema_versions WHERE version >= %s", (oversold.version,))
        conn.execute(f"DROP INDEX {index.name}")
    done = run_ledger_command(stock_first, "migrate")
    assert done.returncode == 0, done.stderr
    assert f"applied {oversold.version} " in done.stdout and "applied 1 " not in done.stdout, done.stdout
    assert _tables_in(postgres, database_url, "stock") == set()
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT schemaname FROM pg_indexes WHERE indexname = %s", (index.name,))
        assert found.fetchall() == [("public",)]


def test_a_reading_command_says_the_schema_its_search_path_names_does_not_exist(
    postgres: EmbeddedPostgres,
) -> None:
    """Commands that make nothing said the sessions had "no schema to make tables in"."""
    database_url = postgres.create_database("no_schema_to_read")
    for command in (("tokens", "list"), ("adapters", "status"), ("migrate", "--check")):
        done = run_ledger_command(f"{database_url}&options={quote('-csearch_path=stock')}", *command)
        assert done.returncode == 2, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"ledger {command[0]}"), line
        assert "LEDGER_DATABASE_URL's search_path names no schema that exists (stock)" in line, line
        assert "make tables" not in line, line
