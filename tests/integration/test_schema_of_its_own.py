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
