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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore

log = logging.getLogger("ledger.storage")

# LEDGER_DB_DEADLOCK_TIMEOUT_MS: how long a session waits for a lock before PostgreSQL checks for a
# deadlock, and cancels an autovacuum that holds the lock. 0 keeps the server's value.
DEADLOCK_TIMEOUT_MS_DEFAULT = 100


class LedgerPostgresDatastore(PostgresDatastore):
    """The library's datastore, whose new connections also get the ledger's `deadlock_timeout`."""

    def __init__(
        self, *args: Any, deadlock_timeout_ms: int = DEADLOCK_TIMEOUT_MS_DEFAULT, **kwargs: Any
    ) -> None:
        self.deadlock_timeout_ms = deadlock_timeout_ms  # read by after_connect_func, in super().__init__
        super().__init__(*args, **kwargs)

    def after_connect_func(self) -> Callable[[psycopg.Connection[Any]], None]:
        library_setup = super().after_connect_func()
        timeout_ms = int(self.deadlock_timeout_ms)
        statement = f"SET deadlock_timeout = '{timeout_ms}ms'".encode()
        refusals: list[str] = []  # told once per datastore; no reference back to it (the pool keeps this)

        def after_connect(conn: psycopg.Connection[Any]) -> None:
            library_setup(conn)  # autocommit on: a refused SET leaves no failed transaction behind
            if timeout_ms <= 0:
                return
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege as refused:
                if not refusals:
                    refusals.append(str(refused))
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
