"""`ledger backup` copies a SQLite ledger while it records; `ledger restore` puts a copy back, with
care; `ledger verify` proves the copy right. PostgreSQL has its own tools (README, Backups)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from support import db
from support.access import new_token
from support.ids import unique
from support.load import WritesUnderWay
from support.plugins import declared_entry_points_env
from support.server import REPO_ROOT, ledger_env, run_ledger_command

from ledger.access.book import TokenBook, Unauthenticated
from ledger.storage.opening import open_recorder

EVENTS_BEFORE_BACKUP = 150
# One page a step, with a pause: the copy of a small ledger takes many steps, with writes between.
SLOW_BACKUP = {"LEDGER_BACKUP_STEP_PAGES": "1", "LEDGER_BACKUP_STEP_PAUSE_MS": "2"}


def _ledger(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=ledger_env(database_url, env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _recorded_ids(database_url: str) -> set[str]:
    return {row["event_id"] for row in db.query(database_url, "SELECT event_id FROM ledger_event_keys")}


def test_a_backup_taken_under_load_restores_to_a_ledger_that_verifies(tmp_path: Path, serve):
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    backup_file = tmp_path / "backup.db"
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    server = serve(live_url)
    with server.client() as client, WritesUnderWay(client, unique("busy")) as writes:
        writes.wait_for(EVENTS_BEFORE_BACKUP)
        before = writes.acknowledged_so_far()
        backed_up = _ledger(live_url, "backup", str(backup_file), env=SLOW_BACKUP)
        during = writes.acknowledged_so_far()
        writes.wait_for(len(during) + 1)  # and still writing afterwards
    assert backed_up.returncode == 0, backed_up.stderr
    assert backed_up.stdout.startswith("backed up ") and str(backup_file) in backed_up.stdout
    # The service went on recording while the backup was copied.
    assert len(during) > len(before), "no write was acknowledged while the backup ran"
    assert not Path(f"{backup_file}.partial").exists()

    restored = _ledger(restored_url, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    # The backup is one file: read, it grows no -wal or -shm beside it (it may sit on read-only media).
    assert sorted(path.name for path in tmp_path.glob("backup.db*")) == ["backup.db"]
    verified = run_ledger_command(restored_url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Nothing acknowledged before the backup started is missing from the restored ledger.
    assert set(before) <= _recorded_ids(restored_url)
    assert db.event_count(restored_url) <= db.event_count(live_url)
    # The restored ledger is a ledger: it serves what it holds.
    server.stop()
    restored_server = serve(restored_url)
    with restored_server.client() as client:
        assert client.get("/readyz").status_code == 200


def test_restore_refuses_a_ledger_in_use_or_with_events_unless_forced(tmp_path: Path, serve):
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    backup_file = tmp_path / "backup.db"
    for url, events in ((source_url, 10), (target_url, 25)):
        server = serve(url)
        with server.client() as client, WritesUnderWay(client, unique("s")) as writes:
            writes.wait_for(events)
        if url == source_url:
            server.stop()
    assert _ledger(source_url, "backup", str(backup_file)).returncode == 0
    source_ids = _recorded_ids(source_url)
    # A backup never overwrites a file.
    again = _ledger(source_url, "backup", str(backup_file))
    assert (
        again.returncode == 2
        and again.stderr == f"ledger backup: {backup_file} exists: a backup never overwrites a file\n"
    )

    # The target's service still runs: refused, even with --force.
    in_use = _ledger(target_url, "restore", "--force", str(backup_file))
    assert in_use.returncode == 2, in_use.stderr
    assert "is open in another process" in in_use.stderr and len(in_use.stderr.splitlines()) == 1
    server.stop()
    kept = db.event_count(target_url)
    holds_events = _ledger(target_url, "restore", str(backup_file))
    assert holds_events.returncode == 2
    assert f"holds {kept} recorded events; --force replaces them" in holds_events.stderr
    assert db.event_count(target_url) == kept  # untouched

    forced = _ledger(target_url, "restore", "--force", str(backup_file))
    assert forced.returncode == 0, forced.stderr
    assert _recorded_ids(target_url) == source_ids
    assert run_ledger_command(target_url, "verify").returncode == 0

    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("not a database")
    refused = _ledger(target_url, "restore", "--force", str(not_a_backup))
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert _recorded_ids(target_url) == source_ids
    nowhere = tmp_path / "no-such-folder" / "ledger.db"
    for url, command, why in (
        (target_url, ("backup", str(nowhere)), "cannot write beside it: No such file or directory"),
        (f"sqlite:///{nowhere}", ("restore", str(backup_file)), "unable to open database file"),
    ):
        answer = _ledger(url, *command)
        assert answer.returncode == 2 and answer.stderr.count("\n") == 1, answer.stderr
        assert why in answer.stderr


def test_a_restore_keeps_the_revocation_of_tokens_the_backup_holds_active_and_says_so(tmp_path: Path):
    """A token revoked after the backup was taken (a till's, leaked, say) came back silently with
    the restore. Its revocation is kept, and the operator told which tokens that was, and which
    tokens, made after the backup, the restore leaves out."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    backup_file = tmp_path / "backup.db"
    tokens = {name: new_token(url, name, "producer") for name in ("till-12", "till-13", "shop")}
    assert _ledger(url, "backup", str(backup_file)).returncode == 0
    for name in ("till-12", "till-13"):
        assert _ledger(url, "tokens", "revoke", name).returncode == 0
    revoked = {row["name"]: row["revoked_at"] for row in db.query(url, "SELECT * FROM ledger_tokens")}
    new_token(url, "made-later", "reader")

    restored = _ledger(url, "restore", "--quiet", str(backup_file))

    assert restored.returncode == 0, restored.stderr
    now = {row["name"]: row["revoked_at"] for row in db.query(url, "SELECT * FROM ledger_tokens")}
    assert now == {"till-12": revoked["till-12"], "till-13": revoked["till-13"], "shop": None}
    assert "kept the revocation of 2 tokens active in the backup: till-12, till-13" in restored.stdout
    assert "1 token made after the backup is not in it: made-later" in restored.stdout
    assert tokens["shop"] not in restored.stdout + restored.stderr  # names only, never a token


def test_a_restore_never_asks_for_a_token_revoked_since_the_backup_to_be_created_again(tmp_path: Path):
    """A token made after the backup and revoked since (a leaked one) is not in the backup: the
    restore's list of tokens to create again must not name it, or the operator brings it back."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    backup_file = tmp_path / "backup.db"
    new_token(url, "shop", "producer")
    assert _ledger(url, "backup", str(backup_file)).returncode == 0
    new_token(url, "made-later", "reader")
    new_token(url, "leaked-later", "producer")
    assert _ledger(url, "tokens", "revoke", "leaked-later").returncode == 0

    restored = _ledger(url, "restore", "--quiet", str(backup_file))

    assert restored.returncode == 0, restored.stderr
    assert "1 token made after the backup is not in it: made-later" in restored.stdout, restored.stdout
    assert "leaked-later" not in restored.stdout


def _refused(database_url: str, token: str) -> bool:
    """Whether the ledger's tokens, as every process reads them (access/book.py), refuse `token`."""
    recorder = open_recorder(database_url, 2, 30)
    try:
        book = TokenBook(recorder, refresh_interval_s=1.0, last_use_flush_s=1.0)
        book.refresh()
        try:
            book.grant_for(token)
        except Unauthenticated:
            return True
        return False
    finally:
        recorder.close()


# `ledger restore`, killed where the revocations made since the backup are applied.
_KILLED_AT_THE_REVOCATIONS = """
import os, signal, sys
from ledger import backup
backup._keep_revocations = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
from ledger.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_restore_killed_before_the_revocations_are_in_leaves_no_revoked_token_working(tmp_path: Path):
    """The copy was committed, and the revocations made since the backup applied after it, in a
    transaction of their own: a restore killed between the two left a leaked token working again."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    backup_file = tmp_path / "backup.db"
    leaked = new_token(url, "till-12", "producer")
    shop = new_token(url, "shop", "producer")
    assert _ledger(url, "backup", str(backup_file)).returncode == 0
    assert _ledger(url, "tokens", "revoke", "till-12").returncode == 0

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_THE_REVOCATIONS, "restore", "--quiet", str(backup_file)],
        env=ledger_env(url),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert _refused(url, leaked)
    assert not _refused(url, shop)
    # Restored again, whole: the copy an interrupted restore left beside the ledger is taken over.
    again = _ledger(url, "restore", "--quiet", str(backup_file))
    assert again.returncode == 0, again.stderr
    assert "kept the revocation of 1 token active in the backup: till-12" in again.stdout
    assert _refused(url, leaked) and not _refused(url, shop)
    assert sorted(path.name for path in tmp_path.glob("ledger.db.*")) == []
    assert run_ledger_command(url, "verify").returncode == 0


