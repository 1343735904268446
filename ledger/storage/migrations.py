"""Every change ever made to the ledger's schema, in order: the one list `ledger migrate` and
`ledger serve` apply (ledger/storage/migrator.py), and record in `ledger_schema_versions`.

The rule (DESIGN.md, Upgrades): expand, then contract. A migration either only adds (an expand
step: a table, a nullable column, an index; the release before keeps working on it, unchanged),
or removes what no running release uses any more (a contract step, shipped one release after the
code stopped using it, and marked with the oldest schema version a release must know to run on it).

Every migration is a no-op where its change is already there, for two reasons. Migration 1 makes
the tables in today's shape (TABLES_DDL, ledger/projections/schema.py), with the columns later
migrations add (2's principal, channel, channels and policy, 3's occurred_at, 9's codes): on a
new database those later migrations run and find their change made. And migrations 1 to 7 are
the schema this release found: a database made before versions were recorded has no table of
them, so every migration runs on it once, and only what it lacks is made. So a table or index is
made with `IF NOT EXISTS`, and a column only after looking whether it is there (`_pg_add_column`,
say); a later migration must be as careful.

To add one (a table of another feature, say): append `Migration(<the next number>, "what it does", EXPAND,
postgres=(...), sqlite=(...))` to MIGRATIONS, with its statements (or a function of the cursor for
what SQL alone cannot say on one of the databases). Never edit or renumber one that has shipped,
except in how it runs, never in what it leaves: migration 11's fill became a FillInSteps after it
shipped, so that writes wait for a step of it and not the whole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.access.schema import TOKENS_DDL
from ledger.projections.schema import (
    ADDED_COLUMNS,
    EVENTS_BY_TIME_INDEX,
    HISTORY_CODES_COLUMN,
    HISTORY_CODES_DDL,
    OCCURRED_AT_FROM_TIME_PG,
    OCCURRED_AT_FROM_TIME_SQLITE,
    OCCURRED_INDEXES,
    OVERSOLD_INDEX,
    PG_LEVELS_TUNING,
    PG_RESERVATION_LINES_FILL_STEP,
    PG_TOTALS_VIEW,
    POLICIES_DDL,
    POLICY_CHANGES_INDEXES,
    RESERVATION_LINES_DDL,
    RESERVATIONS_BY_ID_INDEX,
    SQLITE_RESERVATION_LINES_FILL,
    SQLITE_TOTALS_VIEW,
    SUPERSEDED_DROPS,
    TABLES_DDL,
)

EXPAND = "expand"
CONTRACT = "contract"


@dataclass(frozen=True, slots=True)
class FillInSteps:
    """A fill of a new table from a table keyed by (store_id, reservation_id), which writes would
    otherwise wait for whole. On PostgreSQL the migrator commits the steps before it, then runs
    `statement` in transactions of its own, each under the log's write lock: it takes the key to
    start after (%(store)s, %(reservation)s; ids are never empty, so ('', '') starts at the first)
    and at most %(rows)s rows (FILL_STEP_ROWS), and answers the last key it filled, or no row once
    the table is done. The migration is recorded in one more transaction. A fill cut short is
    finished by running the migration again: the steps before it are no-ops then, and the fill
    writes nothing twice (ON CONFLICT DO NOTHING). Readers of the new table must not trust it
    until it is whole (explain checks). SQLite runs every migration in one transaction, and so
    fills in one statement."""

    statement: str


@dataclass(frozen=True, slots=True)
class IndexConcurrently:
    """An index on a large table that writes go on filling. On PostgreSQL the migrator commits the
    steps before it and builds the index CONCURRENTLY, outside any transaction and without the
    log's write lock: writes go on during the build, instead of waiting seconds per million rows
    (the build itself waits for the transactions already under way in the database, batches and
    reads alike, at most LEDGER_MIGRATION_WAIT_S). A build cut short leaves an invalid index
    of that name behind, which the next run drops and builds again. SQLite has no such build: give
    it `statement` as a plain step, in its one transaction."""

    statement: str  # CREATE INDEX IF NOT EXISTS <name> ON ...

    def __post_init__(self) -> None:
        assert self.statement.startswith("CREATE INDEX IF NOT EXISTS "), self.statement

    @property
    def name(self) -> str:
        return self.statement.split()[5]

    @property
    def concurrent_statement(self) -> str:
        return self.statement.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1)


# Rows of the source table per step of a FillInSteps: writes wait for one step at a time.
FILL_STEP_ROWS = 2000

# A step is a statement, a function of the migration's cursor (DB-API, the database's own
# placeholders) for what one statement cannot say on that database, a fill in steps, or an index
# built while writes go on.
Step = str | Callable[[Any], None] | FillInSteps | IndexConcurrently


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    kind: str  # EXPAND or CONTRACT
    postgres: tuple[Step, ...]
    sqlite: tuple[Step, ...]
    # The oldest schema version a release must know to run on a database with this migration
    # applied: 0 for an expand step (every release does); for a contract step, the first version
    # whose release no longer used what it removes.
    oldest_compatible: int = 0


# The eventsourcing library's own events table (and, on PostgreSQL, its type and insert function):
# made by the recorder, which knows the library's statements (ledger/storage/recorders.py).
LIBRARY_TABLES = "-- the eventsourcing library's tables"


def _pg_add_column(table: str, column: str, sql_type: str) -> str:
    """Checked first rather than ADD COLUMN IF NOT EXISTS, which takes the table's ACCESS EXCLUSIVE
    lock even when the column is there: on a database adopted from an earlier release, with its
    instances still writing, a no-op must not stop their writes."""
    return f"""DO $ledger$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                       AND table_name = '{table}' AND column_name = '{column}') THEN
            ALTER TABLE {table} ADD COLUMN {column} {sql_type};
        END IF;
    END $ledger$"""


def _sqlite_columns(cursor: Any, table: str) -> set[str]:
    cursor.execute(f"PRAGMA table_info({table})")
    return {row[1] for row in cursor.fetchall()}


def _sqlite_add_column(table: str, column: str, sql_type: str) -> Callable[[Any], None]:
    def add(cursor: Any) -> None:
        if column not in _sqlite_columns(cursor, table):
            cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    return add


# Filled in the same transaction as the column, so that no row is ever without it; NOT NULL after.
_PG_ADD_OCCURRED_AT = f"""DO $ledger$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                       AND table_name = 'ledger_history' AND column_name = 'occurred_at') THEN
            ALTER TABLE ledger_history ADD COLUMN occurred_at TEXT;
            UPDATE ledger_history SET occurred_at = {OCCURRED_AT_FROM_TIME_PG};
            ALTER TABLE ledger_history ALTER COLUMN occurred_at SET NOT NULL;
        END IF;
    END $ledger$"""


def _sqlite_add_occurred_at(cursor: Any) -> None:
    if "occurred_at" in _sqlite_columns(cursor, "ledger_history"):
        return
    try:
        cursor.execute("ALTER TABLE ledger_history ADD COLUMN occurred_at TEXT")
    except (sqlite3.OperationalError, StoreOperationalError) as error:
        if "duplicate column" not in str(error):
            raise
        return
    cursor.execute(f"UPDATE ledger_history SET occurred_at = {OCCURRED_AT_FROM_TIME_SQLITE}")


# Earlier releases' batch function took other arguments (nine is the shape releases before
# recorded schema versions made; the current one is named by its own shape: recorders.py).
_PG_DROP_OLD_BATCH_FUNCTIONS = """DO $ledger$ DECLARE f regprocedure; BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'ledger_write_batch'
        AND pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
        AND pronargs <> 9
    LOOP EXECUTE 'DROP FUNCTION ' || f; END LOOP;
