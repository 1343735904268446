"""Explain's index of reservation lines (ledger_reservation_lines, ledger/projections/schema.py): kept
by the writer through every change of a reservation, so that explain reads a store and SKU's open
reservations as a range of it and answers what a scan of the store's reservations answers.

After every step, on both databases: the index holds one row per line of every reservation, with
what the line still holds (recomputed from the reservations' own rows), and for every store and
SKU explain's holds come from the index (`indexed_holds` trusts it) and equal the scan's. Then: an
index an older release left behind (a line missing, a line stale) is not trusted, and explain still
answers right; and the migration fills the index of a database made before it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from support import events as ev
from support.reservation_lines import assert_index_is_the_reservations, recomputed_rows

from ledger.api.reservations_across import across_limits
from ledger.bootstrap import build_ledger, intake_limits
from ledger.config import Settings
from ledger.domain.model import Level
from ledger.intake.across_body import read_reservation_across
from ledger.projections.explain import indexed_holds, open_reservations_scanned
from ledger.service import Ledger
from ledger.storage import migrations
from ledger.storage.opening import open_recorder
from ledger.writer.thread import ThreadWriterClient

SOURCE = "tests/reservation-lines"
STORES = ("s1", "s2")
SKUS = ("A", "B", "C")
ITEMS_MAX = 100
# Far past any real clock: only the test's own expire step expires these reservations.
CLOCK = datetime(2200, 1, 1, tzinfo=UTC)
SETTINGS = {"expiry_interval_ms": 10**9, "expiry_batch_max": 10_000}


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = build_ledger(Settings(database_url=database_url, **SETTINGS))
    ledger.start()
    try:
        yield ledger
    finally:
        ledger.stop()


class Steps:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.ids = itertools.count()

    def record(self, event_type: str, store: str, pairs: list[tuple[str, int]], **data: Any) -> None:
        event = ev.stock_event(f"e{next(self.ids)}", event_type, store, pairs, source=SOURCE, **data)
        [result] = self.ledger.submit_and_wait([event])
        assert result.outcome == "accepted", result

    def reserve_across(self, reservation_id: str, lines: list[tuple[str, str, int]]) -> None:
        body = {
            "reservation_id": reservation_id,
            "lines": [{"store": store, "sku": sku, "qty": qty} for store, sku, qty in lines],
        }
        settings = Settings()
        limits = across_limits(settings, intake_limits(settings))
        command = read_reservation_across(body, limits, SOURCE, datetime.now(UTC), None)
        [result] = self.ledger.submit_and_wait([command])
        assert result.outcome == "accepted", result

    def expire(self, now: datetime) -> None:
        assert isinstance(self.ledger.writer, ThreadWriterClient)
        assert self.ledger.writer.writer.expire_due(now) > 0


def _level(tx: Any, store: str, sku: str) -> Level:
    row = tx.fetchone(
        "SELECT reserved, channels FROM ledger_levels WHERE store_id = %s AND sku = %s", (store, sku)
    )
    if row is None:
        return Level()
    channels = orjson.loads(row["channels"]) if row["channels"] else None
    return Level(0, int(row["reserved"]), 0, channels)


def assert_explained_from_the_index(ledger: Ledger) -> None:
    with ledger.recorder.snapshot_transaction() as tx:
        assert_index_is_the_reservations(tx)
        for store, sku in itertools.product(STORES, SKUS):
            from_index = indexed_holds(tx, store, sku, _level(tx, store, sku), ITEMS_MAX)
            assert from_index is not None, (store, sku)
            assert from_index == open_reservations_scanned(tx, store, sku, ITEMS_MAX), (store, sku)
    for store, sku in itertools.product(STORES, SKUS):
        ledger.explain(store, sku, ITEMS_MAX)  # asserts its own sums


def _holds(ledger: Ledger, store: str, sku: str) -> list[tuple[str, int]]:
    explained = ledger.explain(store, sku, ITEMS_MAX)
    return [(hold.reservation_id, hold.remaining_units) for hold in explained.reserved_by]


def test_the_index_follows_every_change_of_a_reservation(ledger: Ledger) -> None:
    steps = Steps(ledger)
    for store in STORES:
        steps.record("stock.receipt", store, [(sku, 20) for sku in SKUS])
    expires_at = (CLOCK + timedelta(hours=1)).isoformat()
    steps.record("stock.reservation", "s1", [("A", 2), ("B", 1)], reservation_id="R1", expires_at=expires_at)
    steps.record("stock.reservation", "s1", [("A", 1), ("C", 3)], reservation_id="R2", channel="online")
    steps.record("stock.reservation", "s1", [("B", 2)], reservation_id="R3")
    steps.reserve_across("R4", [("s1", "A", 1), ("s2", "A", 2), ("s2", "B", 1)])
    assert_explained_from_the_index(ledger)
    assert _holds(ledger, "s1", "A") == [("R1", 2), ("R2", 1), ("R4", 1)]

    steps.record("stock.shipment", "s1", [("A", 1)], reservation_id="R2")  # R2's A line closes
    assert_explained_from_the_index(ledger)
    assert _holds(ledger, "s1", "A") == [("R1", 2), ("R4", 1)]
    assert _holds(ledger, "s1", "C") == [("R2", 3)]

    steps.record("stock.reservation_release", "s1", [("A", 1)], reservation_id="R1")  # in part
    steps.record("stock.reservation_release", "s1", [], reservation_id="R3")  # whole
    assert_explained_from_the_index(ledger)
    assert _holds(ledger, "s1", "A") == [("R1", 1), ("R4", 1)]
    assert _holds(ledger, "s1", "B") == [("R1", 1)]

    steps.expire(CLOCK + timedelta(hours=2))  # R1, what it still holds
    assert_explained_from_the_index(ledger)
    assert _holds(ledger, "s1", "A") == [("R4", 1)]
    assert _holds(ledger, "s1", "B") == []

    steps.record("stock.reservation_release", "s2", [], reservation_id="R4")  # one store's part
    steps.record("stock.shipment", "s1", [("C", 3)], reservation_id="R2")  # R2 shipped in full
    assert_explained_from_the_index(ledger)
    assert _holds(ledger, "s2", "A") == [] and _holds(ledger, "s1", "A") == [("R4", 1)]
    assert _holds(ledger, "s1", "C") == []


def test_an_index_an_older_release_left_behind_is_not_trusted(ledger: Ledger) -> None:
    """An instance of the release before the index writes reservations without their lines: a
    reservation it placed is missing from the index, one it changed is stale there. Explain sees
    either and scans the store's reservations instead."""
    steps = Steps(ledger)
    steps.record("stock.receipt", "s1", [("A", 20), ("B", 20)])
    steps.record("stock.reservation", "s1", [("A", 2)], reservation_id="R1")
    steps.record("stock.reservation", "s1", [("A", 3)], reservation_id="R2")
    with ledger.recorder.plain_transaction() as tx:  # R1 placed by the older release
        tx.execute("DELETE FROM ledger_reservation_lines WHERE reservation_id = 'R1'")
    assert _not_trusted_and_explained(ledger, "s1", "A") == [("R1", 2), ("R2", 3)]

    steps.record("stock.reservation", "s1", [("B", 3)], reservation_id="R3")
    steps.record("stock.reservation", "s1", [("B", 1)], reservation_id="R4")
    with ledger.recorder.read_transaction() as tx:
        before = tx.fetchone(
            "SELECT remaining, position FROM ledger_reservation_lines WHERE reservation_id = 'R3'"
        )
    assert before is not None
    steps.record("stock.reservation_release", "s1", [("B", 1)], reservation_id="R3")
    steps.record("stock.reservation", "s1", [("B", 1)], reservation_id="R5")
    with ledger.recorder.plain_transaction() as tx:  # R3 released in part, R5 placed by the older release
        tx.execute(
            "UPDATE ledger_reservation_lines SET remaining = %s, position = %s WHERE reservation_id = 'R3'",
            (before["remaining"], before["position"]),
        )
        tx.execute("DELETE FROM ledger_reservation_lines WHERE reservation_id = 'R5'")
    # The stale line and the missing one cancel out in the sum: only the positions tell.
    assert _not_trusted_and_explained(ledger, "s1", "B") == [("R3", 2), ("R4", 1), ("R5", 1)]


