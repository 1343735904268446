"""The packages plugged into the ledger through entry points (pyproject.toml): the adapters, and a
source checkout's development tools. This package never imports them (tests/test_layers.py); it
loads what each declares under a group, by the entry point's name."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from ledger.cli_errors import CommandError


class PluginUnloadable(CommandError):
    """An entry point whose package is installed but cannot be loaded (a broken install: a module
    that fails to import or to compile, or that lacks what the entry point names). Every command
    tells it in one line (exit 2): a command plugged in or a schema judged by `ledger restore`
    cannot be left out as if its package were not there."""

    def __init__(self, group: str, name: str, value: str, error: BaseException) -> None:
        super().__init__(
            f"the entry point {name} = {value} of {group} cannot be loaded: {type(error).__name__}: {error}"
        )


def plugged_in(group: str) -> list[tuple[str, Any]]:
    """(entry point name, what it names) for each of `group`'s, in name order. One whose package is
    missing (an image with the ledger's packages alone) is left out, with a debug line; one that is
    there but cannot be loaded, a dependency of its missing among them, is refused (PluginUnloadable)."""
    found: list[tuple[str, Any]] = []
    for plugin in sorted(entry_points(group=group), key=lambda plugin: plugin.name):
        try:
            found.append((plugin.name, plugin.load()))
        except ModuleNotFoundError as error:
            if not _names_its_own_module(plugin.value, error.name):
                raise PluginUnloadable(group, plugin.name, plugin.value, error) from error
            logging.getLogger("ledger").debug("%s of %s left out: %s", group, plugin.value, error)
        except (ImportError, SyntaxError, AttributeError) as error:
            # Any other error at import is a bug of the package's own, shown whole.
            raise PluginUnloadable(group, plugin.name, plugin.value, error) from error
    return found


def _names_its_own_module(value: str, missing: str | None) -> bool:
    """Whether the module found missing is the entry point's own (`adapters.cli` of
    `adapters.cli:register`) or a package above it: the package is not installed. Any other is a
    module its code imports, missing from an install of it that is broken."""
    module = value.split(":", 1)[0].strip()
    return missing is not None and (module == missing or module.startswith(f"{missing}."))
