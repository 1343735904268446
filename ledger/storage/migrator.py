"""Applies the schema migrations (ledger/storage/migrations.py) a database lacks, once, and records
each in `ledger_schema_versions`; refuses a database whose schema needs a newer release. A part
plugged into the ledger with tables of its own (the adapters) gives its own `SchemaHistory`.

Concurrent starts do not race: on PostgreSQL the migrations run under an advisory lock of the
service's own (session level, so that each migration can be a transaction of its own), and each
migration's transaction first takes EXCLUSIVE on the log, which waits for every writer, so that a
migration never interleaves with a batch (a lock taken in another order could deadlock); a fill
of a new table (migrations.FillInSteps) runs in transactions of its own, each taking that lock for
one step, so that writes wait for a step and not for the whole fill; an index on a large table
(migrations.IndexConcurrently) is built CONCURRENTLY, without that lock, as writes go on; on
SQLite they run inside one `BEGIN IMMEDIATE`, the database's write lock. Whoever gets the lock
second reads the recorded versions again and finds nothing left to do. A start that has nothing to
apply takes no lock at all: it reads the recorded versions and goes on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.errors import LockNotAvailable

from ledger.clock import utc_now, utc_text
from ledger.storage import migrations
from ledger.storage.migrations import LIBRARY_TABLES, MIGRATIONS, FillInSteps, IndexConcurrently, Migration

SCHEMA_LOCK_KEY = 0x1ED6E5  # a PostgreSQL advisory lock key of this service's own
# A migration's lock on the log is asked for in tries this far apart (_pg_exclusive_in_tries), each
# lasting this much past the session's deadlock_timeout: behind a vacuum of the log, writes pause
# for a try at a time, not for the whole vacuum, and a try still outlasts the deadlock check that
# cancels an autovacuum in its way (the two timers start together; at a tie, the try ends first).
EXCLUSIVE_TRY_PAST_DEADLOCK_CHECK_MS = 100
EXCLUSIVE_TRY_PAUSE_S = 0.5
MIGRATION_WAIT_S_DEFAULT = 600  # LEDGER_MIGRATION_WAIT_S: how long a start waits for another's migration
# The schema lock is asked for in tries this far apart (pg_schema_lock), never waited for in one
# statement: a statement that waits holds a snapshot, and a concurrent index build, run under that
# lock by whoever holds it, waits for every older snapshot: the two would deadlock.
SCHEMA_LOCK_TRY_PAUSE_S = 0.1
LOCK_HOLDERS_SHOWN = 3  # sessions named in the line of a migration that waited past its limit


@dataclass(frozen=True, slots=True)
class SchemaHistory:
    """A list of migrations and the table its applied versions are recorded in: the ledger's, or
    that of a part plugged into it (the adapters' own tables, adapters/migrations.py)."""

    versions_table: str
    migrations: tuple[Migration, ...]
    # Whether each migration first takes EXCLUSIVE on the log: the ledger's tables are written by
    # its writers, a plug-in's are not.
    takes_write_lock: bool = True

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    @property
    def versions_ddl(self) -> str:
        return f"""CREATE TABLE IF NOT EXISTS {self.versions_table} (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    oldest_compatible INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL)"""

    @property
    def select_applied(self) -> str:
        return f"SELECT version, name, kind, oldest_compatible FROM {self.versions_table} ORDER BY version"

    @property
    def insert_applied(self) -> str:
        return (
            f"INSERT INTO {self.versions_table} (version, name, kind, oldest_compatible, applied_at, "
            "seconds) VALUES (%s, %s, %s, %s, %s, %s)"
        )


LEDGER_SCHEMA = SchemaHistory("ledger_schema_versions", MIGRATIONS)

log = logging.getLogger("ledger.migrations")


class SchemaTooNew(Exception):
    """The database has a migration this release does not know and cannot run with."""


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    kind: str
    oldest_compatible: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a database stands against this release's migrations."""

    applied: tuple[Applied, ...]
    pending: tuple[Migration, ...]

    @property
    def version(self) -> int:
        return max((applied.version for applied in self.applied), default=0)


def plan(applied: Sequence[Applied], migrations: Sequence[Migration] = MIGRATIONS) -> Plan:
    """The migrations still to run; SchemaTooNew when a recorded one needs a newer release."""
    latest = migrations[-1].version if migrations else 0
    needed = max((row.oldest_compatible for row in applied), default=0)
    version = max((row.version for row in applied), default=0)
    if needed > latest:
        raise SchemaTooNew(
            f"the database's schema is at version {version} and needs a release that knows version "
            f"{needed} or later; this release knows up to {latest}: run a newer release"
        )
    done = {row.version for row in applied}
    return Plan(tuple(applied), tuple(m for m in migrations if m.version not in done))


def _note_newer(found: Plan, latest: int) -> None:
    if found.version > latest:
        log.warning(
            "the database's schema is at version %d, newer than this release's %d; every migration "
            "after %d only added (expand), so this release runs on it unchanged",
            found.version,
            latest,
            latest,
        )


def _applied_rows(rows: Sequence[Any]) -> tuple[Applied, ...]:
    return tuple(
        Applied(int(r["version"]), str(r["name"]), str(r["kind"]), int(r["oldest_compatible"])) for r in rows
    )


# -- PostgreSQL ---------------------------------------------------------------------------------------


def _pg_exists(conn: Any, table: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (table,)).fetchone()["found"])


