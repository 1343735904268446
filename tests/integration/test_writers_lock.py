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

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome
from ledger.service import Ledger

STORE = "store-1"
LOCK_TIMEOUT_S = 10  # the writer's bound on a lock wait: behind a vacuum, the library's lock failed then
BLOCKED_DEADLINE_S = 30  # for the writer's session to be seen waiting behind the held lock
WRITE_DEADLINE_S = 60


@pytest.fixture(params=[True, False], ids=["batch-function", "transaction"])
def ledger(request: pytest.FixtureRequest, postgres: EmbeddedPostgres) -> Iterator[tuple[Ledger, str]]:
    url = postgres.create_database("writers_lock")
    settings = Settings(database_url=url, writer_optimistic=request.param, db_lock_timeout_s=LOCK_TIMEOUT_S)
    instance = build_ledger(settings)
    instance.start()
    try:
        yield instance, url
    finally:
        instance.stop()


def _receipt(event_id: str, qty: int) -> object:
    return ev.stock_event(event_id, "stock.receipt", STORE, [("SKU-1", qty)], source="tests/writers-lock")


def test_writes_go_on_while_a_vacuum_of_the_log_holds_its_lock(ledger: tuple[Ledger, str]) -> None:
    instance, url = ledger
    [first] = instance.submit_and_wait([_receipt("r1", 5)])
    assert first.outcome is Outcome.ACCEPTED
    with psycopg.connect(url) as vacuum:
        # The lock the holder takes, held open (VACUUM itself cannot run in a transaction block).
        vacuum.execute("LOCK TABLE ledger_events IN SHARE UPDATE EXCLUSIVE MODE")
        results = instance.submit_and_wait([_receipt(f"r{n}", 1) for n in range(2, 12)])
        assert [result.outcome for result in results] == [Outcome.ACCEPTED] * 10
        sale = ev.stock_event("s1", "stock.sale", STORE, [("SKU-1", 3)], source="tests/writers-lock")
        [sold] = instance.submit_and_wait([sale])
        assert sold.outcome is Outcome.ACCEPTED
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
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (holder_pid,)
        ).fetchall()
    return [row[0] for row in rows]


def test_a_writer_of_an_earlier_release_and_one_of_this_release_wait_for_each_other(
    ledger: tuple[Ledger, str],
) -> None:
    instance, url = ledger
    [first] = instance.submit_and_wait([_receipt("r1", 5)])
    assert first.outcome is Outcome.ACCEPTED
    outcomes: list[Outcome] = []
    with psycopg.connect(url) as earlier_release:
        earlier_release.execute("SET LOCAL lock_timeout = '60s'")
        earlier_release.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")  # as its batches begin
        holder_pid = earlier_release.info.backend_pid
        writing = threading.Thread(
            target=lambda: outcomes.extend(r.outcome for r in instance.submit_and_wait([_receipt("r2", 1)])),
            daemon=True,
        )
        writing.start()
        deadline = time.monotonic() + BLOCKED_DEADLINE_S
        while not _blocked_by(url, holder_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _blocked_by(url, holder_pid), "this release's writer did not wait for the earlier one's lock"
        assert writing.is_alive() and outcomes == []
        earlier_release.rollback()  # its batch ends: now this release's writer takes its turn
    writing.join(WRITE_DEADLINE_S)
    assert not writing.is_alive()
    assert outcomes == [Outcome.ACCEPTED]