def test_postgresql_backups_are_left_to_its_own_tools(postgres, tmp_path: Path):
    url = postgres.create_database()
    for command in (("backup", str(tmp_path / "b.db")), ("restore", str(tmp_path / "b.db"))):
        answer = _ledger(url, *command)
        assert answer.returncode == 2
        assert len(answer.stderr.splitlines()) == 1, answer.stderr
        assert "on PostgreSQL use pg_" in answer.stderr and "README, Backups" in answer.stderr
    assert not (tmp_path / "b.db").exists()


def test_restore_from_a_directory_says_so_in_one_line(tmp_path: Path):
    # SQLite answered it with "disk I/O error".
    (tmp_path / "backups").mkdir()
    answer = _ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "restore", str(tmp_path / "backups"))
    assert answer.returncode == 2, answer.stderr
    [line] = answer.stderr.splitlines()
    assert f"{tmp_path / 'backups'}: not a file" in line and "Traceback" not in answer.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_restore_never_replaces_a_database_that_is_not_a_ledger(tmp_path: Path):
    """A mistaken LEDGER_DATABASE_URL (another program's database, or a file that is none) must not
    cost its owner the data: refused even with --force, which is for a ledger's own events."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert _ledger(ledger_url, "migrate").returncode == 0
    backup_file = tmp_path / "backup.db"
    assert _ledger(ledger_url, "backup", str(backup_file)).returncode == 0

    other = tmp_path / "crm.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('alice')")
    notes = tmp_path / "notes.txt"
    notes.write_text("the only copy of these notes\n")
    for target, why in (
        (other, "is not a ledger (it holds the tables customers)"),
        (notes, "is not a SQLite database"),
    ):
        for force in ((), ("--force",)):
            answer = _ledger(f"sqlite:///{target}", "restore", *force, str(backup_file))
            assert answer.returncode == 2, answer.stderr
            [line] = answer.stderr.splitlines()
            assert why in line and "restore into another path" in line
    with sqlite3.connect(other) as connection:
        assert connection.execute("SELECT name FROM customers").fetchall() == [("alice",)]
    assert notes.read_text() == "the only copy of these notes\n"

    empty = tmp_path / "empty.db"
    empty.touch()  # nothing to lose: restored into
    assert _ledger(f"sqlite:///{empty}", "restore", str(backup_file)).returncode == 0
    assert run_ledger_command(f"sqlite:///{empty}", "verify").returncode == 0


def test_commands_on_a_file_that_is_not_a_database_say_so_in_one_line(tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("the only copy of these notes\n")
    for command in (("verify",), ("rebuild", "--quiet"), ("migrate",), ("migrate", "--check")):
        answer = _ledger(f"sqlite:///{notes}", *command)
        assert answer.returncode == 2, answer.stderr
        [line] = answer.stderr.splitlines()
        assert "is not a usable database: file is not a database" in line, line
    assert notes.read_text() == "the only copy of these notes\n"


def test_two_backups_to_one_destination_never_overwrite_each_other_nor_what_appears_there(tmp_path: Path):
    """Each backup holds its partial copy alone; a DEST that appears while a backup runs is kept."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert _ledger(ledger_url, "migrate").returncode == 0
    destination = tmp_path / "backup.db"
    partial = tmp_path / "backup.db.partial"
    # One page a step and a long pause: the first backup (45 pages) is still copying while the
    # second starts, and when the file appears at DEST.
    slow = {"LEDGER_BACKUP_STEP_PAGES": "1", "LEDGER_BACKUP_STEP_PAUSE_MS": "300"}
    first = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "backup", str(destination)],
        env=ledger_env(ledger_url, slow),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not partial.exists():  # the first backup's claim on it
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = _ledger(ledger_url, "backup", str(destination))
        assert second.returncode == 2, second.stderr
        [line] = second.stderr.splitlines()
        assert f"another backup to {destination} is running" in line
        destination.write_text("written by someone else while the first backup ran\n")
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 2, stderr
    assert f"{destination} exists: a backup never overwrites a file" in stderr.splitlines()[-1]
    assert destination.read_text() == "written by someone else while the first backup ran\n"
    assert not partial.exists()

    destination.unlink()
    assert _ledger(ledger_url, "backup", str(destination)).returncode == 0
    assert not partial.exists()
    # A backup is verified once restored (README, Backups); verified as it is, it says so.
    as_it_is = run_ledger_command(f"sqlite:///{destination}", "verify")
    assert as_it_is.returncode == 2, as_it_is.stderr
    [line] = as_it_is.stderr.splitlines()
    assert "journal mode, as `ledger backup` writes a copy: restore it into a new file" in line
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    assert _ledger(restored_url, "restore", str(destination)).returncode == 0
    assert run_ledger_command(restored_url, "verify").returncode == 0


