"""PostgreSQL: how the ledger's sessions are set up, beyond what the library sets.

Autovacuum (and autoanalyze) takes SHARE UPDATE EXCLUSIVE on the table it works on. PostgreSQL
cancels an autovacuum that blocks someone, but only when the waiting session runs its deadlock
check, `deadlock_timeout` after it began to wait: 1 s by default. The writers' lock does not wait
for it (ledger/storage/writers_lock.py), but `ledger rebuild`'s swap does (ACCESS EXCLUSIVE on
projections being vacuumed), whose lock timeout is shorter than 1 s: the vacuum would run on and
the attempt fail, every attempt. So does a migration's EXCLUSIVE lock on the log. A rebuild makes
autovacuum busier (its shadow tables are new, and it loads the machine).

So each session of the ledger sets `deadlock_timeout` to `db_deadlock_timeout_ms`. The parameter
is a superuser's: a role that may not set it (`GRANT SET ON PARAMETER deadlock_timeout TO …`, or
`ALTER ROLE … SET deadlock_timeout`, lift that) keeps the server's value, and the start says so.

A session whose client is gone must not hold what it holds for long: a writer's transaction holds
the writers' lock between its round trips, and every other instance's writes wait for it. With
the operating system's defaults a lost machine is found out after about two hours. So every
session has TCP keepalives on both ends and a user timeout (`KEEPALIVE_OPTIONS`: a lost peer is
found within seconds), and the server ends the session, and frees what it held.

(A client that froze, alive, still holds what it holds: the server's idle-in-transaction limit
would not reach a writer, whose transactions are pipelined and so never wait for it idle, and it
would end a rebuild, whose last rows are made whole before they are sent.)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
from eventsourcing.postgres import PostgresDatastore
from psycopg.abc import PQGen

log = logging.getLogger("ledger.storage")

# LEDGER_DB_DEADLOCK_TIMEOUT_MS: how long a session waits for a lock before PostgreSQL checks for a
# deadlock, and cancels an autovacuum that holds the lock. 0 keeps the server's value.
DEADLOCK_TIMEOUT_MS_DEFAULT = 100
# Both ends of a session find the other gone within seconds (libpq's keepalives, the server's
# tcp_keepalives_* and tcp_user_timeout); over a Unix socket they do not apply, and nothing is lost.
KEEPALIVE_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
    "-c tcp_user_timeout=15000",
}
# The longest a leader's query (taking its lock, or looking that its session lives: the feed's and
# the writers') waits for the server. Kept by the client: a statement_timeout would be kept by the
# very server that froze.
ANSWER_WAIT_S_MAX = 5.0
# How often a wait for the server looks up from it (psycopg's own default: a signal is served).
WAIT_INTERVAL_S = 0.1

Answer = TypeVar("Answer")

# The (server, port, database, role) whose refusal to set deadlock_timeout this process has told:
# a command opens the database more than once (to look at it, then to read or refuse it), and each
# opening would tell it again. At most DEADLOCK_REFUSALS_TOLD_MAX kept; past it, forgotten all at once.
DEADLOCK_REFUSALS_TOLD_MAX = 64
_deadlock_refusals_told: set[tuple[str, str, str, str]] = set()
_deadlock_refusals_lock = threading.Lock()


def _first_refusal_of(conn: psycopg.Connection[Any]) -> bool:
    """Whether this process has yet to tell that the connection's role may not set deadlock_timeout."""
    info = conn.info
    told_for = (str(info.host), str(info.port), str(info.dbname), str(info.user))
    with _deadlock_refusals_lock:
        if told_for in _deadlock_refusals_told:
            return False
        if len(_deadlock_refusals_told) >= DEADLOCK_REFUSALS_TOLD_MAX:
            _deadlock_refusals_told.clear()
        _deadlock_refusals_told.add(told_for)
        return True


class AnsweredInTime(psycopg.Connection[Any]):
    """A connection whose every wait for the server gives up after ANSWER_WAIT_S_MAX, with an
    OperationalError (psycopg's wait timeout); the connection is then closed."""

    def wait(
        self, gen: PQGen[Answer], interval: float = WAIT_INTERVAL_S, timeout: float | None = None
    ) -> Answer:
        return super().wait(gen, interval, ANSWER_WAIT_S_MAX if timeout is None else timeout)


