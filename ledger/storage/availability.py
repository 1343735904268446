"""Which errors mean the database is unavailable for now (down, restarting, locked, read-only or
full) rather than a bug: one classification, shared by the writer (what kind of failure a
submission gets) and the service (DatabaseUnavailable)."""

from __future__ import annotations

import sqlite3

import psycopg
from eventsourcing import persistence

# What an unavailable database raises: the library's wrappers of the drivers' errors, and the
# drivers' own where they escape unwrapped (a pool timeout, a lost connection, SQLite's "database
# is locked", "disk I/O error" or "readonly database"). A read-only PostgreSQL (a standby, or
# default_transaction_read_only) answers with an InternalError, so it is named on its own; so is a
# role the database does not let write (InsufficientPrivilege, "permission denied for table"): every
# batch is refused alike, whatever its events, until the owner grants it, as a read-only one. An
# OSError (a full disk, a socket that broke, a timeout) is the machine's state, never the input's:
# the writer answers it "unavailable" (re-send later), never "this submission cannot be recorded".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    persistence.OperationalError,
    persistence.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.InsufficientPrivilege,
    sqlite3.OperationalError,
    OSError,
)
# How many causes deep an error is searched for one of those (the library wraps once).
CAUSE_DEPTH_MAX = 4


def database_unavailable(error: BaseException) -> bool:
    """Is this error (or what caused it) the database being unavailable, rather than a bug?"""
    found: BaseException | None = error
    for _ in range(CAUSE_DEPTH_MAX):
        if found is None:
            return False
        if isinstance(found, UNAVAILABLE_ERRORS):
            return True
        found = found.__cause__
    return False
