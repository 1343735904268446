"""PostgreSQL's one-statement batch: a whole decided batch recorded by one call of a PL/pgSQL
function, which takes the writers' lock, checks the log's head, and makes every insert the
ordinary path makes (ledger/storage/recorders.py, PostgresLedgerRecorder).

The batch's rows reach the function in one of two ways:
- as JSON, one jsonb argument per insert, unpacked by the server: one round trip, which is what a
  batch of a few events needs;
- by COPY (a batch of at least `copy_rows_min` rows, an import's or a busy writer's): binary COPY
  into this session's staging tables, then the function's twin that inserts from them, all in one
  transaction. The server takes binary rows for about a third of what unpacking their JSON costs
  it (bench/README.md, the rebuild's fill; the import's batches); the COPYs cost a round trip each.

The staging tables are temporary (this connection's own, never WAL-logged) and ON COMMIT DELETE
ROWS: a committed batch empties them, and a failed one leaves rows that nothing reads (rolled
back) until the next commit empties them too.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from ledger.projections.tables import BATCH_INSERTS
from ledger.sql import BulkInsert, copy_type_name

EVENTS_TABLE = "ledger_events"
EVENTS_INSERT = BulkInsert(
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
ONE_STATEMENT_INSERTS = (EVENTS_INSERT, *BATCH_INSERTS)
BATCH_FUNCTION_PREFIX = "ledger_write_batch_"
_FUNCTION_NAME_PLACEHOLDER = "{function}"
# Rows of a batch (every insert's together) from which it goes by COPY: at 1,000 rows the server
# saves several milliseconds of JSON, against well under one for the COPYs' extra round trips.
COPY_ROWS_MIN_DEFAULT = 1000


class BatchRows:
    """A one-statement batch's inserts, ready to send: by insert name, the rows, and their JSON
    unless the batch goes by COPY. Made while the batch before is in flight (the JSON is the
    costly part), so that sending it does no more than send."""

    def __init__(self, rows: dict[str, list[Sequence[Any]]], *, by_copy: bool) -> None:
        self.rows = rows
        self.by_copy = by_copy
        self._json: dict[str, str] | None = None
        if not by_copy:
            self.json()

    @property
    def count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def json(self) -> dict[str, str]:
        """The rows as the function's jsonb arguments (the bytea columns' values are text)."""
        if self._json is None:
            self._json = {name: orjson.dumps(rows).decode() for name, rows in self.rows.items()}
        return self._json


def _staging_table(insert: BulkInsert) -> str:
    return f"ledger_staged_{insert.name}"


def _staging_columns(insert: BulkInsert) -> list[tuple[str, str]]:
    """The insert's columns as staged: bytea is sent as its UTF-8 text (our JSON event states),
    as the JSON path sends it, and converted by the function."""
    return [(name, "text" if pg_type == "bytea" else pg_type) for name, pg_type in insert.columns]


STAGING_DDL = tuple(
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_staging_table(insert)} ("
    + ", ".join(f"{name} {pg_type}" for name, pg_type in _staging_columns(insert))
    + ") ON COMMIT DELETE ROWS"
    for insert in ONE_STATEMENT_INSERTS
)


def _staged_insert_sql(insert: BulkInsert) -> str:
    names = ", ".join(name for name, _ in insert.columns)
    values = ", ".join(
        f"convert_to({name}, 'UTF8')" if pg_type == "bytea" else name for name, pg_type in insert.columns
    )
    staging = f"pg_temp.{_staging_table(insert)}"
    return f"INSERT INTO {insert.table} ({names}) SELECT {values} FROM {staging} {insert.suffix}"


def _staging_copy(insert: BulkInsert) -> tuple[str, list[str]]:
    """The COPY into the insert's staging table, and its columns' types as psycopg names them."""
    columns = _staging_columns(insert)
    names = ", ".join(name for name, _ in columns)
    return (
        f"COPY pg_temp.{_staging_table(insert)} ({names}) FROM STDIN (FORMAT BINARY)",
        [copy_type_name(pg_type) for _, pg_type in columns],
    )


_STAGING_COPIES = {insert.name: _staging_copy(insert) for insert in ONE_STATEMENT_INSERTS}


def batch_call(function: str) -> str:
    """The JSON function's call, with psycopg's placeholders."""
    return (
        f"SELECT {function}(%s, %s, "
        + ", ".join("%s::jsonb" for _ in ONE_STATEMENT_INSERTS)
        + ") AS last_position"
    )


def batch_call_raw(function: str) -> bytes:
    """The same call as libpq prepares it ($n placeholders)."""
    return (
        f"SELECT {function}($1::bigint, $2::bigint, "
        + ", ".join(f"${n}::jsonb" for n in range(3, 3 + len(ONE_STATEMENT_INSERTS)))
        + ") AS last_position"
    ).encode()


def json_arguments(rows: BatchRows) -> list[str]:
    json = rows.json()
    return [json.get(insert.name, "[]") for insert in ONE_STATEMENT_INSERTS]


def named_batch_functions(
    lock_statements: Sequence[str], channel: str
) -> tuple[tuple[str, str], tuple[str, str]]:
    """The two functions' names and CREATE statements: the JSON one, and its twin that reads the
    staging tables. Each name is made from its function's text, so that every release (and every
    lock timeout) has functions of its own: during a rolling upgrade, instances of two releases
    call their own, and neither start replaces a function the other calls (an earlier release's
    are dropped by a contract migration later)."""
    return (
        _named(_batch_function(lock_statements, channel, staged=False)),
        _named(_batch_function(lock_statements, channel, staged=True)),
    )


def _named(text: str) -> tuple[str, str]:
    name = BATCH_FUNCTION_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]
    return name, text.replace(_FUNCTION_NAME_PLACEHOLDER, name, 1)


def _batch_function(lock_statements: Sequence[str], channel: str, *, staged: bool) -> str:
    """A whole optimistic batch as one PL/pgSQL function: the writers' lock, a check that the log's
    head is the one the writer decided against, then every insert the ordinary path makes (the same
    statements; the rows from jsonb arguments, or `staged`, from the staging tables), the sequence
    moved past the given ids, the library's NOTIFY. Its plans are cached by the server; a moved
    head fails it with serialization_failure."""
    if staged:
        arguments = ""
        inserts = "\n    ".join(f"{_staged_insert_sql(insert)};" for insert in BATCH_INSERTS)
        events = _staged_insert_sql(EVENTS_INSERT)
    else:
        arguments = ", " + ", ".join(f"p_{insert.name} jsonb" for insert in ONE_STATEMENT_INSERTS)
        inserts = "\n    ".join(
            f"IF jsonb_array_length(p_{insert.name}) > 0 THEN "
            f"{insert.function_sql(f'p_{insert.name}')}; END IF;"
            for insert in BATCH_INSERTS
        )
        events = EVENTS_INSERT.function_sql("p_events")
    locks = "\n    ".join(f"{statement};" for statement in lock_statements)
    return f"""CREATE OR REPLACE FUNCTION {_FUNCTION_NAME_PLACEHOLDER}(
    p_head bigint, p_last bigint{arguments}) RETURNS bigint LANGUAGE plpgsql AS $ledger$
