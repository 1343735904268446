"""What the console shows of the adapters, declared here and filled by whoever plugs in.

The ledger never imports the adapters (tests/test_layers.py). A package that pushes the ledger's
entries elsewhere declares a `stock_ledger.console` entry point (pyproject.toml) naming a function
`(recorder) -> list[AdapterState]`; the console calls each one it finds. With none installed (an
image of the ledger alone), the console says that no adapter is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.plugins import plugged_in

CONSOLE_PLUGINS = "stock_ledger.console"  # the entry point group of the adapters' state readers


@dataclass(frozen=True, slots=True)
class AdapterState:
    """One push target: how far it has pushed the log, and what stands in its way. Secrets are
    masked by the plug-in before they reach this (CONTRACT §5)."""

    adapter: str
    position: int  # the last log position pushed
    lag_events: int  # log entries not yet pushed
    parked_now: int  # items set aside after refusals, waiting for a person
    outbox_pending: int
    failures_total: int
    last_error: str | None
    last_push_at: str | None


StateReader = Callable[[Any], list[AdapterState]]


def installed_readers() -> list[StateReader]:
    """The state readers of the installed packages; one whose package is missing is left out."""
    return [reader for _, reader in plugged_in(CONSOLE_PLUGINS)]
