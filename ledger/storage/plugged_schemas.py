"""The schema histories of the packages plugged into the ledger with tables of their own (the
adapters), found through their `stock_ledger.schemas` entry points (pyproject.toml): the ledger
never imports them (tests/test_layers.py), yet a command that judges a whole database, `ledger
restore`, must judge their tables as each of them will when it opens the database."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from ledger.storage.migrator import SchemaHistory

SCHEMA_PLUGINS = "stock_ledger.schemas"  # the entry point group: name = "package.module:SchemaHistory"


def plugged_in_schemas() -> tuple[tuple[str, SchemaHistory], ...]:
    """(plug-in name, its schema history) of each installed package, by name; one whose package is
    missing (an image with the ledger alone) is left out: its tables are nobody's to run on there."""
    found: list[tuple[str, SchemaHistory]] = []
    for plugin in sorted(entry_points(group=SCHEMA_PLUGINS), key=lambda plugin: plugin.name):
        try:
            schema = plugin.load()
        except ModuleNotFoundError as error:
            logging.getLogger("ledger").debug("schema of %s left out: %s", plugin.value, error)
            continue
        assert isinstance(schema, SchemaHistory), f"{plugin.value} is not a SchemaHistory: {schema!r}"
        found.append((plugin.name, schema))
    return tuple(found)
