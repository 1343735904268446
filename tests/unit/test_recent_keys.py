"""The writer's memory of the event keys it recorded lately (writer/recent_keys.py)."""

from __future__ import annotations

from support import events as ev

from ledger.domain.model import Entry, Outcome, RejectionReason, StockEvent
from ledger.results import Original
from ledger.writer.deciding import Pending
from ledger.writer.recent_keys import RecentKeys


def _event(event_id: str) -> StockEvent:
    return ev.stock_event(event_id, "stock.receipt", "store-1", [("SKU-1", 1)], source="tests/keys")


def _entry(
    event: StockEvent, outcome: Outcome = Outcome.ACCEPTED, reason: RejectionReason | None = None
) -> Entry:
    return Entry(event, outcome, (), reason)


def _remember(keys: RecentKeys, *event_ids: str, first_position: int = 1) -> None:
    events = [_event(event_id) for event_id in event_ids]
    entries = [_entry(event) for event in events]
    positions = list(range(first_position, first_position + len(events)))
    keys.remember(events, [Pending(entry_index=index) for index in range(len(events))], positions, entries)


def test_a_recorded_key_is_known_with_its_first_outcome_and_position() -> None:
    keys = RecentKeys()
    events = [_event("a"), _event("b"), _event("c")]
    entries = [_entry(events[0], Outcome.REJECTED, RejectionReason.INSUFFICIENT_STOCK)]
    # a is recorded (rejected), b is a duplicate of it, c a command refused whole: neither recorded.
    decided = [Pending(entry_index=0), Pending(duplicate_of_entry=0), Pending(refusal=None)]
    keys.remember(events, decided, [7], entries)
    assert keys.known(events) == {
        ("tests/keys", "a"): Original(Outcome.REJECTED, RejectionReason.INSUFFICIENT_STOCK, 7)
    }


def test_the_oldest_keys_are_forgotten_past_the_limit() -> None:
    keys = RecentKeys(keys_max=3)
    _remember(keys, "a", "b")
    _remember(keys, "c", "d", first_position=3)
    assert len(keys) == 3
    assert set(keys.known([_event(e) for e in "abcd"])) == {("tests/keys", e) for e in "bcd"}


def test_a_withdrawn_batch_takes_back_its_keys_and_not_its_duplicates_originals() -> None:
    keys = RecentKeys()
    _remember(keys, "a")
    resend_and_new = [_event("a"), _event("b")]
    original = keys.known(resend_and_new)[("tests/keys", "a")]
    decided = [Pending(duplicate_of=original), Pending(entry_index=0)]
    keys.remember(resend_and_new, decided, [2], [_entry(resend_and_new[1])])
    assert len(keys) == 2
    keys.withdraw(resend_and_new, decided)
    assert keys.known(resend_and_new) == {("tests/keys", "a"): original}
    keys.clear()
    assert not keys.known(resend_and_new)
