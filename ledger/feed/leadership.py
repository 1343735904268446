"""Which instance publishes the feed: one per database at a time, so that a store's records keep
position order whatever the number of instances (two publishers would interleave their rounds).

PostgreSQL: a session advisory lock, held by a connection of its own; the server drops it when that
connection ends (the process died, the network went), and another instance takes over. SQLite: an
exclusive `flock` on a file beside the database, which the kernel drops when the process ends.
Either is checked before each round is published, every FLUSH_SLICE_S while the broker's
acknowledgements are awaited, and before the round's position is saved (`still_held`): a publisher
that lost it drops the records it has not sent yet and saves nothing (and a saved position never
goes back, ledger/feed/cursor.py). Every PostgreSQL leadership query waits for its answer at most
pg_sessions.ANSWER_WAIT_S_MAX: a database that takes a query and never answers it (frozen, or the
network gone silent) costs the feed the lock, never its thread. What is left: records already on
the wire when the lock was lost may reach the broker after the next publisher's, within that
slice (README: consumers keep a record only when its position is not older than the one they
hold).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from typing import Any, Protocol

import psycopg

from ledger.storage.database_urls import sqlite_file
from ledger.storage.opening import CONNECT_TIMEOUT_S
from ledger.storage.pg_sessions import AnsweredInTime

LOCK_CLASS = 0x4C454447  # "LEDG": the first key of pg_advisory_lock(int, int), ours alone


class Leadership(Protocol):
    def try_take(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


def leadership_for(database_url: str, feed: str) -> Leadership:
    path = sqlite_file(database_url)
    if path is not None:
        return FileLeadership(f"{path}-{feed}.lock")
    return AdvisoryLeadership(database_url, feed)


class AdvisoryLeadership:
    def __init__(self, database_url: str, feed: str) -> None:
        self.database_url = database_url
        # The lock's second key: a 32-bit number of the feed's name (the first is LOCK_CLASS).
        self.key = zlib.crc32(f"ledger-feed:{feed}".encode()) - 2**31
        self._connection: Any = None
        self._held = False

    def try_take(self) -> bool:
        """Asks for the lock on this instance's own connection (kept between tries: a waiting
        instance costs one idle connection, not a new one every try)."""
        if self._held:
            return True
        try:
            if self._connection is None:
                self._connection = AnsweredInTime.connect(
                    self.database_url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
                )
            row = self._connection.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self.key)
            ).fetchone()
        except psycopg.Error:
            self.release()
            return False
        self._held = bool(row and row[0])
        return self._held

    def still_held(self) -> bool:
        if not self._held:
            return False
        try:
            self._connection.execute("SELECT 1")
        except psycopg.Error:
            self.release()  # the session is gone, and the lock with it
            return False
        return True

    def release(self) -> None:
        connection, self._connection, self._held = self._connection, None, False
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()  # the session ends, and the lock with it


class FileLeadership:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def try_take(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the lock
