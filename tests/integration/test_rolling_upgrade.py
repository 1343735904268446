"""A rolling upgrade (DESIGN.md, Upgrades): the previous release keeps writing while this one
starts on the same database, migrates it, and writes too; the previous release restarted in the
middle of the rollout still starts and writes; the history holds every acknowledged event of both,
and `ledger verify` finds the projections equal to the log (but for explain's index of
reservation lines, which the previous release does not write, until `ledger rebuild`).

The previous release is the commit before schema versions were recorded, taken from this
checkout's git history (`git archive`) into a temporary directory and run with it first on the
path. A clone without that commit (a shallow one) fetches it; if that fails, the test fails and
says how to get it.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from support import db
from support.load import WritesUnderWay
from support.server import REPO_ROOT, LedgerServer, run_ledger_command

from ledger.storage.migrations import LATEST_VERSION

PREVIOUS_RELEASE = "807bccaacee79fe5b789eed180452bd2a6598457"  # the last release without schema versions
GIT_DEADLINE_S = 120
EVENTS_BEFORE = 30  # acknowledged by the previous release before this one starts
EVENTS_DURING = 60  # acknowledged by each release while both run


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, timeout=GIT_DEADLINE_S, check=False
    )


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        _git("fetch", "--quiet", "origin", PREVIOUS_RELEASE)
    archive = _git("archive", "--format=tar", PREVIOUS_RELEASE, "ledger", "adapters")
    if archive.returncode != 0:
        pytest.fail(
            f"the previous release ({PREVIOUS_RELEASE[:7]}) is not in this clone's history: "
            "`git fetch --unshallow` (or fetch that commit) and run again "
            f"({archive.stderr.decode().strip()})"
        )
    directory = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def _recorded_ids(database_url: str) -> set[str]:
    return {row["event_id"] for row in db.query(database_url, "SELECT event_id FROM ledger_event_keys")}


def test_the_previous_release_and_this_one_write_to_one_database_during_the_rollout(
    database_url: str, previous_release: Path, serve, tmp_path: Path
) -> None:
    previous = LedgerServer(database_url, tmp_path, name="previous-release", code_dir=previous_release)
    acknowledged: list[str] = []
    try:
        previous.start()
        with previous.client() as old_client, WritesUnderWay(old_client, "previous") as old_writes:
            old_writes.wait_for(EVENTS_BEFORE)
            assert db.query(database_url, _VERSIONS_TABLE[database_url.split(":", maxsplit=1)[0]]) == []

            current = serve(database_url)  # migrates the database while the previous release writes
            versions = db.query(database_url, "SELECT version FROM ledger_schema_versions ORDER BY version")
            assert [row["version"] for row in versions] == list(range(1, LATEST_VERSION + 1))
            with current.client() as new_client, WritesUnderWay(new_client, "current") as new_writes:
                before = len(old_writes.acknowledged_so_far())
                new_writes.wait_for(EVENTS_DURING)
                old_writes.wait_for(before + EVENTS_DURING)  # both releases wrote meanwhile
            acknowledged += new_writes.acknowledged_so_far()
        acknowledged += old_writes.acknowledged_so_far()

        # An instance of the previous release restarted during the rollout starts on the migrated
        # schema and writes.
        previous.restart()
        with previous.client() as old_client, WritesUnderWay(old_client, "restarted") as restarted:
            restarted.wait_for(EVENTS_BEFORE)
        acknowledged += restarted.acknowledged_so_far()
    finally:
        previous.stop()

    assert set(acknowledged) <= _recorded_ids(database_url)
    stores = {
        row["store_id"] for row in db.query(database_url, "SELECT DISTINCT store_id FROM ledger_history")
    }
    assert {"previous-0", "current-0", "restarted-0"} <= stores
    if database_url.startswith("postgresql"):
        # Each release called its own batch function: neither start replaced the other's.
        functions = db.query(
            database_url, "SELECT proname FROM pg_proc WHERE proname LIKE 'ledger_write_batch%%'"
        )
        names = sorted(row["proname"] for row in functions)
        assert names[0] == "ledger_write_batch" and len(names) == 2, names
    # The previous release writes no reservation lines (explain's index, migration 11): the
    # reservations it changed after the migration are missing there or stale, and explain scans for
    # them (tests/integration/test_explain_reservation_lines.py). Every other table is exact; a
    # rebuild makes the index whole.
    verified = run_ledger_command(
        database_url, "verify", "--quiet", "--differences-shown", "1000", deadline_s=300
    )
    differences = [line for line in verified.stdout.splitlines() if line.startswith("ledger_")]
    assert differences, "the previous release reserved after the migration"
    assert {line.split(" ", maxsplit=1)[0] for line in differences} == {"ledger_reservation_lines"}, (
        verified.stdout + verified.stderr
    )
    rebuilt = run_ledger_command(database_url, "rebuild", "--quiet", deadline_s=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    verified = run_ledger_command(database_url, "verify", "--quiet", deadline_s=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


_VERSIONS_TABLE = {
    "sqlite": "SELECT name FROM sqlite_master WHERE name = 'ledger_schema_versions'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE tablename = 'ledger_schema_versions'",
}
