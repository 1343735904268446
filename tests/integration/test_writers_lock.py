"""PostgreSQL: the writers' lock (ledger/storage/writers_lock.py) lets a vacuum of the log run
beside the writers, and still makes a writer of an earlier release and one of this release wait
for each other.

A vacuum cannot be made to run on cue, or for long enough, in a test; the lock it holds can be:
SHARE UPDATE EXCLUSIVE on the log, as VACUUM, ANALYZE and autovacuum take it (an anti-wraparound
vacuum holds it for its whole scan and is never cancelled). The earlier release's writers take the
library's EXCLUSIVE lock on the log. Both ways of recording a batch are checked: the one-statement
batch function (optimistic) and the transaction of several statements.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger, open_database
from ledger.config import Settings
from ledger.domain.model import Outcome
from ledger.service import Ledger
from ledger.storage.migrations import LATEST_VERSION
from ledger.storage.migrator import pg_migrate
from ledger.writer.thread import ThreadWriterClient

STORE = "store-1"
LOCK_TIMEOUT_S = 10  # the writer's bound on a lock wait: the library's lock, behind a vacuum, fails after it
BLOCKED_DEADLINE_S = 30  # for the writer's session to be seen waiting behind the held lock
WRITE_DEADLINE_S = 60


@pytest.fixture(params=[True, False], ids=["batch-function", "transaction"])
def ledger(request: pytest.FixtureRequest, postgres: EmbeddedPostgres) -> Iterator[tuple[Ledger, str, bool]]:
    """A ledger whose writer records in one-statement batches (the batch function) or not."""
    url = postgres.create_database("writers_lock")
    settings = Settings(database_url=url, writer_optimistic=request.param, db_lock_timeout_s=LOCK_TIMEOUT_S)
    instance = build_ledger(settings)
    instance.start()
    try:
        yield instance, url, request.param
    finally:
        instance.stop()


def _receipt(event_id: str, qty: int) -> object:
    return ev.stock_event(event_id, "stock.receipt", STORE, [("SKU-1", qty)], source="tests/writers-lock")


def _batch_function_wins(instance: Ledger) -> int:
    assert isinstance(instance.writer, ThreadWriterClient)
    return instance.writer.writer.optimistic_won


def test_writes_go_on_while_a_vacuum_of_the_log_holds_its_lock(ledger: tuple[Ledger, str, bool]) -> None:
    instance, url, optimistic = ledger
    [first] = instance.submit_and_wait([_receipt("r1", 5)])
    assert first.outcome is Outcome.ACCEPTED
    with psycopg.connect(url) as vacuum:
        # The lock the holder takes, held open (VACUUM itself cannot run in a transaction block).
        vacuum.execute("LOCK TABLE ledger_events IN SHARE UPDATE EXCLUSIVE MODE")
        wins_before = _batch_function_wins(instance)
        results = instance.submit_and_wait([_receipt(f"r{n}", 1) for n in range(2, 12)])
        assert [result.outcome for result in results] == [Outcome.ACCEPTED] * 10
        sale = ev.stock_event("s1", "stock.sale", STORE, [("SKU-1", 3)], source="tests/writers-lock")
        [sold] = instance.submit_and_wait([sale])
        assert sold.outcome is Outcome.ACCEPTED
        # The batch function's own lock statements were the ones tried, where it is on.
        assert (_batch_function_wins(instance) > wins_before) == optimistic
        vacuum.rollback()
    [level] = instance.levels(STORE, ["SKU-1"])
    assert level.level.on_hand_units == 5 + 10 - 3
    with psycopg.connect(url, autocommit=True) as conn:  # and the real ones, between writes
        conn.execute("VACUUM (FREEZE) ledger_events")
        conn.execute("ANALYZE ledger_events")
    [after] = instance.submit_and_wait([_receipt("r12", 1)])
    assert after.outcome is Outcome.ACCEPTED


def _blocked_by(url: str, holder_pid: int) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        ).fetchall()
    return [row[0] for row in rows]


# What an earlier release's batch leaves in the log: an entry at the next position (here a copy of
# the last one, as the first event of a store of its own, so that no store's version moves).
_EARLIER_RELEASE_ENTRY = """INSERT INTO ledger_events
        (originator_id, originator_version, topic, state, notification_id)
    SELECT 'earlier-release-store', 1, topic, state, notification_id + 1
    FROM ledger_events ORDER BY notification_id DESC LIMIT 1"""
_SEQUENCE_PAST_IT = """SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'),
    (SELECT MAX(notification_id) FROM ledger_events))"""


def test_a_writer_of_an_earlier_release_and_one_of_this_release_wait_for_each_other(
    ledger: tuple[Ledger, str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    """This release's writer waits for the earlier release's lock before it reads the log's head,
    so the entry that release commits meanwhile comes before its own, on its first attempt. (The
    batch function decided before asking for the lock, against the head it knew: it loses that bet
    whatever the lock's order, and the batch is recorded the ordinary way, which is what the
    transaction variant checks.)"""
    instance, url, _ = ledger
    [first] = instance.submit_and_wait([_receipt("r1", 5)])
    assert first.outcome is Outcome.ACCEPTED and first.position is not None
    outcomes: list[tuple[Outcome, int | None]] = []
    with psycopg.connect(url) as earlier_release:
        earlier_release.execute("SET LOCAL lock_timeout = '60s'")
        earlier_release.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")  # as its batches begin
        holder_pid = earlier_release.info.backend_pid
        writing = threading.Thread(
            target=lambda: outcomes.extend(
                (r.outcome, r.position) for r in instance.submit_and_wait([_receipt("r2", 1)])
            ),
            daemon=True,
        )
        writing.start()
        deadline = time.monotonic() + BLOCKED_DEADLINE_S
        while not _blocked_by(url, holder_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _blocked_by(url, holder_pid), "this release's writer did not wait for the earlier one's lock"
        assert writing.is_alive() and outcomes == []
        earlier_release.execute(_EARLIER_RELEASE_ENTRY)
        earlier_release.execute(_SEQUENCE_PAST_IT)
        earlier_release.commit()  # its batch ends: now this release's writer takes its turn
    writing.join(WRITE_DEADLINE_S)
    assert not writing.is_alive()
    assert outcomes == [(Outcome.ACCEPTED, first.position + 2)]
    failed = [r.getMessage() for r in caplog.records if "batch failed" in r.getMessage()]
    assert failed == [], "the writer read the head before the earlier release's batch ended"


def _waiting_for_exclusive(url: str, holder_pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND query LIKE 'LOCK TABLE ledger_events IN EXCLUSIVE MODE%%' "
            "AND %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_migration_waiting_behind_a_vacuum_of_the_log_lets_the_writers_through(
    ledger: tuple[Ledger, str, bool],
) -> None:
    """PostgreSQL grants a table's locks in the order asked: a migration's EXCLUSIVE request queued
    behind a vacuum would queue every writer behind it. It asks in short tries instead."""
    instance, url, _ = ledger
    [first] = instance.submit_and_wait([_receipt("r1", 5)])
    assert first.outcome is Outcome.ACCEPTED
    recorder = open_database(Settings(database_url=url))
    applied: list[int] = []
    try:
        # The latest migration, to run again (it must be safe to rerun).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM ledger_schema_versions WHERE version = %s", (LATEST_VERSION,))
        with psycopg.connect(url) as vacuum:
            vacuum.execute("LOCK TABLE ledger_events IN SHARE UPDATE EXCLUSIVE MODE")
            migrating = threading.Thread(
                target=lambda: applied.extend(m.version for m in pg_migrate(recorder, WRITE_DEADLINE_S)),
                daemon=True,
            )
            migrating.start()
            deadline, seen = time.monotonic() + BLOCKED_DEADLINE_S, False
            while not seen and time.monotonic() < deadline:
                seen = _waiting_for_exclusive(url, vacuum.info.backend_pid)
                time.sleep(0.02)
            assert seen, "the migration did not ask for its lock behind the vacuum"
            results = instance.submit_and_wait([_receipt(f"r{n}", 1) for n in range(2, 6)])
            assert [result.outcome for result in results] == [Outcome.ACCEPTED] * 4
            assert migrating.is_alive() and applied == []  # still waiting for the vacuum
            vacuum.rollback()
        migrating.join(WRITE_DEADLINE_S)
        assert not migrating.is_alive()
        assert applied == [LATEST_VERSION]
    finally:
        recorder.close()
