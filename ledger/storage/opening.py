"""Opening a ledger's database: the recorder (ledger/storage/recorders.py) for the SQLite file or
PostgreSQL database a URL names, its sessions set up and its schema brought up to date; or, for a
command that only reads, the database left as it is."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any
from urllib.parse import unquote, urlsplit

from eventsourcing.sqlite import SQLiteDatastore

from ledger.storage.database_urls import postgres_url_options, sqlite_file
from ledger.storage.migrator import MIGRATION_WAIT_S_DEFAULT
from ledger.storage.pg_sessions import DEADLOCK_TIMEOUT_MS_DEFAULT, LedgerPostgresDatastore, with_url_options
from ledger.storage.recorders import (
    EVENTS_TABLE,
    WRITER_ANSWER_WAIT_S_DEFAULT,
    PostgresLedgerRecorder,
    SQLiteLedgerRecorder,
)

CONNECT_TIMEOUT_S = 3.0
READER_POOL_SIZE = 2  # a command that reads: its one transaction at a time, and one to spare
READ_ONLY_SESSION = {"options": "-c default_transaction_read_only=on"}


def _sqlite_to_wal(path: str, lock_timeout_s: int) -> None:
    """The ledger's SQLite files are in WAL mode. The library switches each new connection of its
    pool to it, and a file in rollback mode (a backup, a file made by another tool) opened by two
    connections at once refused the second switch at once, busy timeout or not ("database is
    locked", seen on `ledger verify` of a restored file). One connection switches it first, alone.
    Anything else wrong with the file is left to the library's first connection to report."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(path, timeout=lock_timeout_s)) as connection,
    ):
        connection.execute("PRAGMA journal_mode=WAL")


def open_recorder(
    database_url: str,
    pool_size: int,
    lock_timeout_s: int,
    *,
    create_tables: bool = True,
    read_only: bool = False,
    migration_wait_s: int = MIGRATION_WAIT_S_DEFAULT,
    deadlock_timeout_ms: int = DEADLOCK_TIMEOUT_MS_DEFAULT,
    writer_answer_wait_s: float = WRITER_ANSWER_WAIT_S_DEFAULT,
) -> Any:
    """A recorder for `sqlite:///path` or `postgresql://user:pass@host:port/db`; the schema brought
    up to date (ledger/storage/migrator.py; SchemaTooNew if it needs a newer release) unless
    `create_tables` is false (a reader that must not change the database: `ledger verify`,
    `ledger migrate --check`). `read_only` (without `create_tables`): a SQLite file is also left in
    its journal mode, not switched to WAL: a backup in rollback-journal mode read by such a command
    was changed by it; a PostgreSQL session is read-only (`default_transaction_read_only`), so
    that what such a command sends cannot change the database either."""
    if read_only and create_tables:
        raise ValueError("a read-only recorder creates no tables")
    parts = urlsplit(database_url)
    recorder: Any
    path = sqlite_file(database_url)
    if path is not None:
        if not read_only and (create_tables or os.path.exists(path)):
            _sqlite_to_wal(path, lock_timeout_s)
        datastore = SQLiteDatastore(
            path,
            lock_timeout=lock_timeout_s,
            pool_size=pool_size,
            originator_id_type="text",
        )
        if read_only:
            datastore.pool.is_journal_mode_wal = True  # the library's own switch, on each new connection
        recorder = SQLiteLedgerRecorder(datastore)
    elif parts.scheme in ("postgresql", "postgres"):
        query = postgres_url_options(database_url)
        if read_only:  # the URL's own `options` are added to it (with_url_options), not replaced
            query = with_url_options(READ_ONLY_SESSION, query)
        pg_datastore = LedgerPostgresDatastore(
            dbname=parts.path.lstrip("/") or "postgres",
            # ?host=/a/dir names a Unix socket directory, as libpq's URIs allow.
            host=query.pop("host", parts.hostname or "127.0.0.1"),
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            pool_size=pool_size,
            lock_timeout=lock_timeout_s,
            # An unreachable server is told within seconds, at start (ledger serve fails fast) and
            # in an outage (writes answer 503 well inside the request timeout).
            connect_timeout=CONNECT_TIMEOUT_S,
            originator_id_type="text",
            deadlock_timeout_ms=deadlock_timeout_ms,
            url_options=query,
        )
        pg_datastore.schema = _session_schema(pg_datastore, reads_only=read_only)
        recorder = PostgresLedgerRecorder(pg_datastore, migration_wait_s, writer_answer_wait_s)
    else:
        raise ValueError(
            f"LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://, not {parts.scheme!r}"
        )
    if create_tables:
        recorder.create_table()
    return recorder


_PG_SESSION_SCHEMA = (
    "SELECT COALESCE((SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.oid = to_regclass('{EVENTS_TABLE}')), current_schema()) AS schema, "
    "current_setting('server_encoding') AS encoding, current_setting('search_path') AS search_path"
)


def _session_schema(datastore: LedgerPostgresDatastore, *, reads_only: bool) -> str:
    """The schema the sessions make and find tables in: the first of their search_path that exists
    (a URL's `options=-csearch_path=…`, the role's or the database's default). The event library
    qualifies its tables with the schema it is told, `public` unless told, while the ledger's own SQL
    names none: the two must agree, or a ledger in a schema of its own had its log in `public`, every
    other table in its schema, and failed at its first read. A log already there, found by the
    search_path as the ledger's own SQL finds its tables, keeps its schema: a schema that comes first
    later (the role's own, `"$user"`) must not be given a new, empty log beside the ledger's.
    `reads_only`: a command that makes nothing is told what it lacks to read, not to make tables."""
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(_PG_SESSION_SCHEMA)
        row = cursor.fetchone()
    _refuse_other_encodings(row["encoding"] if row else None)
    schema = row["schema"] if row else None
    if schema:
        return str(schema)
    if reads_only:
        raise ValueError(
            "LEDGER_DATABASE_URL's search_path names no schema that exists "
            f"({row['search_path'] if row else ''}): there is no ledger to read there (name the "
            "ledger's schema in the URL's options)"
        )
    raise ValueError(
        "LEDGER_DATABASE_URL's sessions have no schema to make tables in: their search_path names "
        "none that exists (CREATE SCHEMA it, or set search_path in the URL's options)"
    )


def _refuse_other_encodings(encoding: str | bytes | None) -> None:
    """Ids and names are Unicode, compared and ordered by code point: a database in another encoding
    would refuse some of them or, in SQL_ASCII, keep any bytes unchecked and hand back bytes where
    text was meant (the start failed with a traceback on a schema name read as b'public')."""
    if isinstance(encoding, bytes):  # SQL_ASCII: psycopg decodes nothing
        encoding = encoding.decode("ascii", "replace")
    if encoding != "UTF8":
        raise ValueError(
            f"LEDGER_DATABASE_URL's database is in the encoding {encoding}; the ledger needs UTF8 "
            "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
        )


def open_read_only(
    database_url: str, lock_timeout_s: int, deadlock_timeout_ms: int = DEADLOCK_TIMEOUT_MS_DEFAULT
) -> Any:
    """A recorder for a command that only reads (`verify`, `tokens list`, `adapters status`, ...):
    no table made, a SQLite file left in its journal mode, a PostgreSQL session read-only."""
    return open_recorder(
        database_url,
        READER_POOL_SIZE,
        lock_timeout_s,
        create_tables=False,
        read_only=True,
        deadlock_timeout_ms=deadlock_timeout_ms,
    )