END $ledger$"""


# Where the availability feed has published up to (ledger/feed/cursor.py): not a projection, so
# `ledger rebuild` leaves it alone. Here rather than beside the feed, which reads through storage.
FEED_CURSORS_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_feed_cursors (feed TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)

# Where the writer that leads for this database listens for the other instances (writer/leadership.py).
WRITER_LEADER_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_writer_leader (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "host TEXT NOT NULL, port INTEGER NOT NULL, leader_id TEXT NOT NULL, pid INTEGER NOT NULL, "
    "since TEXT NOT NULL)"
)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the event log, levels, history, reservations, dedupe keys, their indexes and the totals view",
        EXPAND,
        postgres=(LIBRARY_TABLES, *TABLES_DDL, PG_TOTALS_VIEW),
        sqlite=(LIBRARY_TABLES, *TABLES_DDL, SQLITE_TOTALS_VIEW),
    ),
    Migration(
        2,
        "the history's principal, channel, channels and policy; the levels' and reservations' channel(s)",
        EXPAND,
        postgres=tuple(_pg_add_column(*added) for added in ADDED_COLUMNS),
        sqlite=tuple(_sqlite_add_column(*added) for added in ADDED_COLUMNS),
    ),
    Migration(
        3,
        "business time: the history's occurred_at, filled from each row's time, and its index",
        EXPAND,
        postgres=(_PG_ADD_OCCURRED_AT, *OCCURRED_INDEXES),
        sqlite=(_sqlite_add_occurred_at, *OCCURRED_INDEXES),
    ),
    Migration(4, "the policies of each store", EXPAND, postgres=POLICIES_DDL, sqlite=POLICIES_DDL),
    Migration(5, "the access tokens", EXPAND, postgres=TOKENS_DDL, sqlite=TOKENS_DDL),
    Migration(
        6,
        "the levels' SKU index in byte order and room in their pages for HOT updates (PostgreSQL)",
        EXPAND,
        postgres=PG_LEVELS_TUNING,
        sqlite=(),
    ),
    Migration(
        7,
        "drop what earlier releases had: the per-SKU totals, the levels' position index, the history's "
        "(store, [SKU,] position) indexes, the batch function's older shapes",
        CONTRACT,
        postgres=(*SUPERSEDED_DROPS, _PG_DROP_OLD_BATCH_FUNCTIONS),
        sqlite=SUPERSEDED_DROPS,
        oldest_compatible=0,  # no release that recorded schema versions used any of it
    ),
    Migration(
        8,
        "the reservations by id, for a reservation across stores",
        EXPAND,
        postgres=(RESERVATIONS_BY_ID_INDEX,),
        sqlite=(RESERVATIONS_BY_ID_INDEX,),
    ),
    Migration(
        9,
        "marking codes: the history's codes and the table of each code's rows",
        EXPAND,
        postgres=(_pg_add_column(*HISTORY_CODES_COLUMN), HISTORY_CODES_DDL),
        sqlite=(_sqlite_add_column(*HISTORY_CODES_COLUMN), HISTORY_CODES_DDL),
    ),
    Migration(
        10,
        "the availability feed's cursors",
        EXPAND,
        postgres=(FEED_CURSORS_DDL,),
        sqlite=(FEED_CURSORS_DDL,),
    ),
    Migration(
        11,
        "explain's index of reservation lines by store and SKU, filled from the reservations",
        EXPAND,
        postgres=(*RESERVATION_LINES_DDL, FillInSteps(PG_RESERVATION_LINES_FILL_STEP)),
        sqlite=(*RESERVATION_LINES_DDL, SQLITE_RESERVATION_LINES_FILL),
    ),
    Migration(
        12,
        "where the writer that leads for the database listens for the other instances",
        EXPAND,
        postgres=(WRITER_LEADER_DDL,),
        sqlite=(WRITER_LEADER_DDL,),
    ),
    Migration(
        13,
        "the history's index of events by recorded time, one row per event (as_of, timelines)",
        EXPAND,
        postgres=(IndexConcurrently(EVENTS_BY_TIME_INDEX),),
        sqlite=(EVENTS_BY_TIME_INDEX,),
    ),
    Migration(
        14,
        "the history's policy changes by store and key, by position and by business time",
        EXPAND,
        postgres=tuple(IndexConcurrently(index) for index in POLICY_CHANGES_INDEXES),
        sqlite=POLICY_CHANGES_INDEXES,
    ),
    Migration(
        15,
        "the history's oversold entries by store, in log order",
        EXPAND,
        postgres=(IndexConcurrently(OVERSOLD_INDEX),),
        sqlite=(OVERSOLD_INDEX,),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def _check(migrations: tuple[Migration, ...]) -> None:
    versions = [migration.version for migration in migrations]
    assert versions == list(range(1, len(versions) + 1)), f"migrations numbered 1, 2, 3…: {versions}"
    for migration in migrations:
        assert migration.kind in (EXPAND, CONTRACT), migration
        assert migration.kind == CONTRACT or migration.oldest_compatible == 0, migration
        assert migration.oldest_compatible < migration.version, migration


_check(MIGRATIONS)
