"""`ledger verify`: replays the whole log and compares every projection table with the stored one.

The replay is the rebuild's own (`ledger.rebuild.replay`: the recorder's `log_page`, `apply`,
`ProjectionBatch`, `write_batch`), written into a scratch SQLite database made by the same
`open_recorder` as any ledger's, in a temporary directory. Then each table of `PROJECTION_TABLES`
is compared with the stored one, generically: the columns and the primary key are read from the
scratch table, both sides are read in primary key order and merged, so memory holds a fetch of
rows at a time whatever the size, and a projection table added later is compared without a change
here. The replay state (every level and reservation) is held in memory, as by the rebuild.

It never changes the database: the stored tables are read in one read-only transaction that sees
one snapshot (REPEATABLE READ on PostgreSQL; on SQLite a read transaction, which in WAL mode holds
its snapshot), taken before the log's head is read, so a ledger that goes on recording meanwhile is
compared at that head. The log up to that head cannot change (it is only appended to, in order).
The open snapshot keeps PostgreSQL's VACUUM, and SQLite's checkpoints, from passing it until the
end: verify a large busy ledger in a quiet hour, or a restored copy of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import psycopg
import psycopg.conninfo
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.cli_errors import CommandError, redacted_url
from ledger.existing_ledger import refuse_missing_sqlite
from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import write_batch
from ledger.rebuild.replay import collection_paused, replay
from ledger.storage.database_urls import sqlite_file
from ledger.storage.migrator import plan_of
from ledger.storage.opening import open_read_only, open_recorder
from ledger.storage.recorders import EVENTS_TABLE, LedgerRecorder

ROWS_PER_FETCH = 2000  # rows read at a time from each side of a comparison
SCRATCH_FILE = "replayed.db"
APPLICATION_NAME = "ledger verify"  # its snapshot's session, as pg_stat_activity shows it
# Between two tries at a stored table's lock (PostgreSQL), which never wait: a swap that holds the
# table lets it go within its lock wait (LEDGER_REBUILD_SWAP_LOCK_WAIT_MS); the tries end after
# the lock timeout (LEDGER_DB_LOCK_TIMEOUT_S).
LOCK_TRY_PAUSE_S = 0.05
CAUSE_DEPTH_MAX = 4  # how many causes deep a scratch error is searched for a full disk

ReplayProgress = Callable[[int, int], None]  # (position, head)
CompareProgress = Callable[[str, int], None]  # (table, rows compared so far in it)


@dataclass(frozen=True)
class Difference:
    table: str
    key: tuple[tuple[str, Any], ...]  # (column, value) of the primary key; empty for a whole column
    what: str

    def __str__(self) -> str:
        key = ", ".join(f"{column}={value!r}" for column, value in self.key)
        return f"{self.table} ({key}): {self.what}" if key else f"{self.table}: {self.what}"


@dataclass
class Report:
    head: int = 0
    entries: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # stored rows compared, per table
    shown_max: int = 20
    shown: list[Difference] = field(default_factory=list)
    total: int = 0

    def add(self, difference: Difference) -> None:
        self.total += 1
        if len(self.shown) < self.shown_max:
            self.shown.append(difference)


def verify(
    database_url: str,
    lock_timeout_s: int,
    *,
    page_entries: int,
    scratch_dir: str | None,
    shown_max: int,
    replay_progress: ReplayProgress,
    compare_progress: CompareProgress,
) -> Report:
    report = Report(shown_max=shown_max)
    with (
        _snapshot(database_url, lock_timeout_s) as stored,
        tempfile.TemporaryDirectory(prefix="ledger-verify-", dir=scratch_dir) as scratch_path,
    ):
        report.head = stored.head()
        log = open_read_only(database_url, lock_timeout_s)
        try:  # a schema this release does not know is refused, as every other command refuses it
            plan_of(log)
        except BaseException:
            log.close()
            raise
        try:
            with _scratch_errors(scratch_path):
                scratch = open_recorder(
                    f"sqlite:///{os.path.join(scratch_path, SCRATCH_FILE)}", 2, lock_timeout_s
                )
        except BaseException:
            log.close()
            raise
        try:
            with collection_paused():
                report.entries = _replay_into(
                    log, scratch, scratch_path, report.head, page_entries, replay_progress
                )
        finally:
            log.close()
            scratch.close()
        with contextlib.closing(sqlite3.connect(os.path.join(scratch_path, SCRATCH_FILE))) as replayed:
            for table in PROJECTION_TABLES:
                stored.hold(table)
                _compare(table, _SQLiteSide(replayed), stored, report, compare_progress)
    return report


def _replay_into(
    log: LedgerRecorder,
    scratch: LedgerRecorder,
    scratch_path: str,
    head: int,
    page_entries: int,
    progress: ReplayProgress,
) -> int:
    entries = 0
    for page in replay(log, head, page_entries):
        with _scratch_errors(scratch_path), scratch.write_transaction() as tx:
            write_batch(tx, page.batch)
        entries += page.entries
        progress(page.position, head)
    return entries


@contextlib.contextmanager
def _scratch_errors(scratch_path: str) -> Iterator[None]:
    """An operating error of the scratch database is told as the scratch space's: it reached main()
    as any database error, which names LEDGER_DATABASE_URL, and a full scratch disk (SQLite's
    SQLITE_FULL, "database or disk is full") sent the operator to the ledger's disk, which had room.
    Only around what touches the scratch database alone: an error of the ledger's stays its own."""
    try:
        yield
    except (sqlite3.OperationalError, StoreOperationalError, OSError) as error:
        where = os.path.dirname(scratch_path)
        if _disk_full(error):
            raise CommandError(
                f"the scratch space in {where} is full ({error}): the replay needs about as much room "
                "as the projections; give --scratch-dir a directory with room"
            ) from None
        raise CommandError(
            f"the scratch database in {scratch_path} failed: {error} (--scratch-dir chooses where it is)"
        ) from None


