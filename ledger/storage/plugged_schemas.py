"""The schema histories of the packages plugged into the ledger with tables of their own (the
adapters), found through their `stock_ledger.schemas` entry points (pyproject.toml): the ledger
never imports them (tests/test_layers.py), yet a command that judges a whole database, `ledger
restore`, must judge their tables as each of them will when it opens the database."""

from __future__ import annotations

from ledger.plugins import plugged_in
from ledger.storage.migrator import SchemaHistory

SCHEMA_PLUGINS = "stock_ledger.schemas"  # the entry point group: name = "package.module:SchemaHistory"


def plugged_in_schemas() -> tuple[tuple[str, SchemaHistory], ...]:
    """(plug-in name, its schema history) of each installed package, by name; one whose package is
    missing (an image with the ledger alone) is left out: its tables are nobody's to run on there."""
    found = plugged_in(SCHEMA_PLUGINS)
    for name, schema in found:
        assert isinstance(schema, SchemaHistory), f"{name} is not a SchemaHistory: {schema!r}"
    return tuple(found)
