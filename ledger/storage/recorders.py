"""The eventsourcing library's application recorders, extended for group commit.

The library records one list of events per transaction. The ledger needs more in that same
transaction: take the writers' lock, read the current state, decide every event of a
batch, insert the events, and write the projections. So each recorder here adds
`write_transaction()` (the writers' lock taken first) and `insert_entries()` (the library's own
insert, on the caller's cursor), and `log_page()` (the replay's lean read of the log). The
events table and notification ids are the library's. DESIGN.md explains why.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg.errors import DuplicateObject
from psycopg.rows import tuple_row

from ledger.projections.tables import BATCH_INSERTS
from ledger.sql import BulkInsert, SqlTx
from ledger.storage.migrations import Migration
from ledger.storage.migrator import (
    MIGRATION_WAIT_S_DEFAULT,
    pg_in_schema,
    pg_migrate,
    pg_schema_lock,
    sqlite_migrate,
)
from ledger.storage.pg_sessions import bounded_waits
from ledger.storage.sent_statements import SentBatch, flush, prepare
from ledger.storage.writers_lock import in_plpgsql, writers_lock_statements

EVENTS_TABLE = "ledger_events"
# LEDGER_DB_WRITER_ANSWER_WAIT_S: the writer's wait for one answer of PostgreSQL (pg_sessions.py).
WRITER_ANSWER_WAIT_S_DEFAULT = 60.0


class LedgerRecorder(Protocol):
    """What the writer, the readers and the rebuild need from a database."""

    head_sql: str
    # The optimistic batch (see Writer._record_optimistically): the whole transaction as one
    # statement, which fails unless the log's head is the given one; and whether an error means
    # "lost the bet".
    one_statement_batches: bool

    def write_collected(self, collected: dict[str, str], head: int, last_position: int) -> None: ...
    def send_collected(self, collected: dict[str, str], head: int, last_position: int) -> SentBatch: ...
    def lost_optimistic_bet(self, error: Exception) -> bool: ...

    def write_transaction(self, *, bounded: bool = False) -> contextlib.AbstractContextManager[SqlTx]: ...
    def read_transaction(
        self, *, bounded: bool = False, answer_wait_s: float | None = None
    ) -> contextlib.AbstractContextManager[SqlTx]: ...
    def snapshot_transaction(
        self, *, answer_wait_s: float | None = None
    ) -> contextlib.AbstractContextManager[SqlTx]: ...
    def plain_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def insert_entries(self, tx: SqlTx, stored_events: Sequence[StoredEvent], head: int) -> list[int]: ...
    def head(self, tx: SqlTx) -> int: ...
    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]: ...
    def create_table(self) -> None: ...
    def close(self) -> None: ...


# A stored entry as the replay reads it: its notification id, store (the library's originator),
# type (topic) and state.
LogEntry = tuple[int, str, str, bytes]
# PostgreSQL: the log's pages are read again after a connection lost on the way, as the library's
# own reader of the log does there (the same errors, attempts and wait).
LOG_READ_ATTEMPTS_MAX = 10
LOG_READ_RETRY_WAIT_S = 0.2
_LOG_READ_RETRIES = retry(
    (InterfaceError, OperationalError), max_attempts=LOG_READ_ATTEMPTS_MAX, wait=LOG_READ_RETRY_WAIT_S
)

_PG_HEAD = f"SELECT COALESCE(MAX(notification_id), 0) AS head FROM {EVENTS_TABLE}"
_PG_LOG_PAGE = (
    f"SELECT notification_id, originator_id, topic, state FROM {EVENTS_TABLE} "
    "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id LIMIT %s"
)
_PG_EVENTS = BulkInsert(
    "events",
    EVENTS_TABLE,
    [
        ("originator_id", "text"),
        ("originator_version", "bigint"),
        ("topic", "text"),
        ("state", "bytea"),
        ("notification_id", "bigint"),
    ],
)
_PG_SNAPSHOT_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_PG_SEQUENCE_MOVE = f"SELECT setval(pg_get_serial_sequence('{EVENTS_TABLE}', 'notification_id'), %s) AS moved"
_SQLITE_HEAD = f"SELECT COALESCE(MAX(rowid), 0) AS head FROM {EVENTS_TABLE}"
_SQLITE_LOG_PAGE = (
    f"SELECT rowid, originator_id, topic, state FROM {EVENTS_TABLE} "
    "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
)
_PG_BATCH_INSERTS = (_PG_EVENTS, *BATCH_INSERTS)
_PG_BATCH_FUNCTION_PREFIX = "ledger_write_batch_"
_PG_FUNCTION_NAME_PLACEHOLDER = "{function}"


def _pg_batch_call(function: str) -> str:
    return (
        f"SELECT {function}(%s, %s, "
        + ", ".join("%s::jsonb" for _ in _PG_BATCH_INSERTS)
        + ") AS last_position"
    )


def _pg_batch_call_raw(function: str) -> bytes:
    return (
        f"SELECT {function}($1::bigint, $2::bigint, "
        + ", ".join(f"${n}::jsonb" for n in range(3, 3 + len(_PG_BATCH_INSERTS)))
        + ") AS last_position"
    ).encode()


def _pg_named_batch_function(lock_statements: Sequence[str], channel: str) -> tuple[str, str]:
    """The batch function's name and its CREATE statement. The name is made from the function's
    text, so that every release (and every lock timeout) has a function of its own: during a
    rolling upgrade, instances of two releases call two functions, and neither start replaces the
    function the other calls (an earlier release's is dropped by a contract migration later)."""
    text = _pg_batch_function(lock_statements, channel)
    name = _PG_BATCH_FUNCTION_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]
    return name, text.replace(_PG_FUNCTION_NAME_PLACEHOLDER, name, 1)


