"""PostgreSQL: a writer frozen alive under the writers' lock (a stopped process, a paused machine)
does not hold every other writer's batches until it wakes. A transaction of several statements
limits how long it may sit idle holding the lock (ledger/storage/writers_lock.py), so the server
ends its session after the lock timeout and frees the lock. The writer is frozen here by not
sending anything more on its session, which is all the server sees of a frozen client."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from ledger.bootstrap import open_database
from ledger.config import Settings
from ledger.storage.writers_lock import LOG_WRITERS_LOCK_KEY

LOCK_TIMEOUT_S = 2
# The other writer's own wait for the lock, far longer than the frozen one is let to hold it idle.
OTHER_WAIT_S = 20


def test_a_frozen_holder_of_the_writers_lock_is_ended_and_the_next_writer_goes_on(postgres: Any) -> None:
    url = postgres.create_database()
    recorder = open_database(Settings(database_url=url, db_lock_timeout_s=LOCK_TIMEOUT_S))
    try:
        statements = recorder.lock_table_statements
    finally:
        recorder.close()
    frozen = psycopg.connect(url, autocommit=False)
    other = psycopg.connect(url, autocommit=True)
    try:
        for statement in statements:  # as every writer's transaction of several statements begins
            frozen.execute(statement)
        # ... and then nothing more from it.
        other.execute(f"SET lock_timeout = '{OTHER_WAIT_S}s'")
        began = time.monotonic()
        with other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_WRITERS_LOCK_KEY,))
        waited_s = time.monotonic() - began
        assert waited_s < OTHER_WAIT_S, waited_s
        with pytest.raises(psycopg.Error, match="idle-in-transaction"):  # ended: it finds out on waking
            frozen.execute("SELECT 1")
    finally:
        frozen.close()
        other.close()