def _pg_applied(conn: Any, schema: SchemaHistory) -> tuple[Applied, ...]:
    if not _pg_exists(conn, schema.versions_table):
        return ()
    return _applied_rows(conn.execute(schema.select_applied).fetchall())


def pg_plan(recorder: Any, schema: SchemaHistory = LEDGER_SCHEMA) -> Plan:
    with recorder.datastore.get_connection() as conn, pg_in_schema(conn, recorder.datastore.schema):
        return plan(_pg_applied(conn, schema), schema.migrations)


@contextlib.contextmanager
def pg_in_schema(conn: Any, schema: str) -> Iterator[None]:
    """The session's search_path is the log's schema alone (`conn` in autocommit) until the block
    ends, then what it was. The ledger's DDL and its migrations' bookkeeping name no schema: they
    make and find objects in the first schema of the search_path, which is not the log's when a
    schema came first after the ledger was made (the role's own, `"$user"`; opening.py,
    `_session_schema`). There a migration made its table, and `CREATE TABLE IF NOT EXISTS
    ledger_schema_versions` an empty one, after which every migration ran again and made every
    table anew beside the ledger's."""
    previous = conn.execute("SELECT current_setting('search_path') AS path").fetchone()["path"]
    conn.execute("SELECT set_config('search_path', quote_ident(%s), false)", (schema,))
    try:
        yield
    finally:
        conn.execute("SELECT set_config('search_path', %s, false)", (previous,))


@contextlib.contextmanager
def pg_schema_lock(conn: Any, wait_s: float) -> Iterator[None]:
    """The service's advisory lock on the schema (session level, `conn` in autocommit), asked for in
    tries SCHEMA_LOCK_TRY_PAUSE_S apart until wait_s has passed; then LockNotAvailable. Between
    tries this session holds no snapshot, so a concurrent index build under the lock (migrator's
    IndexConcurrently) never waits for a start that waits for the lock."""
    deadline = time.monotonic() + wait_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (SCHEMA_LOCK_KEY,)).fetchone()["held"]:
        if time.monotonic() >= deadline:
            raise LockNotAvailable(
                f"another process held the schema lock for over {wait_s:g} s (LEDGER_MIGRATION_WAIT_S): "
                "a schema migration still running, or one that hangs"
            )
        time.sleep(SCHEMA_LOCK_TRY_PAUSE_S)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


