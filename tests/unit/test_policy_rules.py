"""Unit tests of the availability policy (CONTRACT §6): what a safety stock and a channel's quota
refuse, what they never limit, and the figures a stock answer gives."""

from __future__ import annotations

import pickle

import pytest
from ledger_book import STORE, Book, event

from ledger.domain.model import DEFAULT_SKU, ChannelQuota, EventType, Level, Outcome, Policy
from ledger.domain.policy import figures
from ledger.domain.rules import UNCHANGED_POLICY

E = EventType
ONLINE_30 = Policy(2, (ChannelQuota("online", pct=30),))


def set_policy(book: Book, sku: str, policy: Policy | None, store_id: str = STORE) -> None:
    decision = book.record(event(E.POLICY_CHANGED, (sku, 0), store_id=store_id, policy=policy))
    assert decision.entries and decision.entries[0].outcome is Outcome.ACCEPTED


def shortfall(book: Book, event_type: EventType, *pairs: tuple[str, int], **fields: object) -> list[tuple]:
    decision = book.record(event(event_type, *pairs, **fields))
    [entry] = [e for e in decision.entries if e.store_id == STORE]
    return [(s.sku, s.requested_units, s.available_units) for s in entry.shortfall]


def test_without_a_policy_everything_is_as_in_v1() -> None:
    book = Book()
    book.receive(("A", 10))
    shown = figures(book.level("A"), book.state.policy(STORE, "A"))
    assert (shown.safety_stock_units, shown.sellable_units, shown.channels) == (0, 10, {})
    assert shortfall(book, E.RESERVATION, ("A", 10), reservation_id="R1", channel="online") == []
    assert book.levels("A") == (10, 10, 0, 0)


def test_a_safety_stock_holds_back_units_from_reservations_sales_and_transfers() -> None:
    book = Book()
    book.receive(("A", 10))
    set_policy(book, "A", Policy(3))
    assert shortfall(book, E.RESERVATION, ("A", 8), reservation_id="R1") == [("A", 8, 7)]
    assert shortfall(book, E.SALE, ("A", 8)) == [("A", 8, 7)]
    assert shortfall(book, E.TRANSFER, ("A", 8), to_store="s2", transfer_id="T1") == [("A", 8, 7)]
    assert shortfall(book, E.RESERVATION, ("A", 7), reservation_id="R2") == []
    assert book.levels("A") == (10, 7, 3, 0)


def test_the_online_quota_refuses_the_reservation_past_it_and_the_whole_event() -> None:
    """30% of 100 on hand, 2 held back: online may hold 30; the 31st unit is refused, all lines."""
    book = Book()
    book.receive(("A", 100), ("B", 100))
    set_policy(book, DEFAULT_SKU, ONLINE_30)
    for number in range(30):
        assert shortfall(book, E.RESERVATION, ("A", 1), reservation_id=f"R{number}", channel="online") == []
    refused = shortfall(book, E.RESERVATION, ("B", 1), ("A", 1), reservation_id="R-last", channel="online")
    assert refused == [("A", 1, 0)]
    assert book.levels("B") == (100, 0, 100, 0)  # all lines or none
    shown = figures(book.level("A"), book.state.policy(STORE, "A"))
    assert (shown.safety_stock_units, shown.sellable_units) == (2, 68)
    assert shown.channels["online"].quota_units == 30
    assert shown.channels["online"].reserved_units == 30
    assert shown.channels["online"].sellable_units == 0
    # Another channel without a quota, or none at all, is limited by the store's sellable only.
    assert shortfall(book, E.RESERVATION, ("A", 68), reservation_id="R-shop") == []
    assert shortfall(book, E.SALE, ("A", 1), channel="call-center") == [("A", 1, 0)]


def test_a_sale_under_a_channel_takes_that_channels_sellable() -> None:
    book = Book()
    book.receive(("A", 10))
    set_policy(book, "A", Policy(0, (ChannelQuota("marketplace", units=2),)))
    assert shortfall(book, E.SALE, ("A", 3), channel="marketplace") == [("A", 3, 2)]
    assert shortfall(book, E.SALE, ("A", 3)) == []


def test_pos_sales_and_the_other_movements_are_never_limited() -> None:
    book = Book()
    book.receive(("A", 10))
    set_policy(book, "A", Policy(10, (ChannelQuota("online", units=0),)))
    for decided in (
        book.record(event(E.POS_SALE, ("A", 4), channel="online")),
        book.record(event(E.SHIPMENT, ("A", 1))),
        book.record(event(E.ADJUSTMENT, ("A", -1), reason="damage")),
        book.record(event(E.COUNT, ("A", 3))),
        book.record(event(E.RETURN, ("A", 1))),
    ):
        assert decided.entries[0].outcome is Outcome.ACCEPTED
    assert book.levels("A") == (4, 0, 4, 0)
    assert figures(book.level("A"), book.state.policy(STORE, "A")).sellable_units == -6  # may be negative


