"""For a command that must find a ledger, not make one: the refusal, in one line, of a database
that is not there or holds no ledger. Apart from ledger/cli_errors.py, which opens no database."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ledger.cli_errors import CommandError, database_url_checked, redacted_url
from ledger.storage.database_urls import sqlite_file
from ledger.storage.migrator import holds_table
from ledger.storage.opening import open_read_only
from ledger.storage.recorders import EVENTS_TABLE

if TYPE_CHECKING:
    from ledger.config import Settings


def missing_sqlite_file(database_url: str) -> str | None:
    """The SQLite file the URL names, if it does not exist."""
    path = sqlite_file(database_url)
    return path if path is not None and not os.path.exists(path) else None


def refuse_missing_sqlite(database_url: str, *, made_by: str | None = None) -> None:
    """For a command that must find a ledger, not make one: a SQLite file that does not exist (a
    mistyped path, or a command run in another directory than `ledger serve`, would otherwise
    record into a new, empty ledger that nothing reads). `made_by`: the command that makes one."""
    path = missing_sqlite_file(database_url)
    if path is not None:
        raise CommandError(f"{path}: no such database" + (f" ({made_by} makes a new one)" if made_by else ""))


def refuse_no_ledger(settings: Settings, *, made_by: str | None = None) -> None:
    """refuse_missing_sqlite's rule for a database that is there: one that holds no ledger (another
    program's SQLite file or PostgreSQL database, the server's own `postgres`) is refused, never
    given every table of a ledger by the command's own opening of it. Whatever its release, a
    ledger holds its log (one from before the schema's versions were recorded, too)."""
    database_url = settings.database_url
    refuse_missing_sqlite(database_url, made_by=made_by)
    with database_url_checked():
        reader = open_read_only(database_url, settings.db_lock_timeout_s, settings.db_deadlock_timeout_ms)
    try:
        found = holds_table(reader, EVENTS_TABLE)
    finally:
        reader.close()
    if not found:
        raise CommandError(
            f"{redacted_url(database_url)} holds no ledger (no {EVENTS_TABLE} table)"
            + (f": {made_by} makes one" if made_by else "")
        )
