"""The writer's one-round-trip batches on PostgreSQL: a lost bet is recorded the ordinary way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason, StockEvent
from ledger.service import Ledger
from ledger.writer.facade import Writer
from ledger.writer.thread import ThreadWriterClient

STORE = "store-1"


def _event(event_id: str, event_type: str, lines: list[tuple[str, int]], **data: object) -> StockEvent:
    return ev.stock_event(event_id, event_type, STORE, lines, source="tests/optimistic", **data)


def _writer(ledger: Ledger) -> Writer:
    assert isinstance(ledger.writer, ThreadWriterClient)
    return ledger.writer.writer


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database("optimistic")


@pytest.fixture
def two_instances(database_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    url = database_url
    first = build_ledger(Settings(database_url=url, writer_optimistic=True))
    second = build_ledger(Settings(database_url=url, writer_optimistic=True))
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_a_batch_read_from_memory_wins_when_nobody_else_wrote(two_instances: tuple[Ledger, Ledger]) -> None:
    first, _ = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    won_before = _writer(first).optimistic_won
    [result] = first.submit_and_wait([_event("s1", "stock.sale", [("SKU-1", 2)])])
    assert result.outcome is Outcome.ACCEPTED
    assert _writer(first).optimistic_won == won_before + 1
    [level] = first.levels(STORE, ["SKU-1"])
    assert level.level.on_hand_units == 3


def test_another_instances_write_makes_the_bet_lose_and_the_sale_sees_it(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    first, second = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 1)])])
    first.submit_and_wait([_event("warm", "stock.adjustment", [("SKU-1", 1)], reason="found")])
    # The other instance sells both units; the first one's memory still says 2 are there.
    [sold] = second.submit_and_wait([_event("pos-1", "stock.sale", [("SKU-1", 2)])])
    assert sold.outcome is Outcome.ACCEPTED
    lost_before = _writer(first).optimistic_lost
    [refused] = first.submit_and_wait([_event("web-1", "stock.sale", [("SKU-1", 1)])])
    assert _writer(first).optimistic_lost == lost_before + 1
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK


def test_a_resent_event_loses_the_bet_and_is_answered_as_a_duplicate(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    first, _ = two_instances
    [received] = first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    lost_before = _writer(first).optimistic_lost
    [again] = first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    assert _writer(first).optimistic_lost == lost_before + 1
    assert again.outcome is Outcome.DUPLICATE
    assert again.original is not None and again.original.position == received.position
    [level] = first.levels(STORE, ["SKU-1"])
    assert level.level.on_hand_units == 5


def test_a_reservation_id_placed_elsewhere_is_not_placed_twice(two_instances: tuple[Ledger, Ledger]) -> None:
    first, second = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    second.submit_and_wait([_event("x", "stock.adjustment", [("SKU-1", 1)], reason="found")])
    first.submit_and_wait([_event("y", "stock.adjustment", [("SKU-1", 1)], reason="found")])
    # Placed through the other instance: the first one's memory does not hold it.
    [placed] = second.submit_and_wait(
        [_event("res-a", "stock.reservation", [("SKU-1", 2)], reservation_id="R-1")]
    )
    assert placed.outcome is Outcome.ACCEPTED
    [conflict] = first.submit_and_wait(
        [_event("res-b", "stock.reservation", [("SKU-1", 3)], reservation_id="R-1")]
    )
    assert conflict.outcome is Outcome.REJECTED
    assert conflict.reason is RejectionReason.RESERVATION_CONFLICT
    [level] = first.levels(STORE, ["SKU-1"])
    assert level.level.reserved_units == 2


def test_the_notification_sequence_follows_the_ids_a_one_statement_batch_gives(
    two_instances: tuple[Ledger, Ledger], database_url: str
) -> None:
    """Batches give their rows' notification ids themselves; the sequence the library's own insert
    path would draw from must be moved past them, or that path would reuse an id."""
    import psycopg

    first, _ = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])  # the ordinary way
    won_before = _writer(first).optimistic_won
    [sale] = first.submit_and_wait([_event("s1", "stock.sale", [("SKU-1", 1)])])
    assert _writer(first).optimistic_won == won_before + 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_value FROM ledger_events_notification_id_seq").fetchone()
    assert row is not None and row[0] == sale.position