# How long a connection that did not answer in time gets to cancel its statement before it is closed.
CANCEL_WAIT_S = 2.0


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the writer's answer wait: the session was cancelled and
    closed, and whether its last statement took effect is unknown. Not retried: every caller of the
    batch has long given up waiting (ledger/writer/batching.py)."""


# Every wait of the pool's connections made in this context (a thread's, a task's) ends after
# this, where the connection has no bound of its own: a read of code that takes its own
# connections, as the console's adapter page's plug-ins do (`answers_awaited_at_most`).
_CONTEXT_ANSWER_WAIT_S: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "ledger_answer_wait_s", default=None
)


@contextlib.contextmanager
def answers_awaited_at_most(answer_wait_s: float | None) -> Iterator[None]:
    """Within the block, on this thread (or task), each wait of the pool's connections for the
    server ends after `answer_wait_s` (None: no bound), as `bounded_waits` does for one connection."""
    token = _CONTEXT_ANSWER_WAIT_S.set(answer_wait_s)
    try:
        yield
    finally:
        _CONTEXT_ANSWER_WAIT_S.reset(token)


class WaitsBounded(psycopg.Connection[Any]):
    """The pool's connections: a wait for the server is bounded while `answer_wait_s` is set (the
    writer's statements: `bounded_waits`) or the context sets a bound (`answers_awaited_at_most`),
    and unbounded otherwise (a migration's index build, a
    locked rebuild's long statements). A wait that runs out cancels the statement, closes the
    connection (the pool then drops it) and raises NoAnswer: whether a write committed is
    then unknown, as after a lost connection. Kept by the client, not by statement_timeout: a
    server that froze, or a COMMIT waiting for a standby, would not keep it."""

    answer_wait_s: float | None = None

    def wait(
        self, gen: PQGen[Answer], interval: float = WAIT_INTERVAL_S, timeout: float | None = None
    ) -> Answer:
        bound = self.answer_wait_s if timeout is None else timeout
        if bound is None:
            bound = _CONTEXT_ANSWER_WAIT_S.get()
        if bound is None:
            return super().wait(gen, interval, None)
        try:
            return super().wait(gen, interval, bound)
        except psycopg.OperationalError:
            if self.pgconn.transaction_status != psycopg.pq.TransactionStatus.ACTIVE:
                raise  # the connection broke: psycopg says how
            raise left_unanswered(self, bound) from None


def left_unanswered(conn: psycopg.Connection[Any], answer_wait_s: float) -> NoAnswer:
    """Abandons a connection whose server did not answer within `answer_wait_s`; the error to raise."""
    abandon(conn)
    return NoAnswer(
        f"the database did not answer within {answer_wait_s:g} s: the session is closed, and "
        "whether its last statement took effect is unknown"
    )


def abandon(conn: psycopg.Connection[Any]) -> None:
    """Cancels what the connection runs (within CANCEL_WAIT_S) and closes it."""
    try:
        conn.cancel_safe(timeout=CANCEL_WAIT_S)
    except Exception as error:  # noqa: BLE001 - closed all the same
        log.debug("cancelling an unanswered statement: %s", error)
    conn.close()


@contextlib.contextmanager
def bounded_waits(conn: psycopg.Connection[Any], answer_wait_s: float) -> Iterator[None]:
    """Every wait of `conn` for the server within the block ends after `answer_wait_s`."""
    assert isinstance(conn, WaitsBounded), type(conn)
    conn.answer_wait_s = answer_wait_s
    try:
        yield
    finally:
        conn.answer_wait_s = None


def with_url_options(ours: dict[str, Any], url_options: dict[str, str]) -> dict[str, Any]:
    """The libpq options of LEDGER_DATABASE_URL's query (`sslmode`, `sslrootcert`, ...) over ours: a
    URL that asks for TLS gets it, as libpq would give it. Server settings (`options`) are added to
    ours, not put in their place, so that the keepalives stay."""
    merged = {**ours, **url_options}
    if "options" in ours and "options" in url_options:
        merged["options"] = f"{ours['options']} {url_options['options']}"
    return merged


def session_options(database_url: str) -> dict[str, Any]:
    """The keepalives for a session made from the URL itself (the leaders' own sessions), with the
    URL's server settings (`?options=`) added to theirs: passed beside the URL, ours alone would
    take their place."""
    url_options = psycopg.conninfo.conninfo_to_dict(database_url).get("options")
    return with_url_options(KEEPALIVE_OPTIONS, {"options": str(url_options)} if url_options else {})


class LedgerPostgresDatastore(PostgresDatastore):
    """The library's datastore, whose new connections also get the ledger's `deadlock_timeout` and
    keepalives (see the module's docstring)."""

    def __init__(
        self,
        *args: Any,
        deadlock_timeout_ms: int = DEADLOCK_TIMEOUT_MS_DEFAULT,
        url_options: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.deadlock_timeout_ms = deadlock_timeout_ms  # read by after_connect_func, in super().__init__
        super().__init__(*args, **kwargs)
        connect_with = self.pool.kwargs  # the library's dict, with which the (not yet opened) pool connects
        assert isinstance(connect_with, dict), connect_with
        connect_with.update(with_url_options(KEEPALIVE_OPTIONS, url_options or {}))
        self.pool.connection_class = WaitsBounded

    def after_connect_func(self) -> Callable[[psycopg.Connection[Any]], None]:
        library_setup = super().after_connect_func()
        timeout_ms = int(self.deadlock_timeout_ms)
        statement = f"SET deadlock_timeout = '{timeout_ms}ms'".encode()

        def after_connect(conn: psycopg.Connection[Any]) -> None:
            library_setup(conn)  # autocommit on: a refused SET leaves no failed transaction behind
            if timeout_ms <= 0:
                return
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege as refused:
                if _first_refusal_of(conn):  # once a process, not once a connection or an opening
                    log.warning(
                        "cannot set deadlock_timeout to %d ms (%s): a rebuild's swap or a migration that "
                        "finds autovacuum on a table waits up to the server's deadlock_timeout; "
                        "GRANT SET ON PARAMETER "
                        "deadlock_timeout to this role, or set LEDGER_DB_DEADLOCK_TIMEOUT_MS=0 to keep "
                        "the server's value",
                        timeout_ms,
                        str(refused).strip(),
                    )

        return after_connect
