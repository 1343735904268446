"""The packages plugged into the ledger through entry points (pyproject.toml): the adapters, and a
source checkout's development tools. This package never imports them (tests/test_layers.py); it
loads what each declares under a group, by the entry point's name."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any


def plugged_in(group: str) -> list[tuple[str, Any]]:
    """(entry point name, what it names) for each of `group`'s, in name order. One whose package is
    missing (an image with the ledger's packages alone) is left out, with a debug line."""
    found: list[tuple[str, Any]] = []
    for plugin in sorted(entry_points(group=group), key=lambda plugin: plugin.name):
        try:
            found.append((plugin.name, plugin.load()))
        except ModuleNotFoundError as error:
            logging.getLogger("ledger").debug("%s of %s left out: %s", group, plugin.value, error)
    return found