def test_a_channels_reserved_units_follow_shipments_releases_and_expiry() -> None:
    book = Book()
    book.receive(("A", 20), ("B", 20))
    book.record(event(E.RESERVATION, ("A", 5), ("B", 2), reservation_id="R1", channel="online"))
    book.record(event(E.RESERVATION, ("A", 4), reservation_id="R2", channel="online"))
    book.record(event(E.RESERVATION, ("A", 3), reservation_id="R3"))
    assert book.reservation("R1").channel == "online"
    assert book.level("A").channel_reserved == {"online": 9}
    book.record(event(E.SHIPMENT, ("A", 7), reservation_id="R1"))  # ships 5 reserved and 2 more
    assert book.level("A").channel_reserved == {"online": 4}
    book.record(event(E.RESERVATION_RELEASE, ("A", 1), reservation_id="R2"))
    assert book.level("A").channel_reserved == {"online": 3}
    book.expire("R2")
    book.record(event(E.RESERVATION_RELEASE, reservation_id="R1"))
    assert book.level("A").channel_reserved is None  # nothing held: back to what no channel costs
    assert book.level("B").channel_reserved is None
    assert book.levels("A") == (13, 3, 10, 0)


def test_a_quota_counts_reservations_placed_before_it_was_set() -> None:
    book = Book()
    book.receive(("A", 10))
    book.record(event(E.RESERVATION, ("A", 3), reservation_id="R1", channel="online"))
    set_policy(book, "A", Policy(0, (ChannelQuota("online", pct=50),)))
    assert shortfall(book, E.RESERVATION, ("A", 3), reservation_id="R2", channel="online") == [("A", 3, 2)]


def test_a_skus_own_policy_replaces_the_stores_default_and_clearing_it_restores_the_default() -> None:
    book = Book()
    book.receive(("A", 10))
    set_policy(book, DEFAULT_SKU, Policy(4))
    set_policy(book, "A", Policy(1))
    assert book.state.policy(STORE, "A") == Policy(1)
    assert book.state.policy(STORE, "B") == Policy(4)
    set_policy(book, "A", None)
    assert book.state.policy(STORE, "A") == Policy(4)
    set_policy(book, DEFAULT_SKU, None)
    assert book.state.policies == {}  # no store keeps an empty set of policies
    assert book.state.policy("s2", "A") is None  # a policy is per store


def test_a_change_that_changes_nothing_records_nothing() -> None:
    book = Book()
    assert book.record(event(E.POLICY_CHANGED, ("A", 0), policy=None)) == UNCHANGED_POLICY
    set_policy(book, "A", ONLINE_30)
    assert book.record(event(E.POLICY_CHANGED, ("A", 0), policy=ONLINE_30)) == UNCHANGED_POLICY
    assert book.position == 1


def test_a_policy_change_has_zero_deltas_on_its_one_line() -> None:
    book = Book()
    book.receive(("A", 10))
    decision = book.record(event(E.POLICY_CHANGED, ("A", 0), policy=ONLINE_30))
    [entry] = decision.entries
    assert [(e.sku, e.on_hand_delta, e.reserved_delta, e.incoming_delta) for e in entry.effects] == [
        ("A", 0, 0, 0)
    ]
    assert book.levels("A") == (10, 0, 10, 0)


@pytest.mark.parametrize(
    ("on_hand", "pct", "quota"), [(100, 30, 30), (7, 30, 2), (3, 33, 0), (-5, 50, 0), (9, 100, 9), (9, 0, 0)]
)
def test_a_percentage_quota_is_floored_and_never_negative(on_hand: int, pct: int, quota: int) -> None:
    shown = figures(Level(on_hand), Policy(0, (ChannelQuota("online", pct=pct),)))
    assert shown.channels["online"].quota_units == quota


def test_a_channels_sellable_is_the_lower_of_the_stores_and_what_its_quota_leaves() -> None:
    level = Level(10, 4, 0, {"online": 1})
    shown = figures(level, Policy(5, (ChannelQuota("online", units=8), ChannelQuota("web", units=0))))
    assert shown.sellable_units == 1
    assert shown.channels["online"].sellable_units == 1  # min(1, 8 - 1)
    assert shown.channels["web"].sellable_units == 0  # min(1, 0 - 0)


def test_an_event_with_a_channel_and_a_policy_crosses_a_process_boundary_unchanged() -> None:
    changed = event(E.POLICY_CHANGED, ("*", 0), policy=ONLINE_30, principal="ops")
    placed = event(E.RESERVATION, ("A", 1), reservation_id="R1", channel="online")
    assert pickle.loads(pickle.dumps(changed)) == changed
    assert pickle.loads(pickle.dumps(placed)) == placed
