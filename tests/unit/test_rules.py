"""Unit tests of the stock rules (CONTRACT §1): each event type's effect and outcome, via decide and apply."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ledger_book import OTHER_STORE, STORE, Book, event

from ledger.domain.model import (
    Entry,
    EventType,
    LineEffect,
    Outcome,
    RejectionReason,
    ReservationStatus,
    Shortfall,
)
from ledger.domain.rules import decide

E = EventType


def only_entry(decision_entries: tuple[Entry, ...]) -> Entry:
    assert len(decision_entries) == 1
    return decision_entries[0]


def deltas(entry: Entry) -> list[tuple[str, int, int, int]]:
    return [(e.sku, e.on_hand_delta, e.reserved_delta, e.incoming_delta) for e in entry.effects]


def assert_rejected_without_effect(entry: Entry, reason: RejectionReason) -> None:
    assert entry.outcome is Outcome.REJECTED
    assert entry.reason is reason
    assert all(
        (e.on_hand_delta, e.reserved_delta, e.incoming_delta, e.oversold, e.unknown_reservation)
        == (0, 0, 0, False, False)
        for e in entry.effects
    )


@pytest.fixture
def book() -> Book:
    return Book()


# --- stock.receipt ---------------------------------------------------------------------------


def test_receipt_adds_to_on_hand_and_leaves_incoming_alone(book: Book) -> None:
    decision = book.record(event(E.RECEIPT, ("SKU-1", 5), ("SKU-2", 1), reference="GRN-1"))
    entry = only_entry(decision.entries)
    assert entry.outcome is Outcome.ACCEPTED and entry.reason is None
    assert deltas(entry) == [("SKU-1", 5, 0, 0), ("SKU-2", 1, 0, 0)]
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.levels("SKU-2") == (1, 0, 1, 0)


def test_receipt_of_a_transfer_also_takes_the_goods_off_incoming(book: Book) -> None:
    book.record(event(E.TRANSFER, ("SKU-1", 3), store_id=OTHER_STORE, to_store=STORE, transfer_id="T-1"))
    # the sending store had nothing: the transfer is refused, so incoming stays zero here
    assert book.levels("SKU-1") == (0, 0, 0, 0)
    book.receive(("SKU-1", 10), store_id=OTHER_STORE)
    book.record(event(E.TRANSFER, ("SKU-1", 3), store_id=OTHER_STORE, to_store=STORE, transfer_id="T-2"))
    assert book.levels("SKU-1") == (0, 0, 0, 3)

    entry = only_entry(book.record(event(E.RECEIPT, ("SKU-1", 3), transfer_id="T-2")).entries)

    assert deltas(entry) == [("SKU-1", 3, 0, -3)]
    assert book.levels("SKU-1") == (3, 0, 3, 0)


def test_receipt_of_a_transfer_arriving_before_the_transfer_drives_incoming_negative(book: Book) -> None:
    book.record(event(E.RECEIPT, ("SKU-1", 2), transfer_id="T-9"))
    assert book.levels("SKU-1") == (2, 0, 2, -2)


# --- stock.sale ------------------------------------------------------------------------------


def test_sale_takes_from_on_hand_when_every_line_is_available(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 2))
    entry = only_entry(book.record(event(E.SALE, ("SKU-1", 5), ("SKU-2", 1), order_id="O-1")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert deltas(entry) == [("SKU-1", -5, 0, 0), ("SKU-2", -1, 0, 0)]
    assert book.levels("SKU-1") == (0, 0, 0, 0)
    assert book.levels("SKU-2") == (1, 0, 1, 0)


def test_sale_is_rejected_whole_when_one_line_is_short_and_names_each_short_line(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 2), ("SKU-3", 1))
    book.record(event(E.RESERVATION, ("SKU-3", 1), reservation_id="R-1"))
    decision = book.record(event(E.SALE, ("SKU-1", 4), ("SKU-2", 3), ("SKU-3", 1), ("SKU-4", 1)))
    entry = only_entry(decision.entries)
    assert_rejected_without_effect(entry, RejectionReason.INSUFFICIENT_STOCK)
    assert entry.shortfall == (
        Shortfall("SKU-2", 3, 2),
        Shortfall("SKU-3", 1, 0),
        Shortfall("SKU-4", 1, 0),
    )
    assert [e.sku for e in entry.effects] == ["SKU-1", "SKU-2", "SKU-3", "SKU-4"]
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.levels("SKU-2") == (2, 0, 2, 0)
    assert book.levels("SKU-3") == (1, 1, 0, 0)


def test_sale_still_gets_a_position_when_rejected(book: Book) -> None:
    decision = book.record(event(E.SALE, ("SKU-1", 1)))
    assert decision.duplicate_of_position is None
    assert only_entry(decision.entries).outcome is Outcome.REJECTED
    assert book.position == 1


def test_sale_counts_reserved_units_as_unavailable(book: Book) -> None:
    book.receive(("SKU-1", 3))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.SALE, ("SKU-1", 2))).entries)
    assert entry.shortfall == (Shortfall("SKU-1", 2, 1),)
    assert only_entry(book.record(event(E.SALE, ("SKU-1", 1))).entries).outcome is Outcome.ACCEPTED
    assert book.levels("SKU-1") == (2, 2, 0, 0)


# --- stock.pos_sale --------------------------------------------------------------------------


def test_pos_sale_within_available_is_not_flagged(book: Book) -> None:
    book.receive(("SKU-1", 2))
    entry = only_entry(book.record(event(E.POS_SALE, ("SKU-1", 2), reference="receipt 000123")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert entry.effects == (LineEffect("SKU-1", 2, -2),)
    assert book.levels("SKU-1") == (0, 0, 0, 0)


def test_pos_sale_is_never_refused_and_is_flagged_oversold_per_line_below_zero(book: Book) -> None:
    book.receive(("SKU-1", 1), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-2", 4), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.POS_SALE, ("SKU-1", 3), ("SKU-2", 1), ("SKU-3", 1))).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert [(e.sku, e.on_hand_delta, e.oversold) for e in entry.effects] == [
        ("SKU-1", -3, True),
        ("SKU-2", -1, False),
        ("SKU-3", -1, True),
    ]
    assert book.levels("SKU-1") == (-2, 0, -2, 0)
    assert book.levels("SKU-2") == (4, 4, 0, 0)
    assert book.levels("SKU-3") == (-1, 0, -1, 0)


def test_pos_sale_is_flagged_when_it_eats_into_reserved_units(book: Book) -> None:
    book.receive(("SKU-1", 2))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.POS_SALE, ("SKU-1", 1))).entries)
    assert entry.effects[0].oversold
    assert book.levels("SKU-1") == (1, 2, -1, 0)


# --- stock.reservation -----------------------------------------------------------------------


def test_reservation_reserves_every_line(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 1))
    entry = only_entry(
        book.record(
            event(E.RESERVATION, ("SKU-1", 2), ("SKU-2", 1), reservation_id="R-1", order_id="O-1")
        ).entries
    )
    assert entry.outcome is Outcome.ACCEPTED
    assert deltas(entry) == [("SKU-1", 0, 2, 0), ("SKU-2", 0, 1, 0)]
    assert book.levels("SKU-1") == (5, 2, 3, 0)
    assert book.levels("SKU-2") == (1, 1, 0, 0)
    held = book.reservation("R-1")
    assert held.status is ReservationStatus.ACTIVE
    assert held.order_id == "O-1"
    assert {sku: line.remaining_units for sku, line in held.lines.items()} == {"SKU-1": 2, "SKU-2": 1}


def test_reservation_is_refused_when_the_last_unit_is_sold_at_the_till(book: Book) -> None:
    book.receive(("SKU-1", 1))
    book.record(event(E.POS_SALE, ("SKU-1", 1)))
    entry = only_entry(book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-1")).entries)
    assert_rejected_without_effect(entry, RejectionReason.INSUFFICIENT_STOCK)
    assert entry.shortfall == (Shortfall("SKU-1", 1, 0),)
    assert book.state.reservation(STORE, "R-1") is None


def test_reservation_is_all_lines_or_none(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 1))
    entry = only_entry(
        book.record(event(E.RESERVATION, ("SKU-1", 2), ("SKU-2", 2), reservation_id="R-1")).entries
    )
    assert_rejected_without_effect(entry, RejectionReason.INSUFFICIENT_STOCK)
    assert entry.shortfall == (Shortfall("SKU-2", 2, 1),)
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.levels("SKU-2") == (1, 0, 1, 0)
    assert book.state.reservation(STORE, "R-1") is None


def test_same_reservation_again_is_a_duplicate_of_the_first(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), ("SKU-2", 1), reservation_id="R-1", order_id="O-1"))
    placed_at = book.position
    book.receive(("SKU-3", 1))

    decision = book.record(
        event(E.RESERVATION, ("SKU-2", 1), ("SKU-1", 2), reservation_id="R-1", order_id="O-1")
    )

    assert decision.entries == ()
    assert decision.duplicate_of_position == placed_at
    assert book.levels("SKU-1") == (5, 2, 3, 0)
    assert book.levels("SKU-2") == (5, 1, 4, 0)


def test_same_reservation_again_is_a_duplicate_even_when_stock_has_run_out_since(book: Book) -> None:
    book.receive(("SKU-1", 2))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    decision = book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    assert decision.entries == () and decision.duplicate_of_position == 2


def test_reservation_id_reused_with_other_lines_is_a_conflict(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    for other_lines in ((("SKU-1", 3),), (("SKU-2", 2),), (("SKU-1", 2), ("SKU-2", 1))):
        entry = only_entry(book.record(event(E.RESERVATION, *other_lines, reservation_id="R-1")).entries)
        assert_rejected_without_effect(entry, RejectionReason.RESERVATION_CONFLICT)
        assert entry.shortfall == ()
    assert book.levels("SKU-1") == (5, 2, 3, 0)
    assert book.levels("SKU-2") == (5, 0, 5, 0)
    assert {sku: line.qty_units for sku, line in book.reservation("R-1").lines.items()} == {"SKU-1": 2}


def test_reservation_ids_are_per_store(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.receive(("SKU-1", 5), store_id=OTHER_STORE)
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    entry = only_entry(
        book.record(event(E.RESERVATION, ("SKU-1", 3), reservation_id="R-1", store_id=OTHER_STORE)).entries
    )
    assert entry.outcome is Outcome.ACCEPTED
    assert book.levels("SKU-1") == (5, 2, 3, 0)
    assert book.levels("SKU-1", OTHER_STORE) == (5, 3, 2, 0)


# --- stock.reservation_release ---------------------------------------------------------------


def test_release_of_an_unknown_reservation_is_rejected(book: Book) -> None:
    book.receive(("SKU-1", 5))
    for lines in ((), (("SKU-1", 1),)):
        entry = only_entry(book.record(event(E.RESERVATION_RELEASE, *lines, reservation_id="R-404")).entries)
        assert_rejected_without_effect(entry, RejectionReason.UNKNOWN_RESERVATION)
        assert entry.shortfall == ()
    assert book.levels("SKU-1") == (5, 0, 5, 0)


def test_release_without_lines_releases_everything_still_reserved(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), ("SKU-2", 2), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 1), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert deltas(entry) == [("SKU-1", 0, -2, 0), ("SKU-2", 0, -2, 0)]
    assert book.levels("SKU-1") == (4, 0, 4, 0)
    assert book.levels("SKU-2") == (5, 0, 5, 0)
    assert book.reservation("R-1").status is ReservationStatus.RELEASED


def test_release_of_some_lines_releases_at_most_what_is_still_reserved(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), ("SKU-2", 2), reservation_id="R-1"))
    entry = only_entry(
        book.record(
            event(E.RESERVATION_RELEASE, ("SKU-1", 1), ("SKU-2", 9), ("SKU-9", 1), reservation_id="R-1")
        ).entries
    )
    assert entry.outcome is Outcome.ACCEPTED
    assert deltas(entry) == [("SKU-1", 0, -1, 0), ("SKU-2", 0, -2, 0), ("SKU-9", 0, 0, 0)]
    assert book.levels("SKU-1") == (5, 2, 3, 0)
    assert book.levels("SKU-2") == (5, 0, 5, 0)
    assert book.levels("SKU-9") == (0, 0, 0, 0)
    held = book.reservation("R-1")
    assert {sku: line.remaining_units for sku, line in held.lines.items()} == {"SKU-1": 2, "SKU-2": 0}
    assert held.status is ReservationStatus.ACTIVE


def test_release_of_the_last_reserved_line_closes_the_reservation_as_released(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), ("SKU-2", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, ("SKU-2", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, ("SKU-1", 3), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.RELEASED
    assert book.levels("SKU-1")[1] == 0 and book.levels("SKU-2")[1] == 0


def test_releasing_what_is_already_shipped_is_an_accepted_no_op(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 2), reservation_id="R-1"))
    before = book.levels("SKU-1")
    for lines in ((), (("SKU-1", 2),)):
        entry = only_entry(book.record(event(E.RESERVATION_RELEASE, *lines, reservation_id="R-1")).entries)
        assert entry.outcome is Outcome.ACCEPTED and entry.reason is None
        assert all(e.reserved_delta == 0 and e.on_hand_delta == 0 for e in entry.effects)
    assert book.levels("SKU-1") == before == (3, 0, 3, 0)
    assert book.reservation("R-1").status is ReservationStatus.SHIPPED


def test_releasing_a_released_reservation_again_is_an_accepted_no_op(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1"))
    entry = only_entry(book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert all(e.reserved_delta == 0 for e in entry.effects)
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.reservation("R-1").status is ReservationStatus.RELEASED


# --- stock.shipment --------------------------------------------------------------------------


def test_plain_shipment_takes_from_on_hand_only(book: Book) -> None:
    book.receive(("SKU-1", 5))
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-1", 2), order_id="O-1")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert entry.effects == (LineEffect("SKU-1", 2, -2),)
    assert book.levels("SKU-1") == (3, 0, 3, 0)


def test_shipment_under_a_reservation_consumes_what_is_still_reserved(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), ("SKU-2", 1), reservation_id="R-1"))
    entry = only_entry(
        book.record(event(E.SHIPMENT, ("SKU-1", 2), ("SKU-2", 3), reservation_id="R-1")).entries
    )
    assert entry.outcome is Outcome.ACCEPTED
    # SKU-2: 3 shipped, only 1 was reserved: reserved -= min(3, 1)
    assert deltas(entry) == [("SKU-1", -2, -2, 0), ("SKU-2", -3, -1, 0)]
    assert not any(e.oversold or e.unknown_reservation for e in entry.effects)
    assert book.levels("SKU-1") == (3, 1, 2, 0)
    assert book.levels("SKU-2") == (2, 0, 2, 0)
    held = book.reservation("R-1")
    assert {sku: line.remaining_units for sku, line in held.lines.items()} == {"SKU-1": 1, "SKU-2": 0}
    assert held.status is ReservationStatus.PARTIALLY_SHIPPED


def test_partial_shipments_move_a_reservation_from_active_to_partially_shipped_to_shipped(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), ("SKU-2", 1), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.ACTIVE
    book.record(event(E.SHIPMENT, ("SKU-1", 1), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.PARTIALLY_SHIPPED
    book.record(event(E.SHIPMENT, ("SKU-2", 1), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.PARTIALLY_SHIPPED
    book.record(event(E.SHIPMENT, ("SKU-1", 2), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.SHIPPED
    assert book.levels("SKU-1") == (2, 0, 2, 0)
    assert book.levels("SKU-2") == (4, 0, 4, 0)


def test_shipment_of_a_sku_outside_the_reservation_leaves_reserved_alone(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), reservation_id="R-1"))
    book.record(event(E.RESERVATION, ("SKU-2", 2), reservation_id="R-2"))
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-2", 1), reservation_id="R-1")).entries)
    assert deltas(entry) == [("SKU-2", -1, 0, 0)]
    assert not entry.effects[0].unknown_reservation
    assert book.levels("SKU-2") == (4, 2, 2, 0)
    assert book.reservation("R-1").status is ReservationStatus.ACTIVE


def test_shipment_with_an_unknown_reservation_is_recorded_as_plain_and_flagged(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-1", 2), reservation_id="R-404")).entries)
    assert entry.outcome is Outcome.ACCEPTED and entry.reason is None
    assert entry.effects == (LineEffect("SKU-1", 2, -2, 0, 0, oversold=False, unknown_reservation=True),)
    assert book.levels("SKU-1") == (3, 2, 1, 0)
    assert book.state.reservation(STORE, "R-404") is None
    assert book.reservation("R-1").status is ReservationStatus.ACTIVE


def test_shipment_is_never_refused_and_is_flagged_oversold_when_available_goes_below_zero(book: Book) -> None:
    book.receive(("SKU-1", 3), ("SKU-2", 3))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-2"))
    # under R-1: on_hand 3 -> 1, reserved 3 -> 1: available 0, not oversold
    entry = only_entry(
        book.record(event(E.SHIPMENT, ("SKU-1", 2), ("SKU-2", 4), reservation_id="R-1")).entries
    )
    assert [(e.sku, e.oversold) for e in entry.effects] == [("SKU-1", False), ("SKU-2", True)]
    assert book.levels("SKU-1") == (1, 1, 0, 0)
    assert book.levels("SKU-2") == (-1, 0, -1, 0)
    # plain shipment of the unit reserved by R-2
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-1", 1))).entries)
    assert entry.effects[0].oversold
    assert book.levels("SKU-1") == (0, 1, -1, 0)


def test_shipment_beyond_the_reservation_is_flagged_oversold_only_for_the_excess_over_available(
    book: Book,
) -> None:
    book.receive(("SKU-1", 2))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-1", 3), reservation_id="R-1")).entries)
    assert deltas(entry) == [("SKU-1", -3, -2, 0)]
    assert entry.effects[0].oversold
    assert book.levels("SKU-1") == (-1, 0, -1, 0)
    assert book.reservation("R-1").status is ReservationStatus.SHIPPED


def test_shipment_after_a_release_takes_nothing_off_reserved(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-2"))
    book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1"))
    entry = only_entry(book.record(event(E.SHIPMENT, ("SKU-1", 2), reservation_id="R-1")).entries)
    assert deltas(entry) == [("SKU-1", -2, 0, 0)]
    assert not entry.effects[0].unknown_reservation
    assert book.levels("SKU-1") == (3, 1, 2, 0)
    assert book.reservation("R-1").status is ReservationStatus.RELEASED


# --- stock.return, stock.adjustment, stock.count ---------------------------------------------


def test_return_adds_to_on_hand(book: Book) -> None:
    book.receive(("SKU-1", 1))
    entry = only_entry(book.record(event(E.RETURN, ("SKU-1", 2), order_id="O-1")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert entry.effects == (LineEffect("SKU-1", 2, 2),)
    assert book.levels("SKU-1") == (3, 0, 3, 0)


def test_adjustment_is_signed_and_never_refused(book: Book) -> None:
    book.receive(("SKU-1", 1))
    entry = only_entry(book.record(event(E.ADJUSTMENT, ("SKU-1", -3), ("SKU-2", 4), reason="damage")).entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert deltas(entry) == [("SKU-1", -3, 0, 0), ("SKU-2", 4, 0, 0)]
    assert not any(e.oversold for e in entry.effects)
    assert book.levels("SKU-1") == (-2, 0, -2, 0)
    assert book.levels("SKU-2") == (4, 0, 4, 0)


def test_count_sets_on_hand_and_records_the_difference(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 1))
    book.record(event(E.RESERVATION, ("SKU-1", 4), reservation_id="R-1"))
    entry = only_entry(
        book.record(event(E.COUNT, ("SKU-1", 2), ("SKU-2", 7), ("SKU-3", 0), reference="C-1")).entries
    )
    assert entry.outcome is Outcome.ACCEPTED
    assert entry.effects == (
        LineEffect("SKU-1", 2, -3),
        LineEffect("SKU-2", 7, 6),
        LineEffect("SKU-3", 0, 0),
    )
    # a count never touches reserved, even when it leaves available below zero
    assert book.levels("SKU-1") == (2, 4, -2, 0)
    assert book.levels("SKU-2") == (7, 0, 7, 0)
    assert book.levels("SKU-3") == (0, 0, 0, 0)


def test_count_of_a_negative_level_brings_it_back_to_the_counted_amount(book: Book) -> None:
    book.record(event(E.POS_SALE, ("SKU-1", 3)))
    entry = only_entry(book.record(event(E.COUNT, ("SKU-1", 1))).entries)
    assert entry.effects == (LineEffect("SKU-1", 1, 4),)
    assert book.levels("SKU-1") == (1, 0, 1, 0)


# --- stock.transfer --------------------------------------------------------------------------


def test_transfer_is_rejected_like_a_sale(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 1))
    book.record(event(E.RESERVATION, ("SKU-2", 1), reservation_id="R-1"))
    decision = book.record(
        event(E.TRANSFER, ("SKU-1", 5), ("SKU-2", 1), to_store=OTHER_STORE, transfer_id="T-1")
    )
    entry = only_entry(decision.entries)
    assert_rejected_without_effect(entry, RejectionReason.INSUFFICIENT_STOCK)
    assert entry.store_id == STORE
    assert entry.shortfall == (Shortfall("SKU-2", 1, 0),)
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.levels("SKU-1", OTHER_STORE) == (0, 0, 0, 0)


def test_accepted_transfer_records_an_outgoing_entry_here_and_an_incoming_entry_there(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 2))
    decision = book.record(
        event(E.TRANSFER, ("SKU-1", 3), ("SKU-2", 2), to_store=OTHER_STORE, transfer_id="T-1")
    )
    assert len(decision.entries) == 2
    assert {entry.store_id for entry in decision.entries} == {STORE, OTHER_STORE}
    (outgoing,) = (entry for entry in decision.entries if entry.store_id == STORE)
    (incoming,) = (entry for entry in decision.entries if entry.store_id == OTHER_STORE)
    assert outgoing.outcome is Outcome.ACCEPTED and outgoing.store_id == STORE
    assert outgoing.event.type is E.TRANSFER
    assert deltas(outgoing) == [("SKU-1", -3, 0, 0), ("SKU-2", -2, 0, 0)]
    assert incoming.outcome is Outcome.ACCEPTED and incoming.store_id == OTHER_STORE
    assert incoming.event.type is E.TRANSFER_INCOMING
    assert incoming.event.transfer_id == "T-1"
    assert deltas(incoming) == [("SKU-1", 0, 0, 3), ("SKU-2", 0, 0, 2)]
    assert book.levels("SKU-1") == (2, 0, 2, 0)
    assert book.levels("SKU-2") == (0, 0, 0, 0)
    assert book.levels("SKU-1", OTHER_STORE) == (0, 0, 0, 3)
    assert book.levels("SKU-2", OTHER_STORE) == (0, 0, 0, 2)

    book.record(event(E.RECEIPT, ("SKU-1", 3), ("SKU-2", 2), store_id=OTHER_STORE, transfer_id="T-1"))
    assert book.levels("SKU-1", OTHER_STORE) == (3, 0, 3, 0)
    assert book.levels("SKU-2", OTHER_STORE) == (2, 0, 2, 0)


# --- expiry and the reservation lifecycle ----------------------------------------------------


def test_expiry_releases_what_is_still_reserved_and_marks_the_reservation_expired(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    expires_at = datetime(2026, 11, 22, 12, tzinfo=UTC)
    book.record(
        event(
            E.RESERVATION,
            ("SKU-1", 3),
            ("SKU-2", 2),
            reservation_id="R-1",
            order_id="O-1",
            expires_at=expires_at,
        )
    )
    assert book.reservation("R-1").expires_at == expires_at
    entry = only_entry(book.expire("R-1").entries)
    assert entry.outcome is Outcome.ACCEPTED
    assert entry.event.type is E.RESERVATION_EXPIRED
    assert entry.event.reservation_id == "R-1" and entry.event.order_id == "O-1"
    assert entry.store_id == STORE
    assert deltas(entry) == [("SKU-1", 0, -3, 0), ("SKU-2", 0, -2, 0)]
    assert book.levels("SKU-1") == (5, 0, 5, 0)
    assert book.levels("SKU-2") == (5, 0, 5, 0)
    assert book.reservation("R-1").status is ReservationStatus.EXPIRED


def test_expiry_after_partial_shipments_marks_the_reservation_expired(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 1), reservation_id="R-1"))
    entry = only_entry(book.expire("R-1").entries)
    assert deltas(entry) == [("SKU-1", 0, -2, 0)]
    assert book.levels("SKU-1") == (4, 0, 4, 0)
    assert book.reservation("R-1").status is ReservationStatus.EXPIRED


def test_release_after_partial_shipments_marks_the_reservation_released(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 1), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.RELEASED


def test_expiry_of_a_fully_shipped_reservation_changes_nothing(book: Book) -> None:
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 3), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 3), reservation_id="R-1"))
    entry = only_entry(book.expire("R-1").entries)
    assert all(e.reserved_delta == 0 for e in entry.effects)
    assert book.levels("SKU-1") == (2, 0, 2, 0)
    assert book.reservation("R-1").status is ReservationStatus.SHIPPED


def test_shipping_the_rest_after_a_partial_release_closes_the_reservation_as_shipped(book: Book) -> None:
    """CONTRACT: partially_shipped only "while some is shipped and some still reserved"."""
    book.receive(("SKU-1", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 5), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, ("SKU-1", 2), reservation_id="R-1"))
    assert book.reservation("R-1").status is ReservationStatus.ACTIVE
    book.record(event(E.SHIPMENT, ("SKU-1", 3), reservation_id="R-1"))
    held = book.reservation("R-1")
    assert held.remaining_units == 0
    assert book.levels("SKU-1") == (2, 0, 2, 0)
    assert held.status is ReservationStatus.SHIPPED


def test_a_release_after_the_last_unit_shipped_leaves_the_reservation_shipped(book: Book) -> None:
    book.receive(("SKU-1", 5), ("SKU-2", 5))
    book.record(event(E.RESERVATION, ("SKU-1", 2), ("SKU-2", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, ("SKU-2", 2), reservation_id="R-1"))
    book.record(event(E.SHIPMENT, ("SKU-1", 2), reservation_id="R-1"))
    book.record(event(E.RESERVATION_RELEASE, reservation_id="R-1"))
    book.expire("R-1")
    assert book.reservation("R-1").status is ReservationStatus.SHIPPED


def test_producer_events_only_ledger_records_cannot_be_decided(book: Book) -> None:
    for ledger_type in (E.RESERVATION_EXPIRED, E.TRANSFER_INCOMING):
        with pytest.raises(ValueError):
            decide(event(ledger_type, ("SKU-1", 1), reservation_id="R-1"), book.state)
