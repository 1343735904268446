"""`ledger verify` replays the log, compares every projection table with it, and changes nothing."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from support import db
from support import events as ev
from support.ids import unique
from support.load import WritesUnderWay
from support.server import run_ledger_command

from integration.test_rebuild import _mixed_workload as mixed_workload
from ledger.cli_errors import CommandError

LIVE_EVENTS_BEFORE_VERIFY = 60


def _execute(database_url: str, *statements: str) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(db.sqlite_path(database_url)) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    with psycopg.connect(database_url) as pg:
        for statement in statements:
            pg.execute(statement)  # type: ignore[arg-type]


def test_verify_passes_on_a_live_ledger_and_finds_each_corrupted_row(database_url, serve):
    server = serve(database_url)
    shop, warehouse = unique("shop"), unique("wh")
    with server.client() as client:
        mixed_workload(client, shop, warehouse)
        # A ledger that records meanwhile is verified at the head of its snapshot.
        with WritesUnderWay(client, unique("busy")) as writes:
            writes.wait_for(LIVE_EVENTS_BEFORE_VERIFY)
            live = run_ledger_command(database_url, "verify")
            writes.wait_for(len(writes.acknowledged_so_far()) + 1)  # still writing afterwards
    assert live.returncode == 0, live.stdout + live.stderr
    assert "every projection equals a replay of the log" in live.stdout
    assert server.stop() is not None

    # One row of each kind of damage: a level changed, a history row lost, a reservation made up.
    [level] = db.query(database_url, "SELECT * FROM ledger_levels WHERE store_id = %s AND sku = 'A'", (shop,))
    count_rows = [row for row in db.history_rows(database_url, warehouse) if row["type"] == "stock.count"]
    _execute(
        database_url,
        f"UPDATE ledger_levels SET on_hand = on_hand + 1 WHERE store_id = '{shop}' AND sku = 'A'",
        f"DELETE FROM ledger_history WHERE store_id = '{warehouse}' AND type = 'stock.count'",
        "INSERT INTO ledger_reservations (store_id, reservation_id, lines, status, remaining, "
        f"placed_at_position, position) VALUES ('{shop}', 'R-made-up', '[]', 'open', 1, 1, 1)",
    )
    damaged = db.dump_projections(database_url)

    found = run_ledger_command(database_url, "verify")
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    assert (
        f"ledger_levels (store_id={shop!r}, sku='A'): on_hand: stored {level['on_hand'] + 1}, "
        f"replayed {level['on_hand']}"
    ) in lines
    assert [line for line in lines if line.startswith("ledger_history")] == [
        f"ledger_history (position={row['position']}, line_no={row['line_no']}): missing (the replay has it)"
        for row in count_rows
    ]
    assert (
        f"ledger_reservations (store_id={shop!r}, reservation_id='R-made-up'): stored, but not in the replay"
    ) in lines
    differences = 2 + len(count_rows)
    assert lines[-1].startswith(f"{differences} differences between the projections and a replay"), lines

    # The number shown is bounded; every difference is still counted.
    bounded = run_ledger_command(database_url, "verify", "--differences-shown", "1")
    assert bounded.returncode == 1
    assert len(bounded.stdout.splitlines()) == 2 and f"{differences} differences" in bounded.stdout
    assert "1 shown" in bounded.stdout

    # Read-only: the damage is still there, untouched; a rebuild repairs it, and verify agrees.
    assert db.dump_projections(database_url) == damaged
    assert run_ledger_command(database_url, "rebuild", "--quiet").returncode == 0
    repaired = run_ledger_command(database_url, "verify")
    assert repaired.returncode == 0, repaired.stdout


def test_verify_tells_a_usage_error_in_one_line(tmp_path):
    missing = run_ledger_command(f"sqlite:///{tmp_path / 'none.db'}", "verify")
    assert missing.returncode == 2
    assert missing.stderr == f"ledger verify: {tmp_path / 'none.db'}: no such database\n"
    assert not (tmp_path / "none.db").exists()  # nothing was made either

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    refused = run_ledger_command(f"sqlite:///{other}", "verify")
    assert refused.returncode == 2
    assert "not a ledger database" in refused.stderr and len(refused.stderr.splitlines()) == 1

    bad_option = run_ledger_command(f"sqlite:///{other}", "verify", "--differences-shown", "many")
    assert bad_option.returncode == 2 and len(bad_option.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ledger@db-host/ledger?sslmod=require",  # a misspelled option
        "postgresql://ledger:p%zz@db-host/ledger",  # a password whose escape is no escape
    ],
)
def test_verify_tells_a_postgresql_url_it_cannot_read_in_one_line(url):
    # Every other command refused these in one line; verify, the one that hands the URL to libpq
    # as it is, printed psycopg's ProgrammingError with a traceback (found by review).
    refused = run_ledger_command(url, "verify", "--quiet")
    assert "Traceback" not in refused.stderr, refused.stderr
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("ledger verify: LEDGER_DATABASE_URL"), line


def test_a_rebuild_swapped_in_while_verify_replays_is_no_difference(postgres, tmp_path):
    """PostgreSQL's snapshot keeps rows, not names: a rebuild whose swap committed while verify
    replayed the log had the comparison read the new tables, none of whose rows the snapshot
    sees, and a healthy ledger was told it had lost every row (found by review). The swap waits for
    a table once verify compares it; one it missed is said, and verify stops."""
    import orjson

    from ledger.rebuild import rebuild
    from ledger.storage.opening import open_recorder
    from ledger.verify import verify

    database_url = postgres.create_database()
    shop = unique("shop")
    path = tmp_path / "h.jsonl"
    events = (ev.receipt(shop, ("A", 5)), ev.sale(shop, ("A", 2)))
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    imported = run_ledger_command(database_url, "import", "--quiet", str(path))
    assert imported.returncode == 0, imported.stderr
    rebuilt: list[int] = []

    def replayed(position: int, head: int) -> None:
        if position == head and not rebuilt:  # the replay's last page: the comparison comes next
            recorder = open_recorder(database_url, 4, 30, create_tables=False)
            try:
                rebuilt.append(rebuild(recorder).head)
            finally:
                recorder.close()

    def checked() -> Any:
        return verify(
            database_url,
            30,
            page_entries=100,
            scratch_dir=str(tmp_path),
            shown_max=20,
            replay_progress=replayed,
            compare_progress=lambda table, rows: None,
        )

    with pytest.raises(CommandError, match="rebuilt while verify ran"):
        checked()
    assert rebuilt
    report = checked()  # run again, it compares the rebuilt tables
    assert (report.total, report.shown) == (0, []), report.shown


SWAP_WAIT_MS = 3000  # the swap's wait for verify's tables: past both sessions' deadlock checks
SWAP_WATCH_S = 120.0  # how long the test waits for the swap to wait for verify
SWAP_WATCH_EVERY_S = 0.01


def _until_the_swap_waits_for(database_url: str, held_by_verify: str, compared_later: Sequence[str]) -> None:
    """Until a session waits for `held_by_verify` while it holds (ACCESS EXCLUSIVE) one of the
    tables that verify compares later: a swap whose order differs from verify's."""
    with psycopg.connect(database_url, autocommit=True) as watcher:
        deadline = time.monotonic() + SWAP_WATCH_S
        while not watcher.execute(
            "SELECT 1 FROM pg_locks waits JOIN pg_locks holds ON holds.pid = waits.pid "
            "WHERE NOT waits.granted AND waits.relation = %s::regclass AND holds.granted "
            "AND holds.relation = ANY(%s::regclass[]) AND holds.mode = 'AccessExclusiveLock'",
            (held_by_verify, list(compared_later)),
        ).fetchall():
            assert time.monotonic() < deadline, f"the swap never waited for {held_by_verify} holding another"
            time.sleep(SWAP_WATCH_EVERY_S)


