"""Expiry after a failed turn records the due reservations one at a time, leaving out one that
fails alone (ledger/writer/expiry.py). A database that is locked or away is no reservation's fault:
found by review, a lock held a few seconds left healthy reservations out of expiry for minutes, and
a lock held throughout made the writer's thread wait the lock timeout once per due reservation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import events as ev

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.writer import expiry

SOURCE = "tests/expiry"
DUE = 6


@pytest.fixture
def ledger_with_due_reservations(tmp_path) -> Iterator[tuple[Any, str]]:
    path = str(tmp_path / "ledger.db")
    ledger = build_ledger(
        Settings(database_url=f"sqlite:///{path}", expiry_interval_ms=10**9, db_lock_timeout_s=1)
    )
    ledger.start()
    try:
        ledger.submit_and_wait([ev.stock_event("in", "stock.receipt", "s", [("A", 100)], source=SOURCE)])
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        ledger.submit_and_wait(
            [
                ev.stock_event(
                    f"r{i}",
                    "stock.reservation",
                    "s",
                    [("A", 1)],
                    source=SOURCE,
                    reservation_id=f"cart-{i}",
                    expires_at=past,
                )
                for i in range(DUE)
            ]
        )
        writer = ledger.writer.writer
        writer.expiry.due = lambda: True  # driven by hand
        writer.unanswered_lately = lambda: False
        yield ledger, path
    finally:
        ledger.stop()


def _reserved(ledger: Any) -> int:
    ledger.refresh()
    return int(ledger.levels("s", ["A"])[0].level.reserved_units)


def test_a_lock_held_a_few_seconds_leaves_no_reservation_out_of_expiry(ledger_with_due_reservations):
    ledger, path = ledger_with_due_reservations
    writer = ledger.writer.writer
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another instance's long transaction
    released = threading.Timer(2.5, lambda: holder.execute("COMMIT"))
    released.start()
    writer.maybe_expire()
    released.join()
    holder.close()

    assert writer.stuck_expiries.left_out() == frozenset()
    writer.maybe_expire()
    assert _reserved(ledger) == 0


def test_a_lock_held_throughout_is_waited_for_once_not_once_per_due_reservation(
    ledger_with_due_reservations, monkeypatch
):
    ledger, path = ledger_with_due_reservations
    writer = ledger.writer.writer
    turns: list[Any] = []
    recording = expiry.expire_due
    monkeypatch.setattr(
        expiry, "expire_due", lambda *a, **k: turns.append(k.get("only")) or recording(*a, **k)
    )
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    writer.maybe_expire()
    holder.close()

    assert turns == [None]  # the failed turn only: no reservation was tried alone behind the lock
    assert writer.stuck_expiries.left_out() == frozenset()
    writer.maybe_expire()
    assert _reserved(ledger) == 0
