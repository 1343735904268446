"""Marking codes on lines (CONTRACT §10): read from the envelope, stored with the entry, and sent to
the writer process, without losing one."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import orjson
import pytest
from ledger_book import Book, event

from ledger.domain.model import CODE_EVENT_TYPES, EventType, Line
from ledger.intake.envelope import IntakeLimits, InvalidEvent, read_envelope
from ledger.storage.codec import decode, encode

E = EventType
RECORDED_AT = "2026-11-22T07:15:00.123456+00:00"
CIS = ("0104601234567890215AB001", "0104601234567890215AB002")


def _shipment_with_codes() -> Any:
    book = Book()
    book.record(event(E.RECEIPT, ("SKU-1", 10), ("SKU-2", 4)))
    shipped = dataclasses.replace(
        event(E.SHIPMENT, order_id="O-1"), lines=(Line("SKU-1", 2, CIS), Line("SKU-2", 1))
    )
    [entry] = book.record(shipped).entries
    return entry


def test_an_entrys_codes_come_back_from_storage_line_by_line() -> None:
    entry = _shipment_with_codes()
    stored = encode(entry, 2, RECORDED_AT)
    assert orjson.loads(stored.state)["codes"] == {"SKU-1": list(CIS)}  # only the lines that have some
    assert decode(entry.store_id, stored.topic, stored.state).entry == entry


def test_an_entry_without_codes_stores_no_codes_key() -> None:
    book = Book()
    [entry] = book.record(event(E.RECEIPT, ("SKU-1", 10))).entries
    assert "codes" not in orjson.loads(encode(entry, 1, RECORDED_AT).state)


def test_an_event_with_codes_crosses_to_the_writer_process_unchanged() -> None:
    shipped = _shipment_with_codes().event
    assert pickle.loads(pickle.dumps(shipped, protocol=pickle.HIGHEST_PROTOCOL)) == shipped


def _envelope(event_type: str, *lines: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": "tests",
        "type": event_type,
        "time": "2026-11-22T10:15:00+03:00",
        "subject": "store-12",
        "data": {"lines": list(lines), **data},
    }


@pytest.mark.parametrize("event_type", sorted(t.value for t in CODE_EVENT_TYPES))
def test_the_types_that_move_units_out_or_back_carry_codes(event_type: str) -> None:
    extra = {"reservation_id": "R-1"} if event_type == "stock.reservation" else {}
    read = read_envelope(
        _envelope(event_type, {"sku": "A", "qty": 2, "codes": list(CIS)}, **extra), IntakeLimits()
    )
    assert read.lines == (Line("A", 2, CIS),)


def test_at_most_qty_codes_counted_in_base_units() -> None:
    limits = IntakeLimits(units={"box2": 2})
    boxed = read_envelope(
        _envelope("stock.sale", {"sku": "A", "qty": 1, "uom": "box2", "codes": list(CIS)}), limits
    )
    assert boxed.lines == (Line("A", 2, CIS),)
    with pytest.raises(InvalidEvent) as refused:
        read_envelope(_envelope("stock.sale", {"sku": "A", "qty": 1, "codes": list(CIS)}), limits)
    assert [e.field for e in refused.value.errors] == ["data.lines[0].codes"]


@pytest.mark.parametrize("event_type", ["stock.receipt", "stock.count", "stock.transfer"])
def test_other_types_refuse_codes_naming_the_field(event_type: str) -> None:
    extra = {"to_store": "store-2", "transfer_id": "T-1"} if event_type == "stock.transfer" else {}
    with pytest.raises(InvalidEvent) as refused:
        read_envelope(_envelope(event_type, {"sku": "A", "qty": 1, "codes": ["X"]}, **extra), IntakeLimits())
    assert [e.field for e in refused.value.errors] == ["data.lines[0].codes"]
