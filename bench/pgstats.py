"""What PostgreSQL was doing during a run: what its backends waited on (sampled), and its own counters
(transactions, rollbacks, rows read and written per table), so that a figure can say what limits it.

Wait events: every SAMPLE_INTERVAL_S, pg_stat_activity for the run's database(s) is read and each
backend counted under its state and wait event ("active CPU" when active and waiting on nothing).
Averaged over the samples, a line reads as "this many backends were in this state on average": e.g.
`active Lock:advisory 0.9` means a writer was nearly always waiting for another's turn (the writers'
lock, ledger/storage/writers_lock.py).

Counters: pg_stat_database and pg_stat_user_tables are cumulative and flushed by each backend at most
once a second (and at exit), so the "after" snapshot is taken once the ledger's servers have stopped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
from plumbing import Postgres

# Four samples a second: 40 over a 10 s run, enough for an average. Reading pg_stat_activity costs
# the server more the more backends it lists, so at 20 a second it cost PostgreSQL up to 8 µs a
# reservation more with two instances than with one (instances_bench.py, bench/README.md), and
# skewed the very comparison it was there to explain.
SAMPLE_INTERVAL_S = 0.25
FLUSH_WAIT_S = 1.0
DATABASE_COLUMNS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "blks_read",
    "deadlocks",
)
TABLE_COLUMNS = ("seq_scan", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del")


class WaitSampler:
    """Samples pg_stat_activity in a thread of its own, over one connection, until stop()."""

    def __init__(self, pg: Postgres, databases: list[str]) -> None:
        self.pg = pg
        self.databases = databases
        self.samples = 0
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-wait-sampler", daemon=True)
        self.error = ""

    def start(self) -> WaitSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with psycopg.connect(self.pg.conninfo(), autocommit=True, connect_timeout=10) as conn:
                while not self._stop.wait(SAMPLE_INTERVAL_S):
                    rows = conn.execute(
                        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                        "WHERE datname = ANY(%s) AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend'",
                        (self.databases,),
                    ).fetchall()
                    self.samples += 1
                    for state, wait_type, wait in rows:
                        self.counts[f"{state} {f'{wait_type}:{wait}' if wait_type else 'CPU'}"] += 1
        except psycopg.Error as error:  # a diagnostic only: the figure stands without it
            self.error = repr(error)

    def stop(self) -> dict[str, Any]:
        """Average backends per state and wait event over the run, biggest first."""
        self._stop.set()
        self._thread.join(10)
        samples = max(1, self.samples)
        averages = {
            what: round(count / samples, 3)
            for what, count in sorted(self.counts.items(), key=lambda item: -item[1])
        }
        return {"samples": self.samples, "average_backends": averages, "error": self.error}


def print_waits(waits: dict[str, Any], shown_max: int = 6) -> None:
    """The busiest states, leaving out connections idle in a pool (state `idle`)."""
    busy = [
        (what, value) for what, value in waits["average_backends"].items() if not what.startswith("idle ")
    ]
    shown = [f"{what} {value:.2f}" for what, value in busy[:shown_max] if value >= 0.01]
    print(
        f"    PostgreSQL backends not idle (average of {waits['samples']} samples): {', '.join(shown) or '-'}"
    )


def counters(pg: Postgres, database: str) -> dict[str, int]:
    """The database's cumulative counters, and each user table's, as one flat dict."""
    row = pg.execute(
        f"SELECT {', '.join(DATABASE_COLUMNS)} FROM pg_stat_database WHERE datname = current_database()",
        database,
    )[0]
    found = {f"db.{name}": int(value or 0) for name, value in zip(DATABASE_COLUMNS, row, strict=True)}
    for table, *values in pg.execute(
        f"SELECT relname, {', '.join(f'coalesce({c}, 0)' for c in TABLE_COLUMNS)} FROM pg_stat_user_tables",
        database,
    ):
        found.update(
            {f"{table}.{name}": int(value) for name, value in zip(TABLE_COLUMNS, values, strict=True)}
        )
    return found


def print_counters(found: dict[str, int], events: int, shown_max: int = 5) -> None:
    """The counters that say where PostgreSQL's work went, per event written."""
    if events <= 0:
        return
    fetched = sorted(
        (
            (name.removesuffix(".idx_tup_fetch"), value)
            for name, value in found.items()
            if name.endswith(".idx_tup_fetch")
        ),
        key=lambda item: -item[1],
    )
    rows = ", ".join(f"{table} {value / events:.2f}" for table, value in fetched[:shown_max] if value)

    def per_event(name: str) -> float:
        return found.get(name, 0) / events

    print(
        f"    PostgreSQL per event (the database's whole life): commits {per_event('db.xact_commit'):.4f}, "
        f"rollbacks {per_event('db.xact_rollback'):.4f}, rows returned {per_event('db.tup_returned'):.1f}; "
        f"rows fetched by index: {rows or '-'}"
    )


def after_clients_left() -> None:
    """A backend flushes its counters as it exits, a moment after its client closed the connection."""
    time.sleep(FLUSH_WAIT_S)
