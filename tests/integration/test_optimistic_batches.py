"""The writer's one-round-trip batches on PostgreSQL: a lost bet is recorded the ordinary way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason, StockEvent
from ledger.projections.queries import HistoryFilter
from ledger.results import Original
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


def test_a_resent_event_is_decided_from_memory_as_the_duplicate_it_is(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    """A producer's retry (Kafka delivers at least once) of an event this writer recorded lately:
    the batch stays on the one-statement path instead of losing its bet on the key."""
    first, _ = two_instances
    [received] = first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    [refused] = first.submit_and_wait([_event("web-1", "stock.sale", [("SKU-1", 9)])])
    assert refused.outcome is Outcome.REJECTED
    lost_before, won_before = _writer(first).optimistic_lost, _writer(first).optimistic_won
    again = first.submit_and_wait(
        [
            _event("r1", "stock.receipt", [("SKU-1", 5)]),
            _event("s1", "stock.sale", [("SKU-1", 2)]),
            _event("web-1", "stock.sale", [("SKU-1", 9)]),
        ]
    )
    assert (_writer(first).optimistic_lost, _writer(first).optimistic_won) == (lost_before, won_before + 1)
    stats = first.writer.stats
    assert stats is not None and stats.one_statement == (won_before + 1, lost_before)  # as /metrics shows
    assert [result.outcome for result in again] == [Outcome.DUPLICATE, Outcome.ACCEPTED, Outcome.DUPLICATE]
    assert again[0].original == Original(Outcome.ACCEPTED, None, received.position)
    assert again[2].original == Original(
        Outcome.REJECTED, RejectionReason.INSUFFICIENT_STOCK, refused.position
    )
    [level] = first.levels(STORE, ["SKU-1"])
    assert level.level.on_hand_units == 3


def test_an_event_another_instance_recorded_loses_the_bet_and_is_answered_as_a_duplicate(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    first, second = two_instances
    first.submit_and_wait([_event("warm", "stock.adjustment", [("SKU-1", 1)], reason="found")])
    [received] = second.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    lost_before = _writer(first).optimistic_lost
    [again] = first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    assert _writer(first).optimistic_lost == lost_before + 1
    assert again.outcome is Outcome.DUPLICATE
    assert again.original is not None and again.original.position == received.position
    [level] = first.levels(STORE, ["SKU-1"])
    assert level.level.on_hand_units == 6


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


def test_a_batch_with_keys_memory_lacks_still_takes_one_statement(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    """One new SKU in a batch must not send the whole batch down the locked path: the keys memory
    lacks are read first, and the batch is still one statement."""
    first, _ = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    writer = _writer(first)
    won_before, lost_before = writer.optimistic_won, writer.optimistic_lost
    results = first.submit_and_wait(
        [
            _event("s1", "stock.sale", [("SKU-1", 1)]),
            _event("r2", "stock.receipt", [("SKU-2", 3), ("SKU-3", 4)]),
            _event("s2", "stock.sale", [("SKU-4", 1)]),  # never received: refused
        ]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.REJECTED]
    assert (writer.optimistic_won, writer.optimistic_lost) == (won_before + 1, lost_before)
    levels = {view.sku: view.level.on_hand_units for view in first.levels(STORE, ["SKU-1", "SKU-2", "SKU-3"])}
    assert levels == {"SKU-1": 4, "SKU-2": 3, "SKU-3": 4}


def test_after_another_instance_wrote_the_next_batches_are_recorded_under_the_lock(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    """Two writers on one database: once one has lost a bet to the other, it records the ordinary
    way for a while (CONTENDED_S), where no bet is lost, instead of losing one on most batches and
    deciding each twice. Then it bets again."""
    first, second = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 10)])])
    second.submit_and_wait([_event("pos-1", "stock.sale", [("SKU-1", 1)])])
    first.submit_and_wait([_event("web-1", "stock.sale", [("SKU-1", 1)])])  # loses its bet: 8 left
    writer = _writer(first)
    for turn in range(3):
        second.submit_and_wait([_event(f"pos-{turn + 2}", "stock.sale", [("SKU-1", 1)])])
        won_before, lost_before = writer.optimistic_won, writer.optimistic_lost
        [sold] = first.submit_and_wait([_event(f"web-{turn + 2}", "stock.sale", [("SKU-1", 1)])])
        assert sold.outcome is Outcome.ACCEPTED
        assert (writer.optimistic_won, writer.optimistic_lost) == (won_before, lost_before)
    [last] = first.submit_and_wait([_event("web-all", "stock.sale", [("SKU-1", 3)])])
    assert last.outcome is Outcome.REJECTED  # 2 are left: the other instance's sales were seen
    assert last.shortfall[0].available_units == 2
    writer._contended_until = 0.0  # the while has passed
    won_before = writer.optimistic_won
    [sold] = first.submit_and_wait([_event("web-last", "stock.sale", [("SKU-1", 1)])])
    assert (sold.outcome, writer.optimistic_won) == (Outcome.ACCEPTED, won_before + 1)


def test_a_release_or_shipment_of_a_refused_reservation_is_decided_from_memory(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    """A reservation that was refused does not exist; once the writer has read that, its release
    (refused: unknown) and its shipment (recorded plain, flagged) need no read under the lock. Placed
    since, by another instance, it is seen: that write moved the head, so the bet is lost."""
    first, second = two_instances
    writer = _writer(first)
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 5)])])
    [refused] = first.submit_and_wait(
        [_event("res-1", "stock.reservation", [("SKU-1", 9)], reservation_id="R-1")]
    )
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK
    [release] = first.submit_and_wait(
        [_event("rel-1", "stock.reservation_release", [], reservation_id="R-1")]
    )
    assert release.reason is RejectionReason.UNKNOWN_RESERVATION  # the database was read for R-1
    won_before = writer.optimistic_won
    [again] = first.submit_and_wait([_event("rel-2", "stock.reservation_release", [], reservation_id="R-1")])
    [shipped] = first.submit_and_wait(
        [_event("ship-1", "stock.shipment", [("SKU-1", 1)], reservation_id="R-1")]
    )
    assert writer.optimistic_won == won_before + 2, "decided from memory, one statement each"
    assert again.reason is RejectionReason.UNKNOWN_RESERVATION
    assert shipped.outcome is Outcome.ACCEPTED
    [entry] = first.history(HistoryFilter(STORE, type="stock.shipment", reservation_id="R-1"), 10)
    assert (entry["position"], bool(entry["unknown_reservation"])) == (shipped.position, True)
    # Another instance places R-1 now: the first one's memory must not answer "unknown".
    [placed] = second.submit_and_wait(
        [_event("res-2", "stock.reservation", [("SKU-1", 2)], reservation_id="R-1")]
    )
    assert placed.outcome is Outcome.ACCEPTED
    [released] = first.submit_and_wait(
        [_event("rel-3", "stock.reservation_release", [], reservation_id="R-1")]
    )
    assert released.outcome is Outcome.ACCEPTED
    [level] = first.levels(STORE, ["SKU-1"])
    assert (level.level.on_hand_units, level.level.reserved_units) == (4, 0)


def test_reservations_another_instance_changed_are_not_decided_from_stale_memory(
    two_instances: tuple[Ledger, Ledger],
) -> None:
    """Catching up forgets the reservations another instance wrote since: one this memory held as
    open and one it had read as absent. A batch between (a sale, which loses its bet and catches
    up) leaves the head where memory is, so the next ones are decided from memory and would win
    their bets with stale answers."""
    first, second = two_instances
    first.submit_and_wait([_event("r1", "stock.receipt", [("SKU-1", 10)])])
    [held] = first.submit_and_wait([_event("res-1", "stock.reservation", [("SKU-1", 2)], reservation_id="H")])
    [unknown] = first.submit_and_wait([_event("rel-0", "stock.reservation_release", [], reservation_id="A")])
    assert (held.outcome, unknown.reason) == (Outcome.ACCEPTED, RejectionReason.UNKNOWN_RESERVATION)
    [released] = second.submit_and_wait(
        [_event("rel-1", "stock.reservation_release", [], reservation_id="H")]
    )
    [placed] = second.submit_and_wait(
        [_event("res-2", "stock.reservation", [("SKU-1", 3)], reservation_id="A")]
    )
    assert (released.outcome, placed.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    [sold] = first.submit_and_wait([_event("s1", "stock.sale", [("SKU-1", 1)])])  # loses its bet
    assert sold.outcome is Outcome.ACCEPTED
    _writer(first)._contended_until = 0.0  # bet at once again, on the memory the sale caught up
    won_before = _writer(first).optimistic_won
    [again] = first.submit_and_wait([_event("rel-2", "stock.reservation_release", [], reservation_id="H")])
    [absent_no_more] = first.submit_and_wait(
        [_event("rel-3", "stock.reservation_release", [], reservation_id="A")]
    )
    assert _writer(first).optimistic_won == won_before + 2, "decided from memory, one statement each"
    assert again.outcome is Outcome.ACCEPTED  # releasing a closed reservation again changes nothing
    assert absent_no_more.outcome is Outcome.ACCEPTED, "A was placed by the other instance"
    [level] = first.levels(STORE, ["SKU-1"])
    assert (level.level.on_hand_units, level.level.reserved_units) == (9, 0), "H's 2 released once"
