"""The error a `ledger` command raises for an expected failure, which ledger/cli.py's main() tells
in one line on stderr (exit 2), the argument types whose refusal argparse tells so too, a database
URL as such a line shows it, and the refusal of a database to find that is not there. Apart
from the CLI module, so that the commands that the adapters and the Kafka intake plug into it, and
the development tools, use them without importing it back."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.config import Settings

# A shell's code for a command ended by Ctrl-C (128 + SIGINT): every command's, `ledger import`'s too.
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure that the user can put right (a missing option, a bad file), in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextlib.contextmanager
def database_url_checked() -> Iterator[None]:
    """Around opening the database: open_recorder refuses a URL it cannot read with ValueError."""
    try:
        yield
    except ValueError as error:
        raise CommandError(str(error)) from None


def int_from(low: int, high: int) -> Callable[[str], int]:
    """An argument's type: an integer from `low` to `high`, or argparse's one-line refusal."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, not {text!r}")
        return value

    return integer


def number_from(low: float, high: float) -> Callable[[str], float]:
    """An argument's type: a finite number from `low` to `high`, or argparse's one-line refusal."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN is in no range
            bounds = f"from {low:,.10g} to {high:,.10g}"
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, not {text!r}")
        return value

    return number


def redacted_url(url: str) -> str:
    """A database URL as a line may show it: without the user and password. The host follows the
    last `@` of the authority, as the ledger reads it (urlsplit): a password may hold `@` unencoded."""
    scheme, separator, rest = url.partition("://")
    authority_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    _, at, host = rest[:authority_end].rpartition("@")
    # libpq takes a password from the query too (`?password=...`), as every option there.
    after = _QUERY_PASSWORD.sub(r"\1***", rest[authority_end:])
    if not separator:
        return url
    return f"{scheme}://{'***@' if at else ''}{host}{after}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def missing_sqlite_file(database_url: str) -> str | None:
    """The SQLite file the URL names, if it does not exist."""
    from ledger.storage.database_urls import sqlite_file

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
    from ledger.storage.migrator import holds_table
    from ledger.storage.opening import open_read_only
    from ledger.storage.recorders import EVENTS_TABLE

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
