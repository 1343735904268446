"""Unit tests of the stored form of an entry: decoding what was encoded gives the same entry back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from ledger_book import OTHER_STORE, STORE, Book, event

from ledger.domain.model import ChannelQuota, Entry, EventType, Outcome, Policy
from ledger.storage.codec import STATE_FORMAT_VERSION, decode, encode

E = EventType
RECORDED_AT = "2026-11-22T07:15:00.123456+00:00"


def recorded_entries() -> dict[str, Entry]:
    """One entry of every kind the ledger records, decided by the rules from a small story."""
    book = Book()
    entries: dict[str, Entry] = {}

    def keep(name: str, stock_event_entries: tuple[Entry, ...]) -> None:
        for entry in stock_event_entries:
            own_entry = entry.event.type is not EventType.TRANSFER_INCOMING
            entries[name if own_entry else f"{name}, incoming"] = entry

    keep("receipt", book.record(event(E.RECEIPT, ("SKU-1", 10), ("SKU-2", 4), reference="GRN-1")).entries)
    keep(
        "receipt of a transfer",
        book.record(
            event(E.RECEIPT, ("SKU-1", 1), store_id=OTHER_STORE, transfer_id="T-0", reference="from store-12")
        ).entries,
    )
    keep("sale", book.record(event(E.SALE, ("SKU-1", 1), order_id="O-1", principal="web-shop")).entries)
    keep("rejected sale", book.record(event(E.SALE, ("SKU-1", 2), ("SKU-2", 9), ("SKU-3", 1))).entries)
    keep(
        "pos sale oversold",
        book.record(event(E.POS_SALE, ("SKU-3", 2), reference="receipt 000123", principal="kafka")).entries,
    )
    expires_at = datetime(2026, 11, 23, 10, tzinfo=timezone(timedelta(hours=3)))
    keep(
        "reservation",
        book.record(
            event(
                E.RESERVATION,
                ("SKU-1", 3),
                ("SKU-2", 1),
                reservation_id="R-1",
                order_id="O-2",
                expires_at=expires_at,
            )
        ).entries,
    )
    keep(
        "rejected reservation", book.record(event(E.RESERVATION, ("SKU-1", 99), reservation_id="R-2")).entries
    )
    keep(
        "conflicting reservation",
        book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-1")).entries,
    )
    keep(
        "shipment under a reservation",
        book.record(event(E.SHIPMENT, ("SKU-1", 1), reservation_id="R-1", order_id="O-2")).entries,
    )
    keep(
        "shipment with an unknown reservation",
        book.record(event(E.SHIPMENT, ("SKU-2", 9), reservation_id="R-404")).entries,
    )
    keep(
        "release of some lines",
        book.record(event(E.RESERVATION_RELEASE, ("SKU-1", 1), reservation_id="R-1")).entries,
    )
    keep(
        "rejected release without lines",
        book.record(event(E.RESERVATION_RELEASE, reservation_id="R-404")).entries,
    )
    book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-3"))
    book.record(event(E.RESERVATION, ("SKU-1", 1), reservation_id="R-4"))
    keep("expiry", book.expire("R-4").entries)
    keep("return", book.record(event(E.RETURN, ("SKU-1", 1), order_id="O-1")).entries)
    keep(
        "adjustment",
        book.record(event(E.ADJUSTMENT, ("SKU-1", -2), ("SKU-4", 1_000_000_000), reason="damage")).entries,
    )
    keep("count", book.record(event(E.COUNT, ("SKU-1", 0), ("SKU-2", 5), reference="C-1")).entries)
    keep(
        "transfer",
        book.record(
            event(E.TRANSFER, ("SKU-2", 2), to_store=OTHER_STORE, transfer_id="T-1", principal="wms")
        ).entries,
    )
    keep(
        "rejected transfer",
        book.record(event(E.TRANSFER, ("SKU-2", 99), to_store=OTHER_STORE, transfer_id="T-2")).entries,
    )
    keep("release without lines", book.record(event(E.RESERVATION_RELEASE, reservation_id="R-3")).entries)
    online = Policy(2, (ChannelQuota("marketplace", units=4), ChannelQuota("online", pct=30)))
    keep(
        "policy change",
        book.record(event(E.POLICY_CHANGED, ("*", 0), policy=online, principal="ops")).entries,
    )
    keep(
        "reservation under a channel",
        book.record(event(E.RESERVATION, ("SKU-2", 1), reservation_id="R-5", channel="online")).entries,
    )
    keep("policy cleared", book.record(event(E.POLICY_CHANGED, ("*", 0))).entries)
    return entries


ENTRIES = recorded_entries()


def entries_after(entry: Entry) -> int:
    """How many entries of its event the writer records after this one."""
    return 1 if entry.event.type is EventType.TRANSFER_INCOMING else 0


def round_trip(entry: Entry, store_version: int = 7) -> tuple[Entry, str]:
    stored = encode(entry, store_version, RECORDED_AT, entries_after(entry))
    assert stored.originator_id == entry.store_id
    assert stored.originator_version == store_version
    assert stored.topic == entry.event.type.value
    decoded = decode(str(stored.originator_id), stored.topic, stored.state)
    assert decoded.event_entries_after == entries_after(entry)
    return decoded.entry, decoded.recorded_at


def test_the_story_covers_every_type_and_outcome() -> None:
    assert {entry.event.type for entry in ENTRIES.values()} == set(EventType)
    assert {entry.outcome for entry in ENTRIES.values()} == {Outcome.ACCEPTED, Outcome.REJECTED}
    assert any(entry.shortfall for entry in ENTRIES.values())
    assert any(effect.oversold for entry in ENTRIES.values() for effect in entry.effects)
    assert any(effect.unknown_reservation for entry in ENTRIES.values() for effect in entry.effects)
    assert ENTRIES["transfer, incoming"].store_id == OTHER_STORE and ENTRIES["transfer"].store_id == STORE
    assert {entry.event.principal for entry in ENTRIES.values()} == {
        None,
        "web-shop",
        "kafka",
        "wms",
        "ledger",
        "ops",
    }


def test_a_transfers_incoming_entry_and_an_expiry_name_their_principals() -> None:
    assert ENTRIES["transfer, incoming"].event.principal == "wms"  # the transfer's sender
    assert ENTRIES["expiry"].event.principal == "ledger"  # the ledger's own entry


def test_the_principal_is_stored_only_when_there_is_one() -> None:
    assert orjson.loads(encode(ENTRIES["sale"], 1, RECORDED_AT).state)["principal"] == "web-shop"
    assert "principal" not in orjson.loads(encode(ENTRIES["receipt"], 1, RECORDED_AT).state)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_an_entry_stored_in_the_second_format_is_still_read_without_a_principal(name: str) -> None:
    """Format 2 had no principal: such an entry reads as one sent with none (null in the history)."""
    entry = ENTRIES[name]
    stored = encode(entry, 3, RECORDED_AT, entries_after(entry))
    state = orjson.loads(stored.state)
    state["v"] = 2
    state.pop("principal", None)
    decoded = decode(str(stored.originator_id), stored.topic, orjson.dumps(state))
    assert decoded.entry == dataclasses.replace(entry, event=dataclasses.replace(entry.event, principal=None))


def test_a_channel_and_a_policy_are_stored_only_when_there_is_one() -> None:
    placed = orjson.loads(encode(ENTRIES["reservation under a channel"], 1, RECORDED_AT).state)
    changed = orjson.loads(encode(ENTRIES["policy change"], 1, RECORDED_AT).state)
    cleared = orjson.loads(encode(ENTRIES["policy cleared"], 1, RECORDED_AT).state)
    assert placed["channel"] == "online" and "policy" not in placed
    assert changed["policy"] == {
        "safety_stock": 2,
        "channels": {"marketplace": {"quota_units": 4}, "online": {"quota_pct": 30}},
    }
    assert "policy" not in cleared and "channel" not in cleared
    assert "channel" not in orjson.loads(encode(ENTRIES["reservation"], 1, RECORDED_AT).state)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_an_entry_comes_back_from_storage_unchanged(name: str) -> None:
    entry = ENTRIES[name]
    decoded, recorded_at = round_trip(entry)
    assert decoded == entry
    assert recorded_at == RECORDED_AT


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_times_keep_their_offsets_through_storage(name: str) -> None:
    entry = ENTRIES[name]
    decoded, _ = round_trip(entry)
    assert decoded.event.time.utcoffset() == entry.event.time.utcoffset()
    assert decoded.event.time.isoformat() == entry.event.time.isoformat()
    if entry.event.expires_at is not None:
        assert decoded.event.expires_at is not None
        assert decoded.event.expires_at.isoformat() == entry.event.expires_at.isoformat()


def test_microseconds_survive_storage() -> None:
    entry = ENTRIES["sale"]
    moment = datetime(2026, 11, 22, 7, 15, 0, 654321, tzinfo=UTC)
    precise = dataclasses.replace(entry, event=dataclasses.replace(entry.event, time=moment))
    decoded, _ = round_trip(precise)
    assert decoded.event.time == moment


def test_the_stored_state_is_json_with_a_format_version() -> None:
    stored = encode(ENTRIES["rejected sale"], 1, RECORDED_AT)
    state = orjson.loads(stored.state)
    assert state["v"] == STATE_FORMAT_VERSION == 4
    assert state["outcome"] == "rejected"
    assert state["rejection"] == "insufficient_stock"
    assert state["recorded_at"] == RECORDED_AT


def test_a_transfers_incoming_entry_says_that_its_event_goes_on_in_the_next_entry() -> None:
    """The event's position is its last entry's: the rebuild reads it from the stored entry."""
    incoming = orjson.loads(encode(ENTRIES["transfer, incoming"], 1, RECORDED_AT, 1).state)
    own = orjson.loads(encode(ENTRIES["transfer"], 1, RECORDED_AT).state)
    assert incoming["event_entries_after"] == 1
    assert "event_entries_after" not in own


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_an_entry_stored_in_the_first_format_is_still_read(name: str) -> None:
    """Format 1 had no `event_entries_after`: a transfer's incoming entry was always followed by
    the transfer's own, and every other event had one entry."""
    entry = ENTRIES[name]
    stored = encode(entry, 3, RECORDED_AT, entries_after(entry))
    state = orjson.loads(stored.state)
    state["v"] = 1
    state.pop("event_entries_after", None)
    state.pop("principal", None)
    decoded = decode(str(stored.originator_id), stored.topic, orjson.dumps(state))
    assert decoded.entry == dataclasses.replace(entry, event=dataclasses.replace(entry.event, principal=None))
    assert decoded.recorded_at == RECORDED_AT
    assert decoded.event_entries_after == entries_after(entry)
