"""The ledger as it was at another commit, for a benchmark's side without a change: its `ledger`
package extracted with `git archive` into a directory to put first on a server's PYTHONPATH (the
repository is not touched). Used by telemetry_bench.py, intake_bench.py, vacuum_bench.py and
rebuild_bench.py (--baseline)."""

from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git(*argv: str) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True).stdout


def resolve_commit(given: str) -> str:
    return git("rev-parse", given).decode().strip()


def extract(commit: str, directory: Path) -> Path:
    """The `ledger` package of `commit`, in a directory of its own."""
    tree = directory / f"ledger-{commit[:12]}"
    with tarfile.open(fileobj=BytesIO(git("archive", "--format=tar", commit, "ledger")), mode="r") as archive:
        archive.extractall(tree, filter="data")
    return tree
