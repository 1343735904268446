"""The eventsourcing library's application recorders, extended for group commit.

The library records one list of events per transaction. The ledger needs more in that same
transaction: take the writers' lock, read the current state, decide every event of a
batch, insert the events, and write the projections. So each recorder here adds
`write_transaction()` (the writers' lock taken first) and `insert_entries()` (the library's own
insert, on the caller's cursor). Everything else, the events table, notification ids, reading
the log back, is the library's. DESIGN.md explains why.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from psycopg.errors import DuplicateObject

from ledger.sql import SqlTx
from ledger.storage.migrations import Migration
from ledger.storage.migrator import (
    MIGRATION_WAIT_S_DEFAULT,
    pg_migrate,
    pg_schema_lock,
    sqlite_migrate,
)
from ledger.storage.one_statement import (
    BATCH_FUNCTION_PREFIX,
    COPY_ROWS_MIN_DEFAULT,
    EVENTS_INSERT,
    EVENTS_TABLE,
    STAGING_DDL,
    BatchRows,
    SentBatch,
    batch_call,
    batch_call_raw,
    end_failed_transaction,
    json_arguments,
    named_batch_functions,
    prepare,
    stage,
    staged_call,
)
from ledger.storage.pg_sessions import DEADLOCK_TIMEOUT_MS_DEFAULT, LedgerPostgresDatastore
from ledger.storage.writers_lock import in_plpgsql, writers_lock_statements


class LedgerRecorder(Protocol):
    """What the writer, the readers and the rebuild need from a database."""

    head_sql: str
    # The optimistic batch (see Writer._record_optimistically): the whole transaction as one
    # statement, which fails unless the log's head is the given one; and whether an error means
    # "lost the bet".
    one_statement_batches: bool

    def batch_rows(self, rows: dict[str, list[Sequence[Any]]]) -> BatchRows: ...
    def write_collected(self, collected: BatchRows, head: int, last_position: int) -> None: ...
    def send_collected(self, collected: BatchRows, head: int, last_position: int) -> SentBatch: ...
    def lost_optimistic_bet(self, error: Exception) -> bool: ...

    def write_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def read_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def snapshot_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def plain_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def insert_entries(self, tx: SqlTx, stored_events: Sequence[StoredEvent], head: int) -> list[int]: ...
    def head(self, tx: SqlTx) -> int: ...
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]: ...
    def create_table(self) -> None: ...
    def close(self) -> None: ...


_PG_HEAD = f"SELECT COALESCE(MAX(notification_id), 0) AS head FROM {EVENTS_TABLE}"
_PG_SEQUENCE_MOVE = f"SELECT setval(pg_get_serial_sequence('{EVENTS_TABLE}', 'notification_id'), %s) AS moved"
_SQLITE_HEAD = f"SELECT COALESCE(MAX(rowid), 0) AS head FROM {EVENTS_TABLE}"


def _sql_text(statement: Any) -> str:
    return statement if isinstance(statement, str) else str(statement.as_string())


class _HeadAndClose:
    """What both recorders add alike: the log's head in a transaction, a plain transaction for the
    tables beside the log, and closing."""

    head_sql: str
    datastore: Any
    qmark: bool

    @contextlib.contextmanager
    def plain_transaction(self) -> Iterator[SqlTx]:
        """One committed transaction (rolled back if the block raises) without the log's write
        lock: for tables the writer never touches (the tokens)."""
        with self.datastore.transaction(commit=True) as cursor:
            yield SqlTx(cursor, qmark=self.qmark)

    def head(self, tx: SqlTx) -> int:
        row = tx.fetchone(self.head_sql)
        assert row is not None
        return int(row["head"])

    def close(self) -> None:
        self.datastore.close()


class PostgresLedgerRecorder(_HeadAndClose, PostgresApplicationRecorder):
    """PostgreSQL: the writers' lock (ledger/storage/writers_lock.py) serialises writers across
    processes and hosts, in place of the library's EXCLUSIVE table lock, which vacuum waits for."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        migration_wait_s: int = MIGRATION_WAIT_S_DEFAULT,
        copy_rows_min: int = COPY_ROWS_MIN_DEFAULT,
    ) -> None:
        super().__init__(datastore, events_table_name=EVENTS_TABLE)
        # The library runs these first in every transaction that inserts events (_lock_table).
        self.lock_table_statements = writers_lock_statements(
            datastore.schema, EVENTS_TABLE, datastore.lock_timeout
        )
        self.migration_wait_s = migration_wait_s
        self.copy_rows_min = copy_rows_min
        # Connections on which the batch call is a named prepared statement. Unnamed, the server
        # parsed and planned the call anew each time: 35 µs of its CPU a batch (measured).
        self._batch_call_prepared: weakref.WeakSet[Any] = weakref.WeakSet()
        # Connections that have their staging tables (temporary: each session its own).
        self._staging_made: weakref.WeakSet[Any] = weakref.WeakSet()
        locks = [in_plpgsql(_sql_text(statement)) for statement in self.lock_table_statements]
        (self._batch_function, json_sql), (self._staged_function, staged_sql) = named_batch_functions(
            locks, self.channel_name
        )
        self._functions_sql = {self._batch_function: json_sql, self._staged_function: staged_sql}
        self._batch_call = batch_call(self._batch_function)
        self._batch_call_raw = batch_call_raw(self._batch_function)
        self._batch_call_name = f"{self._batch_function}_call".encode()

    def create_table(self) -> None:
        """The schema migrations this database lacks (ledger/storage/migrator.py), then this
        release's batch functions if the database has none of their shape yet."""
        self.migrations_applied = pg_migrate(self, self.migration_wait_s)
        self.datastore.register_type_adapters()
        self.create_batch_function()

    @property
    def batch_function(self) -> str:
        """The function a batch's JSON rows go to."""
        return self._batch_function

    @property
    def batch_functions(self) -> tuple[str, str]:
        """This release's two: the JSON rows' and the staged rows' (ledger/storage/one_statement.py)."""
        return self._batch_function, self._staged_function

    def create_batch_function(self) -> None:
        """This release's batch functions, those the database lacks."""
        with self.datastore.get_connection() as conn:
            present = {
                row["proname"]
                for row in conn.execute(
                    "SELECT proname FROM pg_proc WHERE proname = ANY(%s) "
                    "AND pronamespace = current_schema()::regnamespace",
                    (list(self._functions_sql),),
                ).fetchall()
            }
            missing = [sql for name, sql in self._functions_sql.items() if name not in present]
            if not missing:
                return
            # Under the service's lock: two CREATE OR REPLACE at once collide on the catalog.
            with pg_schema_lock(conn, self.migration_wait_s):
                for sql in missing:
                    conn.execute(sql.encode())

    def drop_other_batch_functions(self) -> list[str]:
        """Drops the batch functions of other releases and settings (each one's name is its text's
        digest), keeping this one's; returns the names dropped. For once no instance of an earlier
        release runs: an instance of this release whose function is gone makes it again, at the
        cost of one batch recorded the ordinary way (`lost_optimistic_bet`)."""
        with self.datastore.get_connection() as conn, pg_schema_lock(conn, self.migration_wait_s):
            rows = conn.execute(
                "SELECT oid::regprocedure::text AS signature, proname FROM pg_proc "
                "WHERE proname LIKE %s AND proname <> ALL(%s) "
                "AND pronamespace = current_schema()::regnamespace",
                (BATCH_FUNCTION_PREFIX.replace("_", r"\_") + "%", list(self._functions_sql)),
            ).fetchall()
            for row in rows:
                conn.execute(f"DROP FUNCTION IF EXISTS {row['signature']}".encode())
        return sorted(row["proname"] for row in rows)

    def create_library_tables(self, curs: Any) -> None:
        """The library's events table, its type and insert function, in the caller's transaction
        (migration 1). The type has no IF NOT EXISTS: made in a savepoint, and kept if it exists."""
        for statement in self.sql_create_statements:
            if "CREATE TYPE" in statement.as_string():
                with contextlib.suppress(DuplicateObject), curs.connection.transaction():
                    curs.execute(statement, prepare=False)
            else:
                curs.execute(statement, prepare=False)

    head_sql = _PG_HEAD
    qmark = False
    migrations_applied: tuple[Migration, ...] = ()  # by create_table, for the start's log
    one_statement_batches = True

    def batch_rows(self, rows: dict[str, list[Sequence[Any]]]) -> BatchRows:
        """A batch's collected rows, ready to send: by COPY from `copy_rows_min` rows in all."""
        return BatchRows(rows, by_copy=sum(len(batch) for batch in rows.values()) >= self.copy_rows_min)

    def write_collected(self, collected: BatchRows, head: int, last_position: int) -> None:
        """One statement, one transaction, one round trip (ledger/storage/one_statement.py); a
        batch of many rows, by COPY and then one statement."""
        if collected.by_copy:
            self.send_collected(collected, head, last_position).wait()
            return
        with self.datastore.get_connection() as conn:
            conn.execute(self._batch_call, (head, last_position, *json_arguments(collected)), prepare=True)

    def send_collected(self, collected: BatchRows, head: int, last_position: int) -> SentBatch:
        """The same, sent without waiting for it: the caller decides its next batch while the
        server records this one, then waits (`SentBatch.wait`). A batch by COPY has its rows
        staged first, and only the call is left in flight."""
        stack = contextlib.ExitStack()
        conn = stack.enter_context(self.datastore.get_connection())
        pgconn = conn.pgconn
        try:
            if collected.by_copy:
                self._make_staging(conn)
                stage(conn, collected)
            # psycopg keeps its connections non-blocking; sent blocking, the whole statement is on
            # its way before this returns (a batch's arguments can be megabytes). SentBatch.wait
            # sets it back once the results are read.
            pgconn.nonblocking = 0
            if collected.by_copy:
                pgconn.send_query(staged_call(self._staged_function, head, last_position))
            else:
                if conn not in self._batch_call_prepared:
                    prepare(pgconn, self._batch_call_name, self._batch_call_raw)
                    self._batch_call_prepared.add(conn)
                arguments = [argument.encode() for argument in json_arguments(collected)]
                pgconn.send_query_prepared(
                    self._batch_call_name, [str(head).encode(), str(last_position).encode(), *arguments]
                )
        except BaseException:
            with contextlib.suppress(Exception):
                pgconn.nonblocking = 1
            with contextlib.suppress(Exception):
                end_failed_transaction(pgconn)
            stack.close()
            raise
        # From here on the statement may commit: only its result says whether it did.
        return SentBatch(pgconn, stack)

    def _make_staging(self, conn: Any) -> None:
        if conn in self._staging_made:
            return
        for statement in STAGING_DDL:
            conn.execute(statement.encode())
        self._staging_made.add(conn)

    def lost_optimistic_bet(self, error: Exception) -> bool:
        """The head moved, or an id was not new. The library's datastore re-raises psycopg's
        errors as its own (IntegrityError, OperationalError), with psycopg's as the cause."""
        cause = error if isinstance(error, psycopg.Error) else error.__cause__
        if isinstance(cause, psycopg.errors.UndefinedFunction):
            # The batch function was dropped (`ledger migrate --drop-other-batch-functions`, or by
            # hand): nothing was recorded; make it again, and this batch goes the ordinary way.
            self.create_batch_function()
            return True
        return isinstance(cause, psycopg.errors.SerializationFailure | psycopg.errors.UniqueViolation)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[SqlTx]:
        """The whole transaction runs in pipeline mode: statements are queued and travel together
        whenever a result is needed, so a batch costs about three round trips (lock and reads;
        the event insert; the projections and COMMIT). Fewer round trips also means fewer GIL
        hand-offs between this thread and the event loop, which is what limited throughput."""
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._lock_table(curs)  # queued: it runs before anything this transaction reads
            yield SqlTx(curs, qmark=False, connection=conn)

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[SqlTx]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            yield SqlTx(curs, qmark=False)

    @contextlib.contextmanager
    def snapshot_transaction(self) -> Iterator[SqlTx]:
        """Reads that must agree with each other: every statement sees the same snapshot (a read
        transaction sees each statement's own, the connections being in autocommit)."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield SqlTx(curs, qmark=False)

    def insert_entries(self, tx: SqlTx, stored_events: Sequence[StoredEvent], head: int) -> list[int]:
        """Inserts with the notification ids given, head + 1 onwards, instead of reading them back.

        The library lets the sequence number the rows and returns the ids, which costs a round trip
        before the projections (which need the positions) can be written. Under the writers' lock no
        other transaction inserts, so the next ids are known: the rows, the
        projections and the COMMIT then travel together. The sequence is moved along so that the
        library's own insert path would continue after them."""
        positions = list(range(head + 1, head + 1 + len(stored_events)))
        # The states are our UTF-8 JSON: sent as text (see BulkInsert: bytea columns).
        rows = [
            (e.originator_id, e.originator_version, e.topic, e.state.decode(), position)
            for e, position in zip(stored_events, positions, strict=True)
        ]
        if tx.collected is not None:  # a one-statement batch: its function notifies and moves the sequence
            EVENTS_INSERT.run(tx, rows)
            return positions
        curs: Any = tx.cursor
        self._notify_channel(curs)
        EVENTS_INSERT.run(tx, rows)
        curs.execute(_PG_SEQUENCE_MOVE, (positions[-1],))
        return positions