BEGIN
    {locks}
    IF (SELECT COALESCE(MAX(notification_id), 0) FROM {EVENTS_TABLE}) <> p_head THEN
        RAISE EXCEPTION 'the log has moved past position %', p_head
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF p_last > p_head THEN
        {events};
        PERFORM setval(pg_get_serial_sequence('{EVENTS_TABLE}', 'notification_id'), p_last);
        NOTIFY {channel};
    END IF;
    {inserts}
    RETURN p_last;
END
$ledger$"""


def prepare(pgconn: Any, name: bytes, sql: bytes) -> None:
    result = pgconn.prepare(name, sql)
    if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        raise error_of(result)


def stage(conn: Any, rows: BatchRows) -> None:
    """Opens the batch's transaction on `conn` and COPYs its rows into the staging tables (which
    must exist on this connection: STAGING_DDL)."""
    conn.execute("BEGIN")
    with conn.cursor() as cursor:
        for name, batch in rows.rows.items():
            if not batch:
                continue
            sql, types = _STAGING_COPIES[name]
            with cursor.copy(sql) as copy:
                copy.set_types(types)
                for row in batch:
                    copy.write_row(row)


def staged_call(function: str, head: int, last_position: int) -> bytes:
    """The staged function's call and the COMMIT, as one simple query (the two are integers)."""
    return f"SELECT {function}({int(head)}, {int(last_position)}) AS last_position; COMMIT".encode()


class SentBatch:
    """A one-statement batch on its way (PostgresLedgerRecorder.send_collected)."""

    def __init__(self, pgconn: Any, stack: contextlib.ExitStack) -> None:
        self._pgconn = pgconn
        self._stack = stack

    def wait(self) -> None:
        """Until the server has recorded it, or failed it: raises psycopg's error for its
        SQLSTATE (SerializationFailure for a moved head, as write_collected would)."""
        try:
            error: psycopg.Error | None = None
            while (result := self._pgconn.get_result()) is not None:
                if result.status == psycopg.pq.ExecStatus.FATAL_ERROR and error is None:
                    error = error_of(result)
            if error is None and self._pgconn.status != psycopg.pq.ConnStatus.OK:
                error = psycopg.OperationalError("the connection was lost while the batch was recorded")
            if error is not None:
                raise error
        finally:
            with contextlib.suppress(Exception):
                end_failed_transaction(self._pgconn)
            with contextlib.suppress(Exception):
                self._pgconn.nonblocking = 1
            self._stack.close()


def end_failed_transaction(pgconn: Any) -> None:
    """Rolls back a staged batch's transaction that its call failed (the COMMIT after it never
    ran), so that the connection goes back to the pool idle."""
    status = psycopg.pq.TransactionStatus
    if pgconn.transaction_status in (status.INERROR, status.INTRANS):
        pgconn.exec_(b"ROLLBACK")


def error_of(result: Any) -> psycopg.Error:
    """psycopg's error for a failed libpq result, by its SQLSTATE."""
    sqlstate = (result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode()
    message = (result.error_message or b"").decode(errors="replace").strip()
    try:
        return psycopg.errors.lookup(sqlstate)(message)
    except KeyError:
        return psycopg.DatabaseError(f"{message} (SQLSTATE {sqlstate!r})")