def pg_migrate(
    recorder: Any, wait_s: int = MIGRATION_WAIT_S_DEFAULT, schema: SchemaHistory = LEDGER_SCHEMA
) -> tuple[Migration, ...]:
    """Applies what is pending, each migration in a transaction of its own, in the log's schema
    (pg_in_schema); returns them."""
    with recorder.datastore.get_connection() as conn, pg_in_schema(conn, recorder.datastore.schema):
        found = plan(_pg_applied(conn, schema), schema.migrations)
        _note_newer(found, schema.latest)
        if not found.pending:
            return ()
        with pg_schema_lock(conn, wait_s):
            conn.execute(schema.versions_ddl)
            # Another start may have applied them meanwhile.
            found = plan(_pg_applied(conn, schema), schema.migrations)
            for migration in found.pending:
                _pg_apply(recorder, conn, migration, wait_s, schema)
        return found.pending


def _pg_apply(recorder: Any, conn: Any, migration: Migration, wait_s: int, schema: SchemaHistory) -> None:
    """The migration's steps in one transaction under the log's write lock, except a FillInSteps or
    an IndexConcurrently, which commits what came before it and runs on its own (migrations.py)."""
    started = time.monotonic()
    steps: list[Any] = []
    for step in migration.postgres:
        if not isinstance(step, FillInSteps | IndexConcurrently):
            steps.append(step)
            continue
        if steps:
            with _pg_locked(recorder, conn, wait_s, schema) as curs:
                _pg_steps(recorder, curs, steps)
            steps = []
        if isinstance(step, FillInSteps):
            filled_in = _pg_fill_in_steps(recorder, conn, step, wait_s, schema)
            log.debug("schema migration %d: a fill in %d steps", migration.version, filled_in)
        else:
            _pg_index_concurrently(conn, step, wait_s)
    with _pg_locked(recorder, conn, wait_s, schema) as curs:
        _pg_steps(recorder, curs, steps)
        curs.execute(schema.insert_applied, _row(migration, time.monotonic() - started))
    _logged(migration, time.monotonic() - started)
    if migration.version == 1:
        recorder.datastore.register_type_adapters()


@contextlib.contextmanager
def _pg_locked(recorder: Any, conn: Any, wait_s: int, schema: SchemaHistory) -> Iterator[Any]:
    """A transaction that first takes EXCLUSIVE on the log, which waits for every writer of this
    release and of earlier ones (ledger/storage/writers_lock.py), so that a migration never
    interleaves with a batch; before anything else, so that no lock is taken in another order."""
    try:
        with conn.transaction(), conn.cursor() as curs:
            if schema.takes_write_lock and _pg_exists(conn, recorder.events_table_name):
                _pg_exclusive_in_tries(curs, recorder.events_table_name, time.monotonic() + wait_s)
            # For the steps; after the tries, whose own timeout outlives their released savepoint.
            curs.execute(f"SET LOCAL lock_timeout = '{int(wait_s)}s'")
            yield curs
    except LockNotAvailable:
        # The server's "canceling statement due to lock timeout" says neither what waited nor
        # for whom: a start behind a `ledger verify` that holds the history for an hour must say so.
        raise LockNotAvailable(
            f"a schema migration waited {int(wait_s)} s (LEDGER_MIGRATION_WAIT_S) for a lock on the ledger's "
            f"tables, held by {pg_lock_holders(conn) or 'a session that has let go since'}: start again "
            "once it ends"
        ) from None


def _pg_exclusive_in_tries(curs: Any, table: str, deadline: float) -> None:
    """EXCLUSIVE on the log, asked for in tries until the deadline. PostgreSQL grants a table's locks
    in the order they were asked for: one long wait behind a vacuum of the log (which writers do
    not wait for) would make every writer wait behind this request, and so behind the vacuum.
    Between tries they go on."""
    curs.execute("SELECT setting::int AS ms FROM pg_settings WHERE name = 'deadlock_timeout'")
    try_ms = int(curs.fetchone()["ms"]) + EXCLUSIVE_TRY_PAST_DEADLOCK_CHECK_MS
    while True:
        try:
            with curs.connection.transaction():  # a savepoint: a try that times out undoes only itself
                curs.execute(f"SET LOCAL lock_timeout = '{try_ms}ms'")
                curs.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            return
        except LockNotAvailable:
            if time.monotonic() + EXCLUSIVE_TRY_PAUSE_S >= deadline:
                raise
            time.sleep(EXCLUSIVE_TRY_PAUSE_S)


