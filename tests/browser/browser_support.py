"""What the console's browser tests share beyond the browser itself (conftest.py)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

from ledger.api.console.adapter_states import CONSOLE_PLUGINS

ROOT = Path(__file__).resolve().parents[2]


def plugged_in_adapters(folder: Path) -> dict[str, str]:
    """The environment that lets `ledger serve` find the adapters' console entry point. An install
    of this checkout declares it (pyproject.toml; CI installs it); a shared environment installed
    from another checkout may not, and then a dist-info folder on PYTHONPATH declares it."""
    if entry_points(group=CONSOLE_PLUGINS):
        return {}
    info = folder / "console_plugins-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: console-plugins\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        f"[{CONSOLE_PLUGINS}]\nadapters = adapters.console:adapter_states\n"
    )
    paths = [str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}