class SQLiteLedgerRecorder(_HeadAndClose, SQLiteApplicationRecorder):
    """SQLite: BEGIN IMMEDIATE takes the database's one write lock, across processes on this machine."""

    head_sql = _SQLITE_HEAD
    qmark = True
    migrations_applied: tuple[Migration, ...] = ()  # by create_table, for the start's log
    one_statement_batches = False  # in-process reads cost nothing: always read first

    def batch_rows(self, rows: dict[str, list[Sequence[Any]]]) -> BatchRows:
        raise NotImplementedError("SQLite batches are recorded the ordinary way")

    def write_collected(self, collected: BatchRows, head: int, last_position: int) -> None:
        raise NotImplementedError("SQLite batches are recorded the ordinary way")

    def send_collected(self, collected: BatchRows, head: int, last_position: int) -> SentBatch:
        raise NotImplementedError("SQLite batches are recorded the ordinary way")

    def lost_optimistic_bet(self, error: Exception) -> bool:
        return False

    def __init__(self, datastore: SQLiteDatastore) -> None:
        super().__init__(datastore, events_table_name=EVENTS_TABLE)

    def library_create_statements(self) -> list[str]:
        """The library's events table (migration 1)."""
        return super().construct_create_table_statements()

    def create_table(self) -> None:
        """The schema migrations this database lacks (ledger/storage/migrator.py)."""
        self.migrations_applied = sqlite_migrate(self)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[SqlTx]:
        with self.datastore.get_connection(commit=True) as conn:
            curs = conn.cursor()
            # WAL with synchronous=FULL: a commit is on disk before it is acknowledged.
            curs.execute("PRAGMA synchronous=FULL")
            curs.execute("BEGIN IMMEDIATE")
            try:
                yield SqlTx(curs, qmark=True)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[SqlTx]:
        with self.datastore.get_connection(commit=False) as conn:
            yield SqlTx(conn.cursor(), qmark=True)

    @contextlib.contextmanager
    def snapshot_transaction(self) -> Iterator[SqlTx]:
        """As on PostgreSQL: one BEGIN around the reads (in WAL mode its snapshot is taken at the
        first read and kept until the end), rolled back: it writes nothing."""
        with self.datastore.get_connection(commit=False) as conn, conn.transaction(commit=False) as curs:
            yield SqlTx(curs, qmark=True)

    def insert_entries(self, tx: SqlTx, stored_events: Sequence[StoredEvent], head: int) -> list[int]:
        """As on PostgreSQL: the rowids (the library's notification ids here) are given, head + 1
        onwards, which the write lock makes safe."""
        positions = list(range(head + 1, head + 1 + len(stored_events)))
        tx.cursor.executemany(
            f"INSERT INTO {EVENTS_TABLE} (rowid, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (p, e.originator_id, e.originator_version, e.topic, e.state)
                for e, p in zip(stored_events, positions, strict=True)
            ],
        )
        return positions