def _pg_steps(recorder: Any, curs: Any, steps: Sequence[Any]) -> None:
    for step in steps:
        if step == LIBRARY_TABLES:
            recorder.create_library_tables(curs)
        elif isinstance(step, str):
            curs.execute(step.encode())
        else:
            step(curs)


def _pg_fill_in_steps(recorder: Any, conn: Any, fill: FillInSteps, wait_s: int, schema: SchemaHistory) -> int:
    """Runs a fill step after step, each its own transaction under the write lock, until one
    answers no row; how many steps ran. Writes wait for one step at a time, not the whole fill."""
    store, reservation = "", ""
    steps = 0
    while True:
        with _pg_locked(recorder, conn, wait_s, schema) as curs:
            params = {"store": store, "reservation": reservation, "rows": migrations.FILL_STEP_ROWS}
            curs.execute(fill.statement, params)
            row = curs.fetchone()
        steps += 1
        if row is None:
            return steps
        store, reservation = row["store_id"], row["reservation_id"]


def _pg_index_concurrently(conn: Any, index: IndexConcurrently, wait_s: int) -> None:
    """Builds the index while writes go on (CREATE INDEX CONCURRENTLY, in autocommit: never inside
    a transaction), after dropping an invalid one that a build cut short left. Each wait for a lock,
    and for the transactions already under way that the build must outlast (any in the database,
    a long report's included), is bounded by lock_timeout (wait_s): past it the build fails and
    so does the start, in one line, and the next run starts the build again."""
    assert conn.autocommit, "a concurrent index build cannot run inside a transaction"
    conn.execute(f"SET lock_timeout = '{int(wait_s)}s'")
    try:
        invalid = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid",
            (index.name,),
        ).fetchone()
        if invalid is not None:
            log.warning("schema: index %s was left invalid by a cut build; building it again", index.name)
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}")
        try:
            conn.execute(index.concurrent_statement.encode())
        except LockNotAvailable:
            raise LockNotAvailable(
                f"index {index.name} was not built within {int(wait_s)} s (LEDGER_MIGRATION_WAIT_S): a "
                "transaction that began before the build is still open, or another holds the table "
                f"({_holding(pg_lock_holders(conn))})"
            ) from None
    finally:
        conn.execute("RESET lock_timeout")


def _holding(holders: str) -> str:
    return f"holding the ledger's tables: {holders}" if holders else "pg_stat_activity names it"


def pg_lock_holders(conn: Any) -> str:
    """The other sessions that hold a lock on a table of the session's schema, as a line names them
    (pid, application, since when in its transaction): whom a migration's wait was for; empty if
    none does now. `conn` in autocommit, out of the transaction whose wait ended."""
    rows = conn.execute(
        "SELECT a.pid, COALESCE(NULLIF(a.application_name, ''), a.backend_type) AS who, "
        "to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since "
        "FROM pg_stat_activity a WHERE a.pid IN (SELECT l.pid FROM pg_locks l JOIN pg_class c "
        "ON c.oid = l.relation WHERE l.granted AND l.pid <> pg_backend_pid() "
        "AND c.relnamespace = current_schema()::regnamespace) ORDER BY a.xact_start NULLS LAST, a.pid "
        "LIMIT %s",
        (LOCK_HOLDERS_SHOWN + 1,),
    ).fetchall()
    named = [
        f"pid {row['pid']} ({row['who']}"
        + (f", in a transaction since {row['since']} UTC)" if row["since"] else ")")
        for row in rows[:LOCK_HOLDERS_SHOWN]
    ]
    return ", ".join(named) + (", ..." if len(rows) > LOCK_HOLDERS_SHOWN else "")