def test_a_backup_never_empties_a_finished_backup_that_a_partial_copy_still_names(tmp_path: Path):
    """Killed between giving its copy DEST's name and removing the partial one, a backup leaves
    DEST.partial as a second name of the finished backup. The next backup to that DEST took the
    partial copy over by emptying it: the finished backup, renamed meanwhile by a rotation, was wiped."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert _ledger(ledger_url, "migrate").returncode == 0
    destination = tmp_path / "backup.db"
    assert _ledger(ledger_url, "backup", str(destination)).returncode == 0
    os.link(destination, tmp_path / "backup.db.partial")  # as the kill left it
    monday = tmp_path / "backup-monday.db"
    destination.rename(monday)  # the rotation
    kept = monday.read_bytes()

    assert _ledger(ledger_url, "backup", str(destination)).returncode == 0
    assert monday.read_bytes() == kept
    assert not (tmp_path / "backup.db.partial").exists()
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    assert _ledger(restored_url, "restore", str(destination)).returncode == 0
    assert run_ledger_command(restored_url, "verify").returncode == 0


def test_commands_that_change_nothing_leave_a_backup_exactly_as_it_was(tmp_path: Path):
    """A backup is in rollback-journal mode; `ledger migrate --check` (which says it applies
    nothing) and `ledger tokens list` switched it to WAL mode, and `ledger verify` then refused it
    for that mode."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert _ledger(ledger_url, "migrate").returncode == 0
    backup_file = tmp_path / "backup.db"
    assert _ledger(ledger_url, "backup", str(backup_file)).returncode == 0
    written = backup_file.read_bytes()
    backup_url = f"sqlite:///{backup_file}"
    for command in (("migrate", "--check"), ("tokens", "list"), ("verify",)):
        answer = _ledger(backup_url, *command)
        assert answer.returncode in (0, 2), (command, answer.stderr)
        assert backup_file.read_bytes() == written, command
        assert sorted(path.name for path in tmp_path.glob("backup.db*")) == ["backup.db"], command
    with sqlite3.connect(backup_file) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