def test_verify_and_a_swap_that_waits_for_it_do_not_deadlock(postgres, tmp_path):
    """Verify locks each table when it comes to compare it, and keeps it; the swap locks them all at
    once, in an order of its own (pg_class's: on a new database ledger_event_keys and three more
    before ledger_levels, verify's first), and waits for the ones verify holds. Verify, asking
    then for one the swap held already, waited for the swap that waited for it: PostgreSQL
    cancelled one of the two, the rebuild after its whole fill or verify (found by review). Verify
    now never waits while it holds a table: the swap gives up its attempt, as for any reader, and
    verify goes on."""
    import orjson

    from ledger.projections.schema import PROJECTION_TABLES
    from ledger.rebuild import RebuildLimits, rebuild
    from ledger.storage.opening import open_recorder
    from ledger.verify import verify

    database_url = postgres.create_database()
    shop = unique("shop")
    path = tmp_path / "h.jsonl"
    events = (ev.receipt(shop, ("A", 5)), ev.sale(shop, ("A", 2)))
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    imported = run_ledger_command(database_url, "import", "--quiet", str(path))
    assert imported.returncode == 0, imported.stderr
    first, *later = PROJECTION_TABLES  # verify compares them in this order
    rebuilt: list[Any] = []
    rebuilding: list[threading.Thread] = []

    def rebuild_once() -> None:
        # The ledger's own sessions: deadlock_timeout 100 ms (LEDGER_DB_DEADLOCK_TIMEOUT_MS).
        recorder = open_recorder(database_url, 4, 30, create_tables=False)
        try:
            rebuilt.append(
                rebuild(recorder, RebuildLimits(swap_lock_wait_ms=SWAP_WAIT_MS, swap_attempts_max=1))
            )
        except Exception as error:  # noqa: BLE001 - told below, in the test's thread
            rebuilt.append(error)
        finally:
            recorder.close()

    def compared(table: str, rows: int) -> None:
        if table == first and not rebuilding:  # verify holds `first`, and asks for the others next
            rebuilding.append(threading.Thread(target=rebuild_once))
            rebuilding[0].start()
            _until_the_swap_waits_for(database_url, first, later)

    try:
        report = verify(
            database_url,
            30,
            page_entries=100,
            scratch_dir=str(tmp_path),
            shown_max=20,
            replay_progress=lambda position, head: None,
            compare_progress=compared,
        )
    finally:
        for thread in rebuilding:
            thread.join(SWAP_WATCH_S)
    assert (report.total, report.shown) == (0, []), report.shown
    [outcome] = rebuilt
    assert isinstance(outcome, CommandError), repr(outcome)  # no deadlock: the swap gave up its attempt
    assert "readers kept them for 1 attempts" in outcome.message
    again = run_ledger_command(database_url, "rebuild", "--quiet")  # verify done, the swap goes through
    assert again.returncode == 0, again.stderr


