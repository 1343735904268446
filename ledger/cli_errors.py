"""The error a `ledger` command raises for an expected failure, which ledger/cli.py's main() tells
in one line on stderr (exit 2), the argument types whose refusal argparse tells so too, and a
database URL as such a line shows it. Apart from the CLI module, so that the commands that the
adapters and the Kafka intake plug into it, and the development tools, use them without importing
it back."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Callable, Iterator

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
