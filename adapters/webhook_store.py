"""Stores a webhook delivery before it is answered: in the database if it takes it in time, else the spool.

The sender's deadline is short (MoySklad: 1500 ms, then 3 immediate retries, then the notification
is dropped) and the database may be busy for longer: the ledger's writer holds SQLite's one write
lock for a whole batch, a PostgreSQL table may be locked, a connection may hang. So the database
gets `database_wait_s` (well below the deadline) and no more:

- the insert runs on a worker thread and the request waits for it at most `database_wait_s`;
- on SQLite it runs on a connection of its own with BEGIN IMMEDIATE and a busy timeout of
  `database_wait_s` (never a read first: upgrading a read to a write fails at once when another
  writer holds the lock, which is how deliveries used to be refused within milliseconds);
- on PostgreSQL, `lock_timeout` and `statement_timeout` are set to `database_wait_s`;
- at most `attempts_max` inserts run at once; a delivery that finds none free goes straight to
  the spool.

A request that gives up on its insert abandons it: the insert checks, right before COMMIT, and
rolls back, so it never commits late (say once the pool frees a connection, seconds after): a late
row could be processed after deliveries received later. Only an insert already committing when
its request gave up may finish: the delivery is then both in the database and in the spool, and
the drain storing it again changes nothing (deliveries.py).
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimedOut
from enum import StrEnum
from typing import Any

from adapters.db import is_sqlite, transaction
from adapters.deliveries import INSERT_SQL, Delivery, insert_delivery
from adapters.masking import secret_safe_logger
from adapters.spool import DeliverySpool

log = secret_safe_logger("adapters.webhook_store")


class StoredIn(StrEnum):
    DATABASE = "database"
    SPOOL = "spool"
    BEFORE = "before"  # the same delivery was stored before: a redelivery


class Abandoned(Exception):
    """The request stopped waiting for this insert: it is rolled back, the spool has the delivery."""


class _Attempt:
    """One insert a request waits for, and whether it may still commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._committing = False

    def may_commit(self) -> bool:
        with self._lock:
            self._committing = not self._abandoned
            return self._committing

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True


class _SqliteInserts:
    """One connection per worker thread, each waiting at most `wait_s` for the write lock."""

    def __init__(self, path: str, wait_s: float) -> None:
        self.path = path
        self.wait_s = wait_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def insert(self, delivery: Delivery, attempt: _Attempt) -> bool:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(INSERT_SQL.replace("%s", "?"), delivery.row()).fetchall()
            if not attempt.may_commit():
                raise Abandoned
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
        return bool(rows)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.wait_s, isolation_level=None, check_same_thread=False
            )
            # The ledger's database is in WAL mode; FULL makes a commit durable before we answer.
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


class _PostgresInserts:
    def __init__(self, recorder: Any, wait_s: float) -> None:
        self.recorder = recorder
        self.timeout = f"{max(1, round(wait_s * 1000))}ms"

    def insert(self, delivery: Delivery, attempt: _Attempt) -> bool:
        with transaction(self.recorder) as tx:  # rolled back if the block raises
            tx.fetchall("SELECT set_config('lock_timeout', %s, true) AS lock_timeout", (self.timeout,))
            tx.fetchall("SELECT set_config('statement_timeout', %s, true) AS timeout", (self.timeout,))
            stored = insert_delivery(tx, delivery)
            if not attempt.may_commit():
                raise Abandoned
            return stored

    def close(self) -> None:
        return None


class DeliveryStore:
    def __init__(
        self, recorder: Any, spool: DeliverySpool, *, database_wait_s: float, attempts_max: int
    ) -> None:
        if database_wait_s <= 0 or attempts_max < 1:
            raise ValueError("a delivery store needs a positive wait and at least one attempt at a time")
        self.spool = spool
        self.database_wait_s = database_wait_s
        self._inserts: _SqliteInserts | _PostgresInserts = (
            _SqliteInserts(recorder.datastore.pool.db_name, database_wait_s)
            if is_sqlite(recorder)
            else _PostgresInserts(recorder, database_wait_s)
        )
        self._slots = threading.BoundedSemaphore(attempts_max)
        self._threads = ThreadPoolExecutor(max_workers=attempts_max, thread_name_prefix="webhook-store")

    def store(self, delivery: Delivery) -> StoredIn:
        """Stores the delivery durably within about `database_wait_s` plus one spool write.
        Raises SpoolFull when the database could not take it and the spool is full."""
        stored = self._in_database(delivery)
        if stored is not None:
            return StoredIn.DATABASE if stored else StoredIn.BEFORE
        self.spool.append(delivery)
        return StoredIn.SPOOL

    def _in_database(self, delivery: Delivery) -> bool | None:
        """True: stored now; False: stored before; None: not stored in time (or not at all)."""
        if not self._slots.acquire(blocking=False):
            log.warning(
                "%s delivery %s: every database attempt is busy: spooled",
                delivery.source,
                delivery.delivery_id,
            )
            return None
        attempt = _Attempt()
        try:
            future = self._threads.submit(self._insert, delivery, attempt)
        except BaseException:
            self._slots.release()
            raise
        try:
            return future.result(timeout=self.database_wait_s)
        except WaitTimedOut:
            attempt.abandon()
            log.warning(
                "%s delivery %s: the database did not take it within %.0f ms: spooled",
                delivery.source,
                delivery.delivery_id,
                self.database_wait_s * 1000,
            )
        except Exception as error:  # noqa: BLE001 - any failure of the database: the spool takes it
            attempt.abandon()
            log.warning("%s delivery %s: %s: spooled", delivery.source, delivery.delivery_id, error)
        return None

    def _insert(self, delivery: Delivery, attempt: _Attempt) -> bool:
        try:
            return self._inserts.insert(delivery, attempt)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self._inserts.close()