def test_verify_tells_a_table_held_past_its_lock_timeout_in_one_line_and_never_queues(postgres, tmp_path):
    """A session that holds a projection table (a swap in its lock wait, a migration's step): verify
    waited for it in the table's queue, for as long as it was held, with no bound (its snapshot's
    session has no lock timeout). It asks without waiting now, in tries, until its lock timeout."""
    import orjson

    database_url = postgres.create_database()
    path = tmp_path / "h.jsonl"
    path.write_bytes(orjson.dumps(ev.receipt(unique("shop"), ("A", 5))) + b"\n")
    imported = run_ledger_command(database_url, "import", "--quiet", str(path))
    assert imported.returncode == 0, imported.stderr
    holder = psycopg.connect(database_url)
    holder.execute("LOCK TABLE ledger_levels IN ACCESS EXCLUSIVE MODE")
    done = threading.Event()
    queued: list[bool] = []

    def let_go_of_a_queued_verify() -> None:
        """Lets verify have the table once it waits in its queue (as before the fix): no hang."""
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while not done.is_set():
                if watcher.execute(
                    "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'ledger_levels'::regclass"
                ).fetchall():
                    queued.append(True)
                    holder.rollback()
                    return
                time.sleep(SWAP_WATCH_EVERY_S)

    watching = threading.Thread(target=let_go_of_a_queued_verify)
    watching.start()
    try:
        verified = run_ledger_command(
            database_url, "verify", "--quiet", env={"LEDGER_DB_LOCK_TIMEOUT_S": "1"}
        )
    finally:
        done.set()
        watching.join(SWAP_WATCH_S)
        holder.close()
    assert not queued, "verify waited in the table's queue"
    assert verified.returncode == 2, verified.stdout + verified.stderr
    assert verified.stderr == (
        "ledger verify: ledger_levels was locked by another session for 1 s (LEDGER_DB_LOCK_TIMEOUT_S): "
        "a `ledger rebuild` swapping it in, or a migration; run verify again\n"
    )


