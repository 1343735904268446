"""The lock that puts the writers of one PostgreSQL ledger in a line: every batch, expiry sweep and
rebuild swap takes it first, so that positions (the log's notification ids) are given and committed
in order, by one writer at a time, across processes and hosts.

It is a transaction-level advisory lock, beside a ROW EXCLUSIVE lock on the log, and not the
eventsourcing library's `LOCK TABLE … IN EXCLUSIVE MODE`. EXCLUSIVE conflicts with the SHARE UPDATE
EXCLUSIVE that VACUUM and ANALYZE take, so with it every vacuum of the log stops the writers for its
whole run: an autovacuum is cancelled after `deadlock_timeout` each time a writer waits (so the log
is rarely vacuumed at all), and an anti-wraparound vacuum, which PostgreSQL never cancels, holds
every write for as long as its scan of the log takes (bench/vacuum_bench.py). ROW EXCLUSIVE, the
lock any INSERT takes, lets a vacuum run beside the writers.

The two locks together still exclude an instance of an earlier release during a rolling upgrade:
it takes EXCLUSIVE, which conflicts with ROW EXCLUSIVE, taken here before the log's head is read.
So any two writers exclude each other, whichever release each runs: two of this one by the advisory
lock, two of the earlier one by EXCLUSIVE, one of each by EXCLUSIVE against ROW EXCLUSIVE. What must
exclude every writer at once and not only batches (a migration's steps: ledger/storage/migrator.py)
takes EXCLUSIVE, which conflicts with both kinds.

One case still makes writers wait for a vacuum: PostgreSQL grants a table's locks in the order they
were asked for, so an EXCLUSIVE request queued behind a vacuum of the log queues every writer's
ROW EXCLUSIVE behind it. A migration asks in short tries for that reason; an earlier release's
writer, during a rolling upgrade, cannot be made to.

`lock_timeout`, set first, bounds each of the two waits (the advisory lock, then ROW EXCLUSIVE)."""

from __future__ import annotations

from psycopg import sql
from psycopg.abc import Query

# A PostgreSQL advisory lock key of this service's own (the migrator's is 0x1ED6E5, the rebuild's
# 0x1ED6E6; the feed's leadership uses the two-key form, a space of its own).
LOG_WRITERS_LOCK_KEY = 0x1ED6E7


def writers_lock_statements(schema: str, events_table: str, lock_timeout_s: int) -> list[Query]:
    """The statements a writer's transaction begins with, in order."""
    return [
        sql.SQL("SET LOCAL lock_timeout = '{}s'").format(sql.SQL(str(int(lock_timeout_s)))),
        sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(LOG_WRITERS_LOCK_KEY)),
        sql.SQL("LOCK TABLE {}.{} IN ROW EXCLUSIVE MODE").format(
            sql.Identifier(schema), sql.Identifier(events_table)
        ),
    ]


def in_plpgsql(statement: str) -> str:
    """A statement of the lock as a PL/pgSQL function body runs it (a SELECT whose result is not
    kept is a PERFORM there)."""
    return "PERFORM " + statement.removeprefix("SELECT ") if statement.startswith("SELECT ") else statement