def _pg_batch_function(lock_statements: Sequence[str], channel: str) -> str:
    """A whole optimistic batch as one PL/pgSQL function: the writers' lock, a check that the log's
    head is the one the writer decided against, then every insert the ordinary path makes (the same
    statements, the rows as jsonb arguments), the sequence moved past the given ids, the library's
    NOTIFY. Called as one statement in autocommit, it is one transaction and one round trip, and
    its plans are cached by the server; a moved head fails it with serialization_failure."""
    arguments = ", ".join(f"p_{insert.name} jsonb" for insert in _PG_BATCH_INSERTS)
    inserts = "\n    ".join(
        f"IF jsonb_array_length(p_{insert.name}) > 0 THEN {insert.function_sql(f'p_{insert.name}')}; END IF;"
        for insert in _PG_BATCH_INSERTS[1:]
    )
    locks = "\n    ".join(f"{statement};" for statement in lock_statements)
    return f"""CREATE OR REPLACE FUNCTION {_PG_FUNCTION_NAME_PLACEHOLDER}(
    p_head bigint, p_last bigint, {arguments}) RETURNS bigint LANGUAGE plpgsql AS $ledger$
BEGIN
    {locks}
    IF (SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}) <> p_head THEN
        RAISE EXCEPTION 'the log has moved past position %', p_head
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF p_last > p_head THEN
        {_PG_EVENTS.function_sql("p_events")};
        PERFORM setval(pg_get_serial_sequence('{EVENTS_TABLE}', 'notification_id'), p_last);
        NOTIFY {channel};
    END IF;
    {inserts}
    RETURN p_last;
END
$ledger$"""


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
        writer_answer_wait_s: float = WRITER_ANSWER_WAIT_S_DEFAULT,
    ) -> None:
        super().__init__(datastore, events_table_name=EVENTS_TABLE)
        self.writer_answer_wait_s = writer_answer_wait_s
        # The library runs these first in every transaction that inserts events (_lock_table).
        self.lock_table_statements = writers_lock_statements(
            datastore.schema, EVENTS_TABLE, datastore.lock_timeout
        )
        self.migration_wait_s = migration_wait_s
        # Connections on which the batch call is a named prepared statement. Unnamed, the server
        # parsed and planned the call anew each time: 35 µs of its CPU a batch (measured).
        self._batch_call_prepared: weakref.WeakSet[Any] = weakref.WeakSet()
        locks = [in_plpgsql(_sql_text(statement)) for statement in self.lock_table_statements]
        self._batch_function, self._batch_function_sql = _pg_named_batch_function(locks, self.channel_name)
        self._batch_call = _pg_batch_call(self._batch_function)
        self._batch_call_raw = _pg_batch_call_raw(self._batch_function)
        self._batch_call_name = f"{self._batch_function}_call".encode()

    def create_table(self) -> None:
        """The schema migrations this database lacks (ledger/storage/migrator.py), then this
        release's batch function if the database has none of its shape yet."""
        self.migrations_applied = pg_migrate(self, self.migration_wait_s)
        self.datastore.register_type_adapters()
        self.create_batch_function()

    @property
    def batch_function(self) -> str:
        return self._batch_function

    def create_batch_function(self) -> None:
        """This release's batch function, unless the database has it, in the log's schema."""
        with self.datastore.get_connection() as conn, pg_in_schema(conn, self.datastore.schema):
            exists = conn.execute(
                "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
                (self._batch_function,),
            ).fetchone()
            if exists is not None:
                return
            # Under the service's lock: two CREATE OR REPLACE at once collide on the catalog.
            with pg_schema_lock(conn, self.migration_wait_s):
                conn.execute(self._batch_function_sql.encode())

    def drop_other_batch_functions(self) -> list[str]:
        """Drops the batch functions of other releases and settings (each one's name is its text's
        digest), keeping this one's; returns the names dropped. For once no instance of an earlier
        release runs: an instance of this release whose function is gone makes it again, at the
        cost of one batch recorded the ordinary way (`lost_optimistic_bet`)."""
        with (
            self.datastore.get_connection() as conn,
            pg_in_schema(conn, self.datastore.schema),
            pg_schema_lock(conn, self.migration_wait_s),
        ):
            rows = conn.execute(
                "SELECT oid::regprocedure::text AS signature, proname FROM pg_proc "
                "WHERE proname LIKE %s AND proname <> %s "
                "AND pronamespace = current_schema()::regnamespace",
                (_PG_BATCH_FUNCTION_PREFIX.replace("_", r"\_") + "%", self._batch_function),
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

    def write_collected(self, collected: dict[str, str], head: int, last_position: int) -> None:
        """One statement, one transaction, one round trip: see _pg_batch_function."""
        arguments = [collected.get(insert.name, "[]") for insert in _PG_BATCH_INSERTS]
        with self.datastore.get_connection() as conn, bounded_waits(conn, self.writer_answer_wait_s):
            conn.execute(self._batch_call, (head, last_position, *arguments), prepare=True)

    def send_collected(self, collected: dict[str, str], head: int, last_position: int) -> SentBatch:
        """The same statement, sent without waiting for it: the caller decides its next batch
        while the server records this one, then waits (`SentBatch.wait`)."""
        arguments = [collected.get(insert.name, "[]").encode() for insert in _PG_BATCH_INSERTS]
        stack = contextlib.ExitStack()
        conn = stack.enter_context(self.datastore.get_connection())
        pgconn = conn.pgconn
        try:
            # psycopg keeps its connections non-blocking: the whole statement is flushed before this
            # returns, to the writer's answer wait (a server that stops reading is left).
            if conn not in self._batch_call_prepared:
                prepare(conn, self._batch_call_name, self._batch_call_raw, self.writer_answer_wait_s)
                self._batch_call_prepared.add(conn)
            pgconn.send_query_prepared(
                self._batch_call_name, [str(head).encode(), str(last_position).encode(), *arguments]
            )
            flush(conn, time.monotonic() + self.writer_answer_wait_s, self.writer_answer_wait_s)
        except BaseException:
            stack.close()
            raise
        # From here on the statement may commit: only its result says whether it did.
        return SentBatch(conn, stack, self.writer_answer_wait_s)

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
    def write_transaction(self, *, bounded: bool = False) -> Iterator[SqlTx]:
        """The whole transaction runs in pipeline mode: statements are queued and travel together
        whenever a result is needed, so a batch costs about three round trips (lock and reads;
        the event insert; the projections and COMMIT). Fewer round trips also means fewer GIL
        hand-offs between this thread and the event loop, which is what limited throughput.
        `bounded`: each wait for the server ends after `writer_answer_wait_s` (the writer's own
        transactions; a locked rebuild's long statements are not bounded)."""
        with (
            self.datastore.get_connection() as conn,
            bounded_waits(conn, self.writer_answer_wait_s) if bounded else contextlib.nullcontext(),
            conn.pipeline(),
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._lock_table(curs)  # queued: it runs before anything this transaction reads
            yield SqlTx(curs, qmark=False, connection=conn)

    @contextlib.contextmanager
    def read_transaction(
        self, *, bounded: bool = False, answer_wait_s: float | None = None
    ) -> Iterator[SqlTx]:
        """`bounded`: as write_transaction's (the writer's own reads, before it decides a batch);
        `answer_wait_s`: each wait for the server ends after it (a reader's own bound)."""
        if answer_wait_s is None and bounded:
            answer_wait_s = self.writer_answer_wait_s
        with (
            self.datastore.get_connection() as conn,
            bounded_waits(conn, answer_wait_s) if answer_wait_s is not None else contextlib.nullcontext(),
            conn.cursor() as curs,
        ):
            yield SqlTx(curs, qmark=False)

    @_LOG_READ_RETRIES
    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]:
        """The entries after notification id `after`, up to `stop`, at most `limit`, in order: the
        library's `select_notifications` without what the replay does not use. Tuples in binary
        form, not the library's dict rows, notifications and hex-encoded states: the library's
        reader was a seventh of the replay's CPU (bench/README.md, the rebuild)."""
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as curs,
        ):
            curs.execute(_PG_LOG_PAGE, (after, stop, limit), prepare=True)
            rows: list[LogEntry] = curs.fetchall()
            return rows

    def log_page_in(self, tx: SqlTx, after: int, stop: int, limit: int) -> list[LogEntry]:
        """`log_page` in a write transaction (`tx`, which holds the log's writers' lock and ROW
        EXCLUSIVE on it: the rebuild's swap). On another connection the read would queue behind any
        ACCESS EXCLUSIVE request on the log made meanwhile (VACUUM FULL, ALTER TABLE), which
        waits for `tx`: a circle through the client that PostgreSQL cannot see, and every write
        would wait until that request gave up. The server lets the transaction that holds such a request
        up go ahead of it. No retry: a lost connection loses `tx` with it."""
        assert tx.connection is not None, "a write transaction's"
        with tx.connection.cursor(row_factory=tuple_row, binary=True) as curs:
            curs.execute(_PG_LOG_PAGE, (after, stop, limit))
            rows: list[LogEntry] = curs.fetchall()
            return rows

    @contextlib.contextmanager
    def snapshot_transaction(self, *, answer_wait_s: float | None = None) -> Iterator[SqlTx]:
        """Reads that must agree with each other: every statement sees the same snapshot (a read
        transaction sees each statement's own, the connections being in autocommit).
        `answer_wait_s`: as read_transaction's. BEGIN and COMMIT are queued in pipeline mode, to
        travel with the first read and with the end's sync: one round trip more than a read
        transaction's, where psycopg's own transaction block in autocommit costs three (BEGIN,
        SET, COMMIT) or, pipelined, four (it syncs at BEGIN and twice at the end)."""
        with (
            self.datastore.get_connection() as conn,
            bounded_waits(conn, answer_wait_s) if answer_wait_s is not None else contextlib.nullcontext(),
            conn.cursor() as curs,
        ):
            try:
                with conn.pipeline():
                    curs.execute(_PG_SNAPSHOT_BEGIN)
                    yield SqlTx(curs, qmark=False, connection=conn)  # tx.defer: reads sent together
                    curs.execute("COMMIT")
            except BaseException:
                # As psycopg's own transaction block: rolled back, an error on the way ignored (the
                # pool drops a broken connection).
                if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                raise

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
            _PG_EVENTS.run(tx, rows)
            return positions
        curs: Any = tx.cursor
        self._notify_channel(curs)
        _PG_EVENTS.run(tx, rows)
        curs.execute(_PG_SEQUENCE_MOVE, (positions[-1],))
        return positions