# -- SQLite -------------------------------------------------------------------------------------------


def _sqlite_applied(cursor: Any, schema: SchemaHistory) -> tuple[Applied, ...]:
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (schema.versions_table,))
    if not cursor.fetchall():
        return ()
    cursor.execute(schema.select_applied)
    return _applied_rows(cursor.fetchall())


def sqlite_plan_of_cursor(cursor: Any, schema: SchemaHistory = LEDGER_SCHEMA) -> Plan:
    """A SQLite database's plan read through a cursor whose rows are mappings (sqlite3.Row), without
    a recorder: for a file that is not to be opened as a ledger, a backup before `ledger restore`."""
    return plan(_sqlite_applied(cursor, schema), schema.migrations)


def sqlite_plan(recorder: Any, schema: SchemaHistory = LEDGER_SCHEMA) -> Plan:
    with recorder.datastore.get_connection(commit=False) as conn:
        return plan(_sqlite_applied(conn.cursor(), schema), schema.migrations)


def plan_of(recorder: Any) -> Plan:
    """Either database's plan, read without changing anything (SchemaTooNew for a schema this
    release does not know): for a command that reads a ledger as it is, `ledger verify`."""
    return sqlite_plan(recorder) if recorder.qmark else pg_plan(recorder)


def holds_table(recorder: Any, table: str) -> bool:
    """Whether the database has `table`, read without changing anything: whether it holds a ledger
    at all (its log), for a command that must find one rather than make one."""
    if recorder.qmark:
        with recorder.datastore.get_connection(commit=False) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
            return bool(cursor.fetchall())
    with recorder.datastore.get_connection() as conn:
        return _pg_exists(conn, table)


def sqlite_migrate(recorder: Any, schema: SchemaHistory = LEDGER_SCHEMA) -> tuple[Migration, ...]:
    """Applies what is pending, all in one BEGIN IMMEDIATE (waited for up to the datastore's lock
    timeout, as every write is); returns them."""
    with recorder.datastore.get_connection(commit=True) as conn:
        cursor = conn.cursor()
        found = plan(_sqlite_applied(cursor, schema), schema.migrations)
        _note_newer(found, schema.latest)
        if not found.pending:
            return ()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.execute(schema.versions_ddl)
            # Another start may have applied them meanwhile.
            found = plan(_sqlite_applied(cursor, schema), schema.migrations)
            timings = []
            for migration in found.pending:
                started = time.monotonic()
                for step in migration.sqlite:
                    if step == LIBRARY_TABLES:
                        for statement in recorder.library_create_statements():
                            cursor.execute(statement)
                    elif isinstance(step, str):
                        cursor.execute(step)
                    else:
                        assert not isinstance(step, FillInSteps | IndexConcurrently), "SQLite: plain steps"
                        step(cursor)
                seconds = time.monotonic() - started
                cursor.execute(schema.insert_applied.replace("%s", "?"), _row(migration, seconds))
                timings.append((migration, seconds))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        for migration, seconds in timings:
            _logged(migration, seconds)
        return found.pending


def _row(migration: Migration, seconds: float) -> tuple[Any, ...]:
    return (
        migration.version,
        migration.name,
        migration.kind,
        migration.oldest_compatible,
        utc_text(utc_now()),
        round(seconds, 6),
    )


def _logged(migration: Migration, seconds: float) -> None:
    # DEBUG: every command opens the database, and a command's failure must stay one line on
    # stderr; `ledger serve` logs what was applied (recorder.migrations_applied), `ledger migrate` prints it.
    log.debug(
        "schema migration %d (%s) applied in %.3f s: %s",
        migration.version,
        migration.kind,
        seconds,
        migration.name,
    )