def _not_trusted_and_explained(ledger: Ledger, store: str, sku: str) -> list[tuple[str, int]]:
    with ledger.recorder.snapshot_transaction() as tx:
        assert indexed_holds(tx, store, sku, _level(tx, store, sku), ITEMS_MAX) is None
    return _holds(ledger, store, sku)


def _made_before_migration_11(database_url: str, record: Callable[[Steps], None]) -> list[Any]:
    """A ledger that recorded `record`'s steps, then left as the release before left it: no index
    and no migration 11 recorded. What the index must hold once migrated."""
    ledger = build_ledger(Settings(database_url=database_url, **SETTINGS))
    ledger.start()
    try:
        record(Steps(ledger))
    finally:
        ledger.stop()
    recorder = open_recorder(database_url, 2, 30)
    try:
        with recorder.plain_transaction() as tx:
            expected = recomputed_rows(tx)
            tx.execute("DROP TABLE ledger_reservation_lines")
            tx.execute("DELETE FROM ledger_schema_versions WHERE version = 11")
    finally:
        recorder.close()
    return expected


def _migrated_index(database_url: str) -> list[Any]:
    """Opens the database (which migrates it), checks the index against the reservations, and
    gives its rows."""
    recorder = open_recorder(database_url, 2, 30)
    try:
        with recorder.read_transaction() as tx:
            assert_index_is_the_reservations(tx)
            return recomputed_rows(tx)
    finally:
        recorder.close()