def test_a_full_scratch_space_is_named_as_the_cause_not_the_ledgers_database(tmp_path, monkeypatch, capsys):
    """The replay's scratch database, on a disk that filled up, failed with SQLite's SQLITE_FULL
    ("database or disk is full"), and verify said `cannot use the database at <LEDGER_DATABASE_URL>`:
    the operator looked at the ledger's disk, which had room. Here the scratch file may not grow by
    a page more (SQLite's max_page_count): the same SQLITE_FULL as a full disk gives."""
    import orjson

    from ledger import verify as verify_module
    from ledger.cli import main

    ledger_file = tmp_path / "ledger.db"
    database_url = f"sqlite:///{ledger_file}"
    shop = unique("shop")
    path = tmp_path / "h.jsonl"
    events = (ev.receipt(shop, *((f"SKU-{n}", 5) for n in range(200))), ev.sale(shop, ("SKU-1", 2)))
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    imported = run_ledger_command(database_url, "import", "--quiet", str(path))
    assert imported.returncode == 0, imported.stderr
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    real_write_batch = verify_module.write_batch

    def on_a_full_disk(tx: Any, batch: Any) -> None:
        tx.cursor.execute("PRAGMA max_page_count = 1")  # never below the file's size: no page more
        real_write_batch(tx, batch)

    monkeypatch.setattr(verify_module, "write_batch", on_a_full_disk)
    for name in [name for name in os.environ if name.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    code = main(["verify", "--quiet", "--scratch-dir", str(scratch)])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = err.splitlines()
    assert line.startswith(f"ledger verify: the scratch space in {scratch} is full"), line
    assert "--scratch-dir" in line and database_url not in line, line
    assert list(scratch.iterdir()) == []  # the scratch database removed all the same


MIGRATION_WAIT_S = 3  # LEDGER_MIGRATION_WAIT_S of the start that waits for verify
VERIFY_HELD_S_MAX = 120.0  # how long the test's verify holds its tables at most


def test_a_migration_that_waits_for_a_verify_ends_within_its_wait_and_names_the_verify(
    postgres, tmp_path, monkeypatch
):
    """A start that migrates waits for the tables verify holds (its snapshot's ACCESS SHARE): past
    LEDGER_MIGRATION_WAIT_S it ended with the server's "canceling statement due to lock timeout",
    which names neither what waited nor for whom."""
    from ledger import verify as verify_module
    from ledger.storage.opening import open_recorder

    database_url = postgres.create_database()
    open_recorder(database_url, 2, 30).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A database of the release before migration 9, whose ALTER TABLE waits for every reader.
        conn.execute("ALTER TABLE ledger_history DROP COLUMN codes")
        conn.execute("DELETE FROM ledger_schema_versions WHERE version = 9")
    holding, release = threading.Event(), threading.Event()
    real_hold = verify_module._PostgresSnapshot.hold

    def hold_and_wait(self: Any, table: str) -> None:
        real_hold(self, table)
        if table == "ledger_reservations":  # the history is held by now
            holding.set()
            release.wait(VERIFY_HELD_S_MAX)

    monkeypatch.setattr(verify_module._PostgresSnapshot, "hold", hold_and_wait)
    verifying = threading.Thread(
        target=verify_module.verify,
        args=(database_url, 30),
        kwargs={
            "page_entries": 100,
            "scratch_dir": str(tmp_path),
            "shown_max": 20,
            "replay_progress": lambda position, head: None,
            "compare_progress": lambda table, rows: None,
        },
        daemon=True,
    )
    verifying.start()
    try:
        assert holding.wait(VERIFY_HELD_S_MAX)
        started = time.monotonic()
        done = run_ledger_command(
            database_url, "migrate", env={"LEDGER_MIGRATION_WAIT_S": str(MIGRATION_WAIT_S)}
        )
        waited_s = time.monotonic() - started
    finally:
        release.set()
        verifying.join(VERIFY_HELD_S_MAX)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert f"waited {MIGRATION_WAIT_S} s (LEDGER_MIGRATION_WAIT_S)" in line, line
    assert "(ledger verify, in a transaction since " in line, line
    assert waited_s < MIGRATION_WAIT_S + 30, waited_s  # bounded: the command's start, then the wait
    again = run_ledger_command(database_url, "migrate")
    assert again.returncode == 0 and "applied 9 " in again.stdout, again.stdout + again.stderr
