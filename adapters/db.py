"""The adapters' access to the ledger's database: their own short transactions, and their schema.

The adapters never take the ledger's write lock (`write_transaction()`): their bookkeeping is in
their own tables, so a plain transaction of the library's datastore is enough and never makes the
ledger's writer wait. Reads of the log and the projections go through the recorder as usual.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import DataError as LibraryDataError
from eventsourcing.persistence import InterfaceError as LibraryInterfaceError
from eventsourcing.persistence import OperationalError as LibraryOperationalError

from adapters.masking import mask
from adapters.migrations import ADAPTERS_SCHEMA
from ledger.clock import utc_now, utc_text
from ledger.sql import SqlTx
from ledger.storage.migrator import pg_migrate, pg_plan, plan_of, sqlite_migrate, sqlite_plan
from ledger.storage.opening import open_read_only, open_recorder
from ledger.storage.recorders import SQLiteLedgerRecorder


def is_sqlite(recorder: Any) -> bool:
    return isinstance(recorder, SQLiteLedgerRecorder)


def is_data_error(error: BaseException) -> bool:
    """Whether the database refused the values themselves (PostgreSQL: a NUL in a text column):
    sending the same values again is refused again, so retrying cannot help."""
    return isinstance(error, LibraryDataError | psycopg.DataError | sqlite3.DataError)


def is_database_unavailable(error: BaseException) -> bool:
    """Whether the database could not be used just now (down, locked, a connection lost): the
    same statement may well succeed later."""
    return isinstance(
        error,
        LibraryOperationalError
        | LibraryInterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | sqlite3.OperationalError,
    )


@contextlib.contextmanager
def transaction(recorder: Any) -> Iterator[SqlTx]:
    """One committed transaction on the adapters' tables (rolled back if the block raises)."""
    with recorder.datastore.transaction(commit=True) as cursor:
        yield SqlTx(cursor, qmark=is_sqlite(recorder))


def ensure_schema(recorder: Any) -> None:
    """The adapters' migrations the database lacks (adapters/migrations.py)."""
    if is_sqlite(recorder):
        sqlite_migrate(recorder, ADAPTERS_SCHEMA)
    else:
        pg_migrate(recorder, recorder.migration_wait_s, ADAPTERS_SCHEMA)


def open_database(database_url: str, pool_size: int, lock_timeout_s: int) -> Any:
    """The ledger's recorder (ledger tables created) with the adapters' tables created too."""
    recorder = open_recorder(database_url, pool_size, lock_timeout_s)
    ensure_schema(recorder)
    return recorder


# A table every release of the adapters made: there when they have run on the ledger, recorded
# migrations or not (releases before adapters/migrations.py recorded none).
ANY_ADAPTERS_TABLE = "adapter_positions"


def open_reader(database_url: str, lock_timeout_s: int, deadlock_timeout_ms: int) -> tuple[Any, bool] | None:
    """The database for a command that only reads the adapters' tables (`ledger adapters status`,
    `ledger mappings list`), opened as `ledger verify` and `ledger tokens list` open it: a SQLite
    file (a backup in rollback-journal mode among them) is left as it was, not switched to WAL nor
    given tables, and a PostgreSQL session is read-only. With it, whether the adapters' tables are
    there: a ledger no adapter has run on has none, and nothing to show. None when the ledger's
    or the adapters' schema lacks a migration: the caller opens the database as every other
    command does, which applies them (the reads expect the tables as this release has them)."""
    reader = open_read_only(database_url, lock_timeout_s, deadlock_timeout_ms)
    try:
        ledger_plan = plan_of(reader)
        adapters_plan = (sqlite_plan if is_sqlite(reader) else pg_plan)(reader, ADAPTERS_SCHEMA)
        never_made = not adapters_plan.applied and not _table_exists(reader, ANY_ADAPTERS_TABLE)
        if ledger_plan.pending or (adapters_plan.pending and not never_made):
            reader.close()
            return None
    except BaseException:
        reader.close()
        raise
    return reader, not never_made


def _table_exists(recorder: Any, table: str) -> bool:
    catalogue = (
        "SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = %s"
        if is_sqlite(recorder)
        else "SELECT 1 AS found WHERE to_regclass(%s) IS NOT NULL"
    )
    with recorder.read_transaction() as tx:
        return bool(tx.fetchall(catalogue, (table,)))


JOURNAL_CHARS_MAX = 2000


def now_text() -> str:
    return utc_text(utc_now())


def to_the_back(recorder: Any, table: str, key_column: str, keys: Sequence[str]) -> None:
    """Stamps the rows a bounded poll read and left open, so that the next poll (oldest stamp
    first) reads the others: else rows that stay open (not yet received, unknown to the system)
    would fill every poll, and the rows behind them would never be read."""
    if not keys:
        return
    with transaction(recorder) as tx:
        stamp = now_text()
        for key in keys:
            tx.execute(f"UPDATE {table} SET updated_at = %s WHERE {key_column} = %s", (stamp, key))


def journal(tx: SqlTx, adapter: str, kind: str, subject: str, detail: str) -> None:
    """One journal entry (alerts among them); its text is masked (adapters/masking.py), then cut."""
    tx.execute(
        "INSERT INTO adapter_journal (at, adapter, kind, subject, detail) VALUES (%s, %s, %s, %s, %s)",
        (now_text(), adapter, kind, mask(subject)[:JOURNAL_CHARS_MAX], mask(detail)[:JOURNAL_CHARS_MAX]),
    )


def log_head(recorder: Any) -> int:
    with recorder.read_transaction() as tx:
        return int(recorder.head(tx))
