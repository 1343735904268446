"""One reconciliation report applied at a time per database.

Applying checks that no report over the same stores was applied since this one was made, records,
then marks it applied (adapters/reconcile_apply.py). Two applies at once both passed the check
before either marked its report, and both recorded: two counts of one shelf, each -1, took 2 units.
Held around the whole of it, this lock makes the second see the first's mark.

PostgreSQL: a session advisory lock on a pooled connection. SQLite: an exclusive `flock` on a file
beside the database (the database's own write lock would stop the ledger's writer meanwhile). Either
is asked for until APPLY_LOCK_WAIT_S has passed, then ApplyInProgress. What is left: a PostgreSQL
session that ends during the apply takes the lock with it unnoticed, and another apply may then
begin beside this one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from adapters.db import is_sqlite

APPLY_LOCK_WAIT_S = 30.0  # how long an apply waits for another to end before it gives up
APPLY_LOCK_TRY_PAUSE_S = 0.1
APPLY_LOCK_KEY = 0x1ED6E9  # a PostgreSQL advisory lock key of this service's own, after the ledger's


class ApplyInProgress(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(
            f"another reconciliation report was being applied for over {wait_s:g} s: nothing recorded; "
            "apply this one again once it ends"
        )


@contextlib.contextmanager
def applying_alone(recorder: Any, wait_s: float = APPLY_LOCK_WAIT_S) -> Iterator[None]:
    if is_sqlite(recorder):
        with _file_lock(f"{recorder.datastore.pool.db_name}-reconcile-apply.lock", wait_s):
            yield
        return
    with recorder.datastore.get_connection() as conn, _advisory_lock(conn, wait_s):
        yield


@contextlib.contextmanager
def _file_lock(path: str, wait_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _try_until(lambda: _flocked(fd), wait_s)
        yield  # closing the descriptor drops the lock
    finally:
        os.close(fd)


def _flocked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _advisory_lock(conn: Any, wait_s: float) -> Iterator[None]:
    def taken() -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (APPLY_LOCK_KEY,)).fetchone()
        conn.commit()  # no transaction left open on the pooled connection while the apply runs
        return bool(row["held"])

    _try_until(taken, wait_s)
    try:
        yield
    finally:
        # A session that ended meanwhile (a restart, an idle timeout) took the lock with it: the
        # apply's own outcome stands, and is not hidden behind this.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (APPLY_LOCK_KEY,))
            conn.commit()


def _try_until(take: Any, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not take():
        if time.monotonic() >= deadline:
            raise ApplyInProgress(wait_s)
        time.sleep(APPLY_LOCK_TRY_PAUSE_S)