class SQLiteLedgerRecorder(_HeadAndClose, SQLiteApplicationRecorder):
    """SQLite: BEGIN IMMEDIATE takes the database's one write lock, across processes on this machine."""

    head_sql = _SQLITE_HEAD
    qmark = True
    migrations_applied: tuple[Migration, ...] = ()  # by create_table, for the start's log
    one_statement_batches = False  # in-process reads cost nothing: always read first

    def write_collected(self, collected: dict[str, str], head: int, last_position: int) -> None:
        raise NotImplementedError("SQLite batches are recorded the ordinary way")

    def send_collected(self, collected: dict[str, str], head: int, last_position: int) -> SentBatch:
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
    def write_transaction(self, *, bounded: bool = False) -> Iterator[SqlTx]:
        """`bounded` is PostgreSQL's: here a lock is waited for `lock_timeout` at most, and the
        file is this machine's."""
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
    def plain_transaction(self) -> Iterator[SqlTx]:
        """SQLite has one write lock, the log's and every other table's, so a plain transaction takes
        it from its start: one begun as a reader (the tokens' and the feed cursor's read first) that
        another connection wrote past cannot become a writer, and SQLite refuses it at once with
        "database is locked", whatever the busy timeout (SQLITE_BUSY_SNAPSHOT)."""
        with self.write_transaction() as tx:
            yield tx

    @contextlib.contextmanager
    def read_transaction(
        self, *, bounded: bool = False, answer_wait_s: float | None = None
    ) -> Iterator[SqlTx]:
        """The bounds are PostgreSQL's: here a read never waits for a writer (WAL), and the file
        is this machine's."""
        with self.datastore.get_connection(commit=False) as conn:
            yield SqlTx(conn.cursor(), qmark=True)

    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]:
        """As on PostgreSQL, without its retry (nor has the library's reader one here: a local
        file's error is not a lost connection); the rowids are the library's notification ids."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(_SQLITE_LOG_PAGE, (after, stop, limit))
            return [(row[0], row[1], row[2], bytes(row[3])) for row in cursor.fetchall()]

    @contextlib.contextmanager
    def snapshot_transaction(self, *, answer_wait_s: float | None = None) -> Iterator[SqlTx]:
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
