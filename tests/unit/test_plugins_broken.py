"""A package plugged in through an entry point that is installed but cannot be loaded (a broken
adapters install) is named in one line, not a traceback; one that is not installed is left out."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import ledger.plugins
from ledger.cli import COMMAND_PLUGINS, EXIT_USAGE, main
from ledger.cli_errors import CommandError
from ledger.plugins import plugged_in


@dataclass(frozen=True)
class _EntryPoint:
    """What plugged_in reads of an importlib.metadata.EntryPoint; loading it raises `error`."""

    name: str
    value: str
    error: BaseException

    def load(self) -> object:
        raise self.error


def _syntax_error() -> SyntaxError:
    try:
        compile("def register(:\n", "adapters/cli.py", "exec")
    except SyntaxError as error:
        return error
    raise AssertionError("compiled")


BROKEN = {
    "import error": ImportError("cannot import name 'Client' from 'httpx'"),
    "syntax error": _syntax_error(),
    "missing attribute": AttributeError("module 'adapters.cli' has no attribute 'register'"),
}


def _plugged(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    point = _EntryPoint("adapters", "adapters.cli:register", error)
    monkeypatch.setattr(ledger.plugins, "entry_points", lambda group: [point])


@pytest.mark.parametrize("error", BROKEN.values(), ids=BROKEN.keys())
def test_an_entry_point_that_cannot_be_loaded_is_named_with_its_error(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    _plugged(monkeypatch, error)
    with pytest.raises(CommandError) as refused:
        plugged_in(COMMAND_PLUGINS)
    message = refused.value.message
    assert "adapters = adapters.cli:register" in message and COMMAND_PLUGINS in message
    assert type(error).__name__ in message and "\n" not in message


def test_an_entry_point_whose_package_is_not_installed_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ModuleNotFoundError("No module named 'adapters'", name="adapters")
    _plugged(monkeypatch, missing)
    assert plugged_in(COMMAND_PLUGINS) == []


@pytest.mark.parametrize("error", BROKEN.values(), ids=BROKEN.keys())
def test_a_command_with_a_broken_plug_in_says_so_in_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: BaseException
) -> None:
    _plugged(monkeypatch, error)
    assert main(["tokens", "list"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ledger: ") and "adapters = adapters.cli:register" in err


def test_an_installed_package_that_lacks_a_module_it_imports_is_named_not_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The package is there, a dependency of its is not (an install with --no-deps, a wheel cut
    short): left out, `ledger adapters` would be an unknown command and `ledger restore` would not
    judge the adapters' tables, as if the package were not installed."""
    missing = ModuleNotFoundError("No module named 'httpx'", name="httpx")
    _plugged(monkeypatch, missing)
    with pytest.raises(CommandError) as refused:
        plugged_in(COMMAND_PLUGINS)
    assert "ModuleNotFoundError: No module named 'httpx'" in refused.value.message


def test_an_entry_point_whose_module_alone_is_missing_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's module the entry point names, not a dependency's: an image without it."""
    _plugged(monkeypatch, ModuleNotFoundError("No module named 'adapters.cli'", name="adapters.cli"))
    assert plugged_in(COMMAND_PLUGINS) == []
