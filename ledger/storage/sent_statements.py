"""A statement sent on a libpq connection and waited for to a deadline: the writer's one-statement
batch (PostgresLedgerRecorder.send_collected) and the prepare of its call. psycopg's own waits are
bounded by `pg_sessions.WaitsBounded`; these run on libpq directly, so that the writer decides its
next batch while the server records this one, and keep the same bound: a server that stops reading
or answering is left (`pg_sessions.left_unanswered`) with NoAnswer, whether the batch committed unknown.
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

import psycopg

from ledger.storage.pg_sessions import WAIT_INTERVAL_S, left_unanswered


def prepare(conn: Any, name: bytes, sql: bytes, answer_wait_s: float) -> None:
    """Prepares `sql` as the statement `name` on `conn`, within `answer_wait_s`."""
    pgconn = conn.pgconn
    deadline = time.monotonic() + answer_wait_s
    pgconn.send_prepare(name, sql)
    flush(conn, deadline, answer_wait_s)
    error: psycopg.Error | None = None
    while (result := _next_result(conn, deadline, answer_wait_s)) is not None:
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK and error is None:
            error = error_of(result)
    if error is not None:
        raise error


def _wait_for_socket(pgconn: Any, events: int, left_s: float) -> int:
    """poll(2), not select: a descriptor past 1023 is refused there. The events that came, or 0."""
    waiting = select.poll()
    waiting.register(pgconn.socket, events)
    found = waiting.poll(min(left_s, WAIT_INTERVAL_S) * 1000)
    return found[0][1] if found else 0


def flush(conn: Any, deadline: float, answer_wait_s: float) -> None:
    """Sends what libpq holds of a statement (a batch's arguments can be megabytes) until the
    `deadline`: a server that stops reading is left like one that does not answer. What it sends
    meanwhile is read, so that neither side waits for the other."""
    pgconn = conn.pgconn
    while pgconn.flush() == 1:
        left = deadline - time.monotonic()
        if left <= 0:
            raise left_unanswered(conn, answer_wait_s)
        if _wait_for_socket(pgconn, select.POLLOUT | select.POLLIN, left) & select.POLLIN:
            pgconn.consume_input()


def _next_result(conn: Any, deadline: float, answer_wait_s: float) -> Any:
    """libpq's next result of what was sent on `conn`, or None when there is no more, waited for
    until `deadline` (then the session is left: NoAnswer)."""
    pgconn = conn.pgconn
    while pgconn.is_busy():
        left = deadline - time.monotonic()
        if left <= 0:
            raise left_unanswered(conn, answer_wait_s)
        _wait_for_socket(pgconn, select.POLLIN, left)
        pgconn.consume_input()
    return pgconn.get_result()


class SentBatch:
    """A one-statement batch on its way (PostgresLedgerRecorder.send_collected)."""

    def __init__(self, conn: Any, stack: contextlib.ExitStack, answer_wait_s: float) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self._stack = stack
        self._answer_wait_s = answer_wait_s

    def wait(self) -> None:
        """Until the server has recorded it, or failed it: raises psycopg's error for its
        SQLSTATE (SerializationFailure for a moved head, as write_collected would). A server that
        has not answered within the writer's answer wait is left (`left_unanswered`) with NoAnswer:
        whether the batch committed is then unknown, as after a lost connection."""
        try:
            # Sent whole (send_collected); the answer is waited for without blocking, to a deadline.
            deadline = time.monotonic() + self._answer_wait_s
            error: psycopg.Error | None = None
            while (result := _next_result(self._conn, deadline, self._answer_wait_s)) is not None:
                if result.status == psycopg.pq.ExecStatus.FATAL_ERROR and error is None:
                    error = error_of(result)
            if error is None and self._pgconn.status != psycopg.pq.ConnStatus.OK:
                error = psycopg.OperationalError("the connection was lost while the batch was recorded")
            if error is not None:
                raise error
        finally:
            self._stack.close()


def error_of(result: Any) -> psycopg.Error:
    """psycopg's error for a failed libpq result, by its SQLSTATE."""
    sqlstate = (result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode()
    return error_for(sqlstate, (result.error_message or b"").decode(errors="replace").strip())


def error_for(sqlstate: str, message: str) -> psycopg.Error:
    try:
        return psycopg.errors.lookup(sqlstate)(message)
    except KeyError:
        return psycopg.DatabaseError(f"{message} (SQLSTATE {sqlstate!r})")