CONNECT_TIMEOUT_S = 3.0


def sqlite_file(database_url: str) -> str | None:
    """The file of a `sqlite:///` URL (sqlite:///ledger.db is relative, sqlite:////var/lib/ledger.db
    absolute), or None for any other database."""
    parts = urlsplit(database_url)
    if parts.scheme != "sqlite":
        return None
    return unquote(parts.path)[1:] or "ledger.db"


def open_recorder(
    database_url: str,
    pool_size: int,
    lock_timeout_s: int,
    *,
    create_tables: bool = True,
    migration_wait_s: int = MIGRATION_WAIT_S_DEFAULT,
    deadlock_timeout_ms: int = DEADLOCK_TIMEOUT_MS_DEFAULT,
    copy_rows_min: int = COPY_ROWS_MIN_DEFAULT,
) -> Any:
    """A recorder for `sqlite:///path` or `postgresql://user:pass@host:port/db`; the schema brought
    up to date (ledger/storage/migrator.py; SchemaTooNew if it needs a newer release) unless
    `create_tables` is false (a reader that must not change the database: `ledger verify`,
    `ledger migrate --check`)."""
    parts = urlsplit(database_url)
    recorder: Any
    path = sqlite_file(database_url)
    if path is not None:
        datastore = SQLiteDatastore(
            path,
            lock_timeout=lock_timeout_s,
            pool_size=pool_size,
            originator_id_type="text",
        )
        recorder = SQLiteLedgerRecorder(datastore)
    elif parts.scheme in ("postgresql", "postgres"):
        pg_datastore = LedgerPostgresDatastore(
            dbname=parts.path.lstrip("/") or "postgres",
            # ?host=/a/dir names a Unix socket directory, as libpq's URIs allow.
            host=parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0],
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
        )
        recorder = PostgresLedgerRecorder(pg_datastore, migration_wait_s, copy_rows_min)
    else:
        raise ValueError(
            f"LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://, not {parts.scheme!r}"
        )
    if create_tables:
        recorder.create_table()
    return recorder
