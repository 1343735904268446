"""The error a `ledger` command raises for an expected failure, which ledger/cli.py's main() tells
in one line on stderr (exit 2). Apart from the CLI module, so that the commands that the adapters
and the Kafka intake plug into it, and the development tools, raise it without importing it back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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