def test_the_migration_fills_the_index_of_a_database_made_before_it(database_url: str) -> None:
    def record(steps: Steps) -> None:
        steps.record("stock.receipt", "s1", [("A", 20), ("B", 20)])
        steps.record("stock.reservation", "s1", [("A", 2), ("B", 1)], reservation_id="R1")
        steps.record("stock.reservation", "s1", [("A", 3)], reservation_id="R2")
        steps.record("stock.shipment", "s1", [("A", 1)], reservation_id="R1")
        steps.record("stock.reservation_release", "s1", [], reservation_id="R2")

    expected = _made_before_migration_11(database_url, record)
    assert _migrated_index(database_url) == expected
    assert {row[1:4] for row in expected} == {("R1", "A", 1), ("R1", "B", 1), ("R2", "A", 0)}


def test_on_postgresql_the_migration_fills_in_steps_that_each_hold_writes_briefly(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One reservation a step, over two stores that share a reservation id: every line is filled,
    none twice, and (PostgreSQL) in one step per reservation and a last that finds none left."""

    def record(steps: Steps) -> None:
        for store in STORES:
            steps.record("stock.receipt", store, [("A", 20), ("B", 20)])
        steps.record("stock.reservation", "s1", [("A", 2), ("B", 1)], reservation_id="R1")
        steps.record("stock.reservation", "s1", [("A", 3)], reservation_id="R2")
        steps.record("stock.reservation", "s2", [("B", 4)], reservation_id="R1")
        steps.record("stock.reservation", "s2", [("A", 1), ("B", 1)], reservation_id="R0")
        steps.record("stock.shipment", "s2", [("B", 1)], reservation_id="R1")
        steps.record("stock.reservation_release", "s1", [], reservation_id="R2")

    expected = _made_before_migration_11(database_url, record)
    monkeypatch.setattr(migrations, "FILL_STEP_ROWS", 1)
    caplog.set_level(logging.DEBUG, logger="ledger.migrations")
    assert _migrated_index(database_url) == expected
    assert len(expected) == 6
    if database_url.startswith("postgresql"):
        assert "schema migration 11: a fill in 5 steps" in caplog.text