def _disk_full(error: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or the system's ENOSPC, in the error or what caused it (the event
    library wraps SQLite's errors once)."""
    found: BaseException | None = error
    for _ in range(CAUSE_DEPTH_MAX):
        if found is None:
            return False
        if (
            isinstance(found, sqlite3.Error)
            and getattr(found, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        ):
            return True
        if isinstance(found, OSError) and found.errno == errno.ENOSPC:
            return True
        found = found.__cause__
    return False


# -- the two sides: the stored database (in its snapshot) and the scratch one --------------------------


class _Side(Protocol):
    """One database's tables: their columns (None: no such table), and rows in primary key order."""

    connection: Any

    def columns(self, table: str) -> list[str] | None: ...
    def rows(
        self, table: str, columns: Sequence[str], key: Sequence[str], text_key: Sequence[bool]
    ) -> Iterator[tuple[Any, ...]]: ...


class _SQLiteSide:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def columns(self, table: str) -> list[str] | None:
        info = self.connection.execute(f"PRAGMA table_info({table})").fetchall()
        return [row[1] for row in info] or None

    def primary_key(self, table: str) -> tuple[list[str], list[bool]]:
        """The primary key's columns in their order, and which of them are text; a table without
        one is keyed by all its columns (its rows compared as a multiset)."""
        info = self.connection.execute(f"PRAGMA table_info({table})").fetchall()
        keyed = sorted((row for row in info if row[5]), key=lambda row: row[5]) or info
        return [row[1] for row in keyed], [str(row[2]).upper() == "TEXT" for row in keyed]

    def rows(
        self, table: str, columns: Sequence[str], key: Sequence[str], text_key: Sequence[bool]
    ) -> Iterator[tuple[Any, ...]]:
        # BINARY collation: UTF-8 byte order, which is code point order, as Python compares str.
        cursor = self.connection.execute(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}"
        )
        while rows := cursor.fetchmany(ROWS_PER_FETCH):
            yield from rows


class _PostgresSide:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def columns(self, table: str) -> list[str] | None:
        rows = self.connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [row[0] for row in rows] or None

    def rows(
        self, table: str, columns: Sequence[str], key: Sequence[str], text_key: Sequence[bool]
    ) -> Iterator[tuple[Any, ...]]:
        # The "C" collation orders text by bytes, as SQLite and Python do (the database's own
        # collation may not).
        order = ", ".join(
            f'{name} COLLATE "C" NULLS FIRST' if text else f"{name} NULLS FIRST"
            for name, text in zip(key, text_key, strict=True)
        )
        with self.connection.cursor(name=f"verify_{table}") as cursor:
            cursor.itersize = ROWS_PER_FETCH
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
            yield from cursor


class _Snapshot:
    def __init__(self, side: _Side, head_sql: str) -> None:
        self.side = side
        self.head_sql = head_sql

    def head(self) -> int:
        return int(self.side.connection.execute(self.head_sql).fetchone()[0])

    def hold(self, table: str) -> None:
        """Keeps `table` as the snapshot saw it, before it is compared: SQLite's read transaction
        holds the whole database so."""


class _PostgresSnapshot(_Snapshot):
    """PostgreSQL's snapshot keeps the rows, not the tables' names: a rebuild's swap (renames) that
    commits while the log is replayed would have the comparison read the new tables, whose rows the
    snapshot does not see, and a healthy ledger would differ in every row. So each table is
    locked before it is compared (a swap then waits for verify to end, as for any reader), and
    one swapped before that is told: the tables are taken as they were when the snapshot began.

    The lock is asked for without waiting, in tries: the swap locks every table at once, in an
    order of its own (ledger/rebuild/shadow.py, `lock_order`), and waits for those verify holds,
    holding the others. Verify waiting then for one of those waited for a swap that waited for it,
    and PostgreSQL cancelled one of the two: the rebuild, after its whole fill, or verify. Between
    tries verify waits for nothing, so the swap gives up its attempt (its lock wait) as for any
    reader, and the next try takes the table."""

    def __init__(self, side: _Side, head_sql: str, lock_wait_s: int) -> None:
        super().__init__(side, head_sql)
        self.lock_wait_s = lock_wait_s
        # pg_class read as a table is read in the snapshot; to_regclass reads the catalog as it is.
        self.tables = {
            table: self._oid(
                "SELECT oid FROM pg_class WHERE relname = %s "
                "AND relnamespace = current_schema()::regnamespace",
                table,
            )
            for table in PROJECTION_TABLES
        }

    def _oid(self, query: str, table: str) -> int | None:
        row = self.side.connection.execute(query, (table,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def hold(self, table: str) -> None:
        if self.tables[table] is None:
            return  # missing from the start: the comparison says so
        self._lock(table)
        if self._oid("SELECT to_regclass(%s)::oid", table) != self.tables[table]:
            raise CommandError(
                f"{table} was replaced by `ledger rebuild` (rebuilt while verify ran): the live tables "
                "are not those of verify's snapshot; run verify again"
            )

    def _lock(self, table: str) -> None:
        connection = self.side.connection
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                with connection.transaction():  # a savepoint: a refused try undoes only itself
                    connection.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE NOWAIT")
                return
            except psycopg.errors.LockNotAvailable:
                if time.monotonic() + LOCK_TRY_PAUSE_S >= deadline:
                    raise CommandError(
                        f"{table} was locked by another session for {self.lock_wait_s} s "
                        "(LEDGER_DB_LOCK_TIMEOUT_S): a `ledger rebuild` swapping it in, or a migration; "
                        "run verify again"
                    ) from None
                time.sleep(LOCK_TRY_PAUSE_S)


@contextlib.contextmanager
def _snapshot(database_url: str, lock_wait_s: int) -> Iterator[_Snapshot]:
    """The stored database in one read-only snapshot."""
    refuse_missing_sqlite(database_url)  # a mistyped path is not read as an empty ledger
    path = sqlite_file(database_url)
    if path is not None:
        uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as connection:
            side = _SQLiteSide(connection)
            _require_log(side)
            _require_wal(connection, path)
            connection.execute("BEGIN")
            yield _Snapshot(side, f"SELECT COALESCE(MAX(rowid), 0) FROM {EVENTS_TABLE}")
        return
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise CommandError(
            "LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://, "
            f"not {urlsplit(database_url).scheme!r}"
        )
    _require_readable_url(database_url)
    # Named, so that whoever waits for its tables is told it is a verify (pg_stat_activity, and a
    # migration's line: migrator.pg_lock_holders).
    with psycopg.connect(database_url, connect_timeout=3, application_name=APPLICATION_NAME) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        pg_side = _PostgresSide(connection)
        _require_log(pg_side)
        yield _PostgresSnapshot(
            pg_side, f"SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}", lock_wait_s
        )
        connection.rollback()


def _require_readable_url(database_url: str) -> None:
    """The URL as libpq reads it (this command hands it to libpq as it is, where the others read it
    themselves): one it cannot parse is a usage error, not psycopg's ProgrammingError, and the
    line names the URL without its password."""
    try:
        psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as error:
        problem = str(error).replace(database_url, redacted_url(database_url))
        raise CommandError(f"LEDGER_DATABASE_URL is not a PostgreSQL URL: {problem}") from None


def _require_wal(connection: sqlite3.Connection, path: str) -> None:
    """A backup is in rollback-journal mode (one file, see ledger/backup.py), and the replay's
    recorder would switch it to the ledger's WAL mode: changed under its own snapshot, that waits for
    itself ("database is locked"), and a backup must stay as it was written anyway."""
    mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode != "wal":
        raise CommandError(
            f"{path} is in {mode} journal mode, as `ledger backup` writes a copy: restore it into a new "
            "file (`ledger restore`) and verify that"
        )


def _require_log(side: _Side) -> None:
    if side.columns(EVENTS_TABLE) is None:
        raise CommandError(f"the database has no {EVENTS_TABLE} table: not a ledger database")


# -- the comparison -------------------------------------------------------------------------------------


def _normalised(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value  # SQLite has no booleans: 0/1


def _order(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    """A key as both sides order it: nulls first (a key column is null only in a table without a
    primary key, keyed by all its columns), then by value."""
    return tuple((value is not None, _normalised(value)) for value in key)


def _compare(
    table: str, replayed: _SQLiteSide, stored: _Snapshot, report: Report, progress: CompareProgress
) -> None:
    columns = replayed.columns(table) or []
    key, text_key = replayed.primary_key(table)
    stored_columns = stored.side.columns(table)
    if stored_columns is None:
        report.add(Difference(table, (), "the table is missing"))
        return
    for missing in [name for name in columns if name not in stored_columns]:
        report.add(Difference(table, (), f"column {missing} is missing"))
    for unknown in [name for name in stored_columns if name not in columns]:
        report.add(Difference(table, (), f"column {unknown} is stored but not projected by this version"))
    compared = [name for name in columns if name in stored_columns]
    width = len(key)
    ordered = [*key, *(name for name in compared if name not in key)]
    mine = replayed.rows(table, ordered, key, text_key)
    theirs = stored.side.rows(table, ordered, key, text_key)
    want, have = next(mine, None), next(theirs, None)
    count = 0
    while want is not None or have is not None:
        want_key = None if want is None else tuple(want[:width])
        have_key = None if have is None else tuple(have[:width])
        if have_key is None or (want_key is not None and _order(want_key) < _order(have_key)):
            report.add(
                Difference(table, tuple(zip(key, want_key or (), strict=True)), "missing (the replay has it)")
            )
            want = next(mine, None)
            continue
        count += 1
        if want_key is None or _order(have_key) < _order(want_key):
            report.add(
                Difference(table, tuple(zip(key, have_key, strict=True)), "stored, but not in the replay")
            )
        else:
            changed = [
                f"{name}: stored {_normalised(h)!r}, replayed {_normalised(w)!r}"
                for name, w, h in zip(ordered[width:], want[width:], have[width:], strict=True)  # type: ignore[index]
                if _normalised(w) != _normalised(h)
            ]
            if changed:
                report.add(Difference(table, tuple(zip(key, have_key, strict=True)), "; ".join(changed)))
            want = next(mine, None)
        have = next(theirs, None)
        if count % ROWS_PER_FETCH == 0:
            progress(table, count)
    report.rows[table] = count
    progress(table, count)
