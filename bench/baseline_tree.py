"""The ledger as it was at another commit, for a benchmark's side without a change: its `ledger`
package, with the other top-level packages it had then, extracted with `git archive` into a
directory to put first on a server's PYTHONPATH (the repository is not touched). Used by
telemetry_bench.py, intake_bench.py, vacuum_bench.py and rebuild_bench.py (--baseline)."""

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


# The top-level packages the ledger has had: before the write path's rework (issue #10) the
# projections and the adapters were packages of their own beside `ledger`, imported by it.
PACKAGES = ("ledger", "projections", "adapters", "devtools")


def extract(commit: str, directory: Path) -> Path:
    """The `ledger` package of `commit`, with the other top-level packages it had then, in a
    directory of its own."""
    tree = directory / f"ledger-{commit[:12]}"
    present = set(git("ls-tree", "--name-only", commit).decode().split())
    packages = [name for name in PACKAGES if name in present]
    archived = git("archive", "--format=tar", commit, *packages)
    with tarfile.open(fileobj=BytesIO(archived), mode="r") as archive:
        archive.extractall(tree, filter="data")
    return tree