ADAPTERS_READING_COMMANDS = (
    ("adapters", "status"),
    ("adapters", "status", "--metrics"),
    ("mappings", "list"),
)


def _as_it_is(path: Path) -> tuple[bytes, int, list[str]]:
    """A SQLite file's bytes and time of change, and the files beside it but its WAL's: a ledger's
    WAL, empty, may be there or not (the last connection to close removes it, a read-only one
    cannot); what it held would be in the file after a checkpoint, changing its bytes."""
    beside = sorted(
        p.name for p in path.parent.glob(f"{path.name}*") if not p.name.endswith(("-wal", "-shm"))
    )
    return path.read_bytes(), path.stat().st_mtime_ns, beside


def test_the_adapters_reading_commands_leave_a_ledger_and_its_backup_as_they_were(tmp_path: Path):
    """`ledger adapters status` and `ledger mappings list` only read, but they opened the database
    as `ledger adapters run` does: a backup (rollback-journal mode) was switched to WAL mode, and a
    ledger no adapter had run on was given the adapters' tables."""
    mappings = tmp_path / "mappings.csv"
    mappings.write_text("system,kind,local_id,external_id,external_type,factor\nwms,store,shop-1,main,,\n")
    for adapters_ran in (False, True):
        directory = tmp_path / ("with-adapters" if adapters_ran else "ledger-only")
        directory.mkdir()
        ledger_file, backup_file = directory / "ledger.db", directory / "backup.db"
        assert _ledger(f"sqlite:///{ledger_file}", "migrate").returncode == 0
        if adapters_ran:
            assert _ledger(f"sqlite:///{ledger_file}", "mappings", "load", str(mappings)).returncode == 0
        assert _ledger(f"sqlite:///{ledger_file}", "backup", str(backup_file)).returncode == 0
        for path in (ledger_file, backup_file):
            before = _as_it_is(path)
            for command in ADAPTERS_READING_COMMANDS:
                answer = _ledger(f"sqlite:///{path}", *command)
                assert answer.returncode == 0, (path.name, command, answer.stderr)
                assert _as_it_is(path) == before, (adapters_ran, path.name, command)
                if command[0] == "mappings":
                    assert ("wms,store,shop-1,main" in answer.stdout) == adapters_ran, answer.stdout
        assert sorted(p.name for p in directory.glob("backup.db*")) == ["backup.db"]
        with sqlite3.connect(backup_file) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_restore_refuses_a_backup_of_a_schema_this_release_cannot_run_on_and_changes_nothing(tmp_path: Path):
    """A backup of a newer release's ledger, one with a contract migration this release does not
    know, was restored: it replaced the ledger, and then `ledger serve` refused to start on it."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert _ledger(ledger_url, "migrate").returncode == 0
    backup_file = tmp_path / "backup.db"
    assert _ledger(ledger_url, "backup", str(backup_file)).returncode == 0
    with contextlib.closing(sqlite3.connect(backup_file)) as connection, connection:
        [(latest,)] = connection.execute("SELECT MAX(version) FROM ledger_schema_versions").fetchall()
        connection.execute(
            "INSERT INTO ledger_schema_versions (version, name, kind, oldest_compatible, applied_at, "
            "seconds) VALUES (?, 'a newer release drops something', 'contract', ?, '2027-01-01', 0)",
            (latest + 1, latest + 1),
        )
    target = tmp_path / "target.db"
    assert _ledger(f"sqlite:///{target}", "migrate").returncode == 0
    before = _as_it_is(target)
    missing = tmp_path / "missing.db"
    for path, force in ((target, ("--force",)), (target, ()), (missing, ())):
        answer = _ledger(f"sqlite:///{path}", "restore", *force, str(backup_file))
        assert answer.returncode == 2, answer.stdout + answer.stderr
        [line] = answer.stderr.splitlines()
        assert line.startswith(f"ledger restore: {backup_file} is a backup this release cannot run on"), line
        assert f"knows up to {latest}" in line and "nothing restored" in line, line
    assert _as_it_is(target) == before
    assert not missing.exists()
    assert _ledger(f"sqlite:///{target}", "migrate", "--check").returncode == 0  # still this release's


def _adapters_ran(directory: Path) -> tuple[str, Path]:
    """A ledger the adapters have run on (their tables made), and a backup of it."""
    mappings = directory / "mappings.csv"
    mappings.write_text("system,kind,local_id,external_id,external_type,factor\nwms,store,shop-1,main,,\n")
    url = f"sqlite:///{directory / 'ledger.db'}"
    assert _ledger(url, "migrate").returncode == 0
    assert _ledger(url, "mappings", "load", str(mappings)).returncode == 0
    backup_file = directory / "backup.db"
    assert _ledger(url, "backup", str(backup_file)).returncode == 0
    return url, backup_file


def _record_adapters_migration(backup_file: Path, kind: str, oldest_compatible_ahead: int) -> int:
    """Records in the backup one adapters' migration past this release's (a newer release's);
    returns this release's latest."""
    with contextlib.closing(sqlite3.connect(backup_file)) as connection, connection:
        [(latest,)] = connection.execute("SELECT MAX(version) FROM adapter_schema_versions").fetchall()
        connection.execute(
            "INSERT INTO adapter_schema_versions (version, name, kind, oldest_compatible, applied_at, "
            "seconds) VALUES (?, 'a newer release of the adapters', ?, ?, '2027-01-01', 0)",
            (latest + 1, kind, latest + oldest_compatible_ahead),
        )
    return int(latest)


def test_restore_refuses_a_backup_whose_adapters_schema_this_release_cannot_run_on(tmp_path: Path):
    """Only the ledger's schema was judged: a backup whose adapters' tables had a contract migration
    of a newer release was restored, and then `ledger adapters run` refused to start on it."""
    plugged_in = declared_entry_points_env(tmp_path / "plugins", "stock_ledger.schemas")
    _, backup_file = _adapters_ran(tmp_path)
    latest = _record_adapters_migration(backup_file, "contract", 1)
    target = tmp_path / "target.db"
    assert _ledger(f"sqlite:///{target}", "migrate").returncode == 0
    before = _as_it_is(target)
    missing = tmp_path / "missing.db"
    for path, force in ((target, ("--force",)), (target, ()), (missing, ())):
        answer = _ledger(f"sqlite:///{path}", "restore", *force, str(backup_file), env=plugged_in)
        assert answer.returncode == 2, answer.stdout + answer.stderr
        [line] = answer.stderr.splitlines()
        assert line.startswith(
            f"ledger restore: {backup_file} is a backup this release's adapters cannot run on"
        ), line
        assert f"knows up to {latest}" in line and "nothing restored" in line, line
    assert _as_it_is(target) == before
    assert not missing.exists()


def test_a_backup_whose_newer_adapters_schema_only_added_is_restored(tmp_path: Path):
    """As the ledger's: the adapters run on a schema a newer release only added to."""
    plugged_in = declared_entry_points_env(tmp_path / "plugins", "stock_ledger.schemas")
    _, backup_file = _adapters_ran(tmp_path)
    _record_adapters_migration(backup_file, "expand", 0)
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    answer = _ledger(restored_url, "restore", str(backup_file), env=plugged_in)
    assert answer.returncode == 0, answer.stderr
    listed = _ledger(restored_url, "mappings", "list", env=plugged_in)
    assert listed.returncode == 0 and "wms,store,shop-1,main" in listed.stdout, listed.stderr


def test_a_backup_whose_adapters_schema_is_older_is_restored_and_migrated_by_the_adapters(tmp_path: Path):
    """As the ledger's older schema: restored as it is, and brought up to date when the adapters
    next open the ledger (as `ledger serve` brings the ledger's at its start)."""
    from adapters.migrations import ADAPTERS_SCHEMA, MIGRATIONS
    from ledger.storage.migrator import SchemaHistory, sqlite_migrate

    plugged_in = declared_entry_points_env(tmp_path / "plugins", "stock_ledger.schemas")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    recorder = open_recorder(url, 2, 30)
    try:  # the adapters' tables as the first release with migrations left them
        first = SchemaHistory(ADAPTERS_SCHEMA.versions_table, MIGRATIONS[:1], takes_write_lock=False)
        sqlite_migrate(recorder, first)
    finally:
        recorder.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.db")) as connection, connection:
        connection.execute(
            "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, "
            "parked_total, updated_at) VALUES ('bitrix', 42, 1, 0, 0, 'now')"
        )
    backup_file = tmp_path / "backup.db"
    assert _ledger(url, "backup", str(backup_file)).returncode == 0
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"

    answer = _ledger(restored_url, "restore", str(backup_file), env=plugged_in)

    assert answer.returncode == 0, answer.stderr
    versions = "SELECT MAX(version) AS v FROM adapter_schema_versions"
    assert db.query(restored_url, versions) == [{"v": 1}]
    listed = _ledger(restored_url, "mappings", "list", env=plugged_in)
    assert listed.returncode == 0, listed.stderr
    assert db.query(restored_url, versions) == [{"v": MIGRATIONS[-1].version}]
    assert db.query(restored_url, "SELECT adapter, position FROM adapter_positions") == [
        {"adapter": "bitrix", "position": 42}
    ]
