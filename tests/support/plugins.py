"""The entry points this checkout declares (pyproject.toml), made findable by a `ledger` command run
as a subprocess: an environment installed from another checkout (a shared virtual environment)
declares the groups of that checkout, and may lack one added since."""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from support.server import REPO_ROOT


def declared_entry_points_env(folder: Path, group: str) -> dict[str, str]:
    """The environment a `ledger` subprocess needs to find `group`'s entry points as this
    checkout's pyproject.toml declares them: none when the installed package declares the group,
    else a dist-info folder (made in `folder`) on PYTHONPATH that declares it. A group that
    pyproject.toml does not declare is not made up here: the command finds none."""
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    if entry_points(group=group) or group not in declared:
        return {}
    info = folder / f"{group.replace('.', '_')}-0.dist-info"
    info.mkdir(parents=True)
    name = group.replace(".", "-").replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    lines = [f"{plugin} = {target}" for plugin, target in declared[group].items()]
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "\n".join(lines) + "\n")
    paths = [str(folder), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(path for path in paths if path)}
