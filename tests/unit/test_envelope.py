"""Unit tests of reading a CloudEvents envelope (CONTRACT §1) into a StockEvent, or into field errors."""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any

import pytest

from ledger.domain.model import PRODUCER_EVENT_TYPES, EventType, Line
from ledger.intake import envelope as envelope_module
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent, read_envelope

LIMITS = IntakeLimits()

CONTRACT_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "pos-12-000123",
    "source": "pos/store-12",
    "type": "stock.pos_sale",
    "time": "2026-11-22T10:15:00+03:00",
    "subject": "store-12",
    "datacontenttype": "application/json",
    "data": {"lines": [{"sku": "SKU-1", "qty": 2}], "reference": "receipt 000123"},
}


def envelope(
    event_type: str = "stock.pos_sale", data: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    document = copy.deepcopy(CONTRACT_EXAMPLE)
    document["type"] = event_type
    if data is not None:
        document["data"] = data
    document.update(fields)
    return document


def lines(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"sku": sku, "qty": qty} for sku, qty in pairs]


def errors_of(document: object, limits: IntakeLimits = LIMITS) -> list[FieldError]:
    with pytest.raises(InvalidEvent) as caught:
        read_envelope(document, limits)
    assert caught.value.errors, "an InvalidEvent names at least one field"
    return caught.value.errors


def error_fields(document: object, limits: IntakeLimits = LIMITS) -> set[str]:
    return {error.field for error in errors_of(document, limits)}


# --- what is accepted ------------------------------------------------------------------------


def test_the_contract_example_is_read_as_a_pos_sale() -> None:
    event = read_envelope(copy.deepcopy(CONTRACT_EXAMPLE), LIMITS)
    assert event.event_id == "pos-12-000123"
    assert event.source == "pos/store-12"
    assert event.key == ("pos/store-12", "pos-12-000123")
    assert event.type is EventType.POS_SALE
    assert event.store_id == "store-12"
    assert event.time == datetime(2026, 11, 22, 7, 15, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(hours=3)
    assert event.lines == (Line("SKU-1", 2),)
    assert event.reference == "receipt 000123"
    assert (event.order_id, event.reservation_id, event.transfer_id, event.to_store, event.reason) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_datacontenttype_may_be_left_out() -> None:
    document = envelope()
    del document["datacontenttype"]
    assert read_envelope(document, LIMITS).type is EventType.POS_SALE


@pytest.mark.parametrize(
    "moment", ["2026-11-22T07:15:00Z", "2026-11-22T07:15:00.250Z", "2026-11-22T02:15:00-05:00"]
)
def test_time_in_any_offset_is_accepted(moment: str) -> None:
    event = read_envelope(envelope(time=moment), LIMITS)
    assert event.time.replace(microsecond=0) == datetime(2026, 11, 22, 7, 15, tzinfo=UTC)


@pytest.mark.parametrize("digits", ["123456789", "1234567891", "123456789123456789"])
def test_a_fraction_of_any_length_is_cut_to_the_microsecond(digits: str) -> None:
    event = read_envelope(envelope(time=f"2026-11-22T07:15:00.{digits}+03:00"), LIMITS)
    assert event.time == datetime(2026, 11, 22, 4, 15, 0, 123456, tzinfo=UTC)


def test_every_producer_type_with_its_data_is_read() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("stock.receipt", {"lines": lines(("A", 1)), "reference": "GRN-1", "transfer_id": "T-1"}),
        ("stock.sale", {"lines": lines(("A", 1)), "order_id": "O-1"}),
        ("stock.pos_sale", {"lines": lines(("A", 1))}),
        (
            "stock.reservation",
            {
                "lines": lines(("A", 1)),
                "reservation_id": "R-1",
                "order_id": "O-1",
                "expires_at": "2026-11-23T10:00:00+03:00",
            },
        ),
        ("stock.reservation_release", {"reservation_id": "R-1"}),
        ("stock.reservation_release", {"reservation_id": "R-1", "lines": lines(("A", 1))}),
        ("stock.shipment", {"lines": lines(("A", 1)), "reservation_id": "R-1", "order_id": "O-1"}),
        ("stock.return", {"lines": lines(("A", 1)), "order_id": "O-1"}),
        ("stock.adjustment", {"lines": lines(("A", -3)), "reason": "damage"}),
        ("stock.count", {"lines": lines(("A", 0), ("B", 7)), "reference": "C-1"}),
        ("stock.transfer", {"lines": lines(("A", 1)), "to_store": "store-7", "transfer_id": "T-1"}),
    ]
    for event_type, data in cases:
        event = read_envelope(envelope(event_type, data), LIMITS)
        assert event.type.value == event_type


def test_reservation_fields_are_carried_over() -> None:
    data = {
        "lines": lines(("A", 2)),
        "reservation_id": "R-1",
        "order_id": "O-1",
        "expires_at": "2026-11-23T10:00:00+03:00",
    }
    event = read_envelope(envelope("stock.reservation", data), LIMITS)
    assert event.reservation_id == "R-1" and event.order_id == "O-1"
    assert event.expires_at == datetime(2026, 11, 23, 10, tzinfo=timezone(timedelta(hours=3)))


@pytest.mark.parametrize("event_type", ["stock.reservation", "stock.sale", "stock.receipt", "stock.pos_sale"])
def test_a_channel_is_carried_over_on_any_type(event_type: str) -> None:
    """CONTRACT §6: it limits reservations and sales, and is kept in the history on the others."""
    data = {"lines": lines(("A", 1)), "reservation_id": "R-1", "channel": "call-center"}
    assert read_envelope(envelope(event_type, data), LIMITS).channel == "call-center"
    assert (
        read_envelope(
            envelope(event_type, {"lines": lines(("A", 1)), "reservation_id": "R-1"}), LIMITS
        ).channel
        is None
    )


@pytest.mark.parametrize("channel", ["", "on line", "a/b", "x" * 65, 7, ["online"]])
def test_a_channel_that_is_not_an_id_is_named(channel: object) -> None:
    data = {"lines": lines(("A", 1)), "reservation_id": "R-1", "channel": channel}
    assert error_fields(envelope("stock.reservation", data)) == {"data.channel"}


def test_release_without_lines_means_everything_still_reserved() -> None:
    event = read_envelope(envelope("stock.reservation_release", {"reservation_id": "R-1"}), LIMITS)
    assert event.lines == ()
    assert event.reservation_id == "R-1"


def test_transfer_fields_are_carried_over() -> None:
    data = {"lines": lines(("A", 2)), "to_store": "store-7", "transfer_id": "T-1"}
    event = read_envelope(envelope("stock.transfer", data), LIMITS)
    assert (event.to_store, event.transfer_id) == ("store-7", "T-1")


def test_adjustment_reason_and_signed_qty_are_carried_over() -> None:
    event = read_envelope(
        envelope("stock.adjustment", {"lines": lines(("A", -3)), "reason": "damage"}), LIMITS
    )
    assert event.lines == (Line("A", -3),) and event.reason == "damage"


@pytest.mark.parametrize("identifier", ["a", "A" * 64, "store-12_b.c:d", "0"])
def test_store_ids_and_skus_of_1_to_64_allowed_characters_are_accepted(identifier: str) -> None:
    event = read_envelope(envelope(subject=identifier, data={"lines": lines((identifier, 1))}), LIMITS)
    assert event.store_id == identifier and event.lines == (Line(identifier, 1),)


def test_quantity_limits_are_inclusive() -> None:
    big = 1_000_000_000
    assert read_envelope(envelope(data={"lines": lines(("A", big))}), LIMITS).lines == (Line("A", big),)
    adjustment = envelope("stock.adjustment", {"lines": lines(("A", -big)), "reason": "write-off"})
    assert read_envelope(adjustment, LIMITS).lines == (Line("A", -big),)
    assert read_envelope(envelope("stock.count", {"lines": lines(("A", 0))}), LIMITS).lines == (Line("A", 0),)


def test_a_thousand_lines_are_accepted() -> None:
    many = lines(*((f"SKU-{n}", 1) for n in range(1000)))
    assert len(read_envelope(envelope(data={"lines": many}), LIMITS).lines) == 1000


def test_configured_units_convert_to_the_base_unit() -> None:
    limits = IntakeLimits(units={"box12": 12, "SKU-1/box": 6})
    data = {
        "lines": [
            {"sku": "SKU-1", "qty": 2, "uom": "box"},
            {"sku": "SKU-2", "qty": 3, "uom": "box12"},
            {"sku": "SKU-3", "qty": 5},
            {"sku": "SKU-1x", "qty": 1, "uom": "box12"},
        ]
    }
    event = read_envelope(envelope(data=data), limits)
    assert event.lines == (Line("SKU-1", 12), Line("SKU-2", 36), Line("SKU-3", 5), Line("SKU-1x", 12))


def test_a_per_sku_units_key_is_no_unit_of_another_sku() -> None:
    """`SKU-1/box` sent as the unit of SKU-2 recorded 6 units of SKU-2 per unit sent."""
    limits = IntakeLimits(units={"SKU-1/box": 6, "box12": 12})
    data = {"lines": [{"sku": "SKU-2", "qty": 1, "uom": "SKU-1/box"}]}
    assert error_fields(envelope(data=data), limits) == {"data.lines[0].uom"}
    data = {"lines": [{"sku": "SKU-1", "qty": 1, "uom": "SKU-1/box"}]}
    assert error_fields(envelope(data=data), limits) == {"data.lines[0].uom"}  # the unit is "box"


def test_a_per_sku_unit_applies_to_that_sku_only() -> None:
    limits = IntakeLimits(units={"SKU-1/box": 6})
    data = {"lines": [{"sku": "SKU-2", "qty": 1, "uom": "box"}]}
    assert error_fields(envelope(data=data), limits) == {"data.lines[0].uom"}


# --- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("document", [[CONTRACT_EXAMPLE], "stock.pos_sale", 42, None, b"{}"])
def test_a_document_that_is_not_an_object_is_refused(document: object) -> None:
    errors = errors_of(document)
    assert [e.field for e in errors] == [""]


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "time", "subject", "type"])
def test_a_missing_envelope_attribute_is_named(missing: str) -> None:
    document = envelope()
    del document[missing]
    assert error_fields(document) == {missing}


def test_specversion_must_be_1_0() -> None:
    assert error_fields(envelope(specversion="0.3")) == {"specversion"}
    assert error_fields(envelope(specversion=1.0)) == {"specversion"}


@pytest.mark.parametrize("attribute", ["id", "source"])
@pytest.mark.parametrize("value", ["", 123, "x" * 257])
def test_id_and_source_must_be_short_non_empty_strings(attribute: str, value: object) -> None:
    assert error_fields(envelope(**{attribute: value})) == {attribute}


@pytest.mark.parametrize(
    "moment",
    [
        "2026-11-22T10:15:00",  # no offset
        "2026-11-22",
        "22.11.2026 10:15",
        "not a time",
        1795850100,  # a unix time
        1795850100.5,
        ["2026-11-22T10:15:00+03:00"],
    ],
)
def test_time_must_be_rfc3339_with_an_offset(moment: object) -> None:
    assert error_fields(envelope(time=moment)) == {"time"}


def test_expires_at_must_be_rfc3339_with_an_offset() -> None:
    data = {"lines": lines(("A", 1)), "reservation_id": "R-1", "expires_at": "2026-11-23T10:00:00"}
    assert error_fields(envelope("stock.reservation", data)) == {"data.expires_at"}


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+03:00"])
def test_a_time_whose_utc_form_is_out_of_range_is_refused_at_intake(moment: str) -> None:
    """Valid RFC 3339, but past year 9999 (or before year 1) in UTC, where the ledger keeps times:
    refused here, not when the writer converts it (which failed the whole batch, every time)."""
    data = {"lines": lines(("A", 1)), "reservation_id": "R-1", "expires_at": moment}
    assert error_fields(envelope("stock.reservation", data)) == {"data.expires_at"}
    assert error_fields(envelope(time=moment)) == {"time"}


@pytest.mark.parametrize(
    "store_id",
    [
        "store/12",
        pytest.param("s" * 65, id="65-characters"),
        "",
        "store 12",
        "магазин",
        12,
        "store-12\n",
        "\nstore-12",
    ],
)
def test_a_bad_store_id_is_named(store_id: object) -> None:
    assert error_fields(envelope(subject=store_id)) == {"subject"}


@pytest.mark.parametrize(
    "sku",
    [
        "SKU/1",
        pytest.param("S" * 65, id="65-characters"),
        "",
        "SKU 1",
        None,
        7,
        "SKU-1\n",
        pytest.param("S" * 64 + "\n", id="64-characters-and-a-newline"),
    ],
)
def test_a_bad_sku_is_named(sku: object) -> None:
    data = {"lines": [{"sku": "OK-1", "qty": 1}, {"sku": sku, "qty": 1}]}
    assert error_fields(envelope(data=data)) == {"data.lines[1].sku"}


def test_datacontenttype_other_than_json_is_refused() -> None:
    assert error_fields(envelope(datacontenttype="text/plain")) == {"datacontenttype"}


@pytest.mark.parametrize(
    "event_type", ["stock.reservation_expired", "stock.transfer_incoming", "stock.policy_changed"]
)
def test_types_only_the_ledger_records_are_refused_from_producers(event_type: str) -> None:
    assert error_fields(envelope(event_type)) == {"type"}


@pytest.mark.parametrize(
    "source", ["ledger/expiry", "ledger/http", "ledger/sourcing", "ledger/policies", "ledger/x"]
)
def test_the_ledgers_own_sources_are_refused_from_producers(source: str) -> None:
    """An event under `ledger/expiry` took the key of a reservation's expiry, and no reservation
    due with it ever expired (every turn's batch failed on the key)."""
    assert error_fields(envelope(source=source)) == {"source"}
    assert read_envelope(envelope(source=source), LIMITS, made_by_ledger=True).source == source


@pytest.mark.parametrize("source", ["ledger", "Ledger/expiry", "pos/ledger/1", "ledgers/1"])
def test_a_source_outside_the_ledgers_own_is_a_producers(source: str) -> None:
    assert read_envelope(envelope(source=source), LIMITS).source == source


@pytest.mark.parametrize("event_type", ["stock.unknown", "receipt", "", 3])
def test_an_unknown_type_is_named(event_type: object) -> None:
    assert error_fields(envelope(event_type)) == {"type"}


@pytest.mark.parametrize("data", [None, [], "lines", 1])
def test_data_must_be_an_object(data: object) -> None:
    document = envelope()
    document["data"] = data
    assert error_fields(document) == {"data"}


def test_data_missing_is_named() -> None:
    document = envelope()
    del document["data"]
    assert error_fields(document) == {"data"}


def test_every_wrong_field_is_named_at_once() -> None:
    document = envelope(subject="a/b", time="yesterday", data={"lines": lines(("A", 0), ("B/1", 1))})
    del document["source"]
    assert error_fields(document) == {"subject", "time", "source", "data.lines[0].qty", "data.lines[1].sku"}


# --- lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "says"),
    [
        (-5, "must be an integer >= 1"),  # once said with the bound below, two rules in one line
        (0, "must be an integer >= 1"),
        (1_000_000_001, "must be at most 1,000,000,000 in absolute value"),
    ],
)
def test_a_quantity_out_of_bounds_is_told_the_one_rule_it_breaks(qty: int, says: str) -> None:
    (error,) = errors_of(envelope(data={"lines": lines(("A", qty))}))
    assert (error.field, error.message) == ("data.lines[0].qty", says)


@pytest.mark.parametrize("qty", [1.0, 2.5, True, False, "2", None, [2]])
def test_qty_must_be_an_integer(qty: object) -> None:
    data = {"lines": [{"sku": "A", "qty": qty}]}
    assert error_fields(envelope(data=data)) == {"data.lines[0].qty"}


@pytest.mark.parametrize(
    "event_type",
    [
        "stock.sale",
        "stock.pos_sale",
        "stock.receipt",
        "stock.shipment",
        "stock.return",
        "stock.transfer",
        "stock.reservation",
    ],
)
@pytest.mark.parametrize("qty", [0, -1, 1_000_000_001])
def test_qty_of_a_movement_is_from_1_to_a_billion(event_type: str, qty: int) -> None:
    data = {"lines": lines(("A", qty)), "reservation_id": "R-1", "to_store": "store-7", "transfer_id": "T-1"}
    assert error_fields(envelope(event_type, data)) == {"data.lines[0].qty"}


@pytest.mark.parametrize("qty", [0, 1_000_000_001, -1_000_000_001])
def test_adjustment_qty_is_signed_non_zero_and_at_most_a_billion(qty: int) -> None:
    data = {"lines": lines(("A", qty)), "reason": "damage"}
    assert error_fields(envelope("stock.adjustment", data)) == {"data.lines[0].qty"}


@pytest.mark.parametrize("qty", [-1, 1_000_000_001])
def test_count_qty_is_a_counted_amount_from_0_to_a_billion(qty: int) -> None:
    assert error_fields(envelope("stock.count", {"lines": lines(("A", qty))})) == {"data.lines[0].qty"}


def test_release_lines_qty_is_at_least_1() -> None:
    data = {"reservation_id": "R-1", "lines": lines(("A", 0))}
    assert error_fields(envelope("stock.reservation_release", data)) == {"data.lines[0].qty"}


def test_more_than_a_thousand_lines_are_refused() -> None:
    many = lines(*((f"SKU-{n}", 1) for n in range(1001)))
    assert error_fields(envelope(data={"lines": many})) == {"data.lines"}


def test_the_line_limit_is_a_setting() -> None:
    limits = IntakeLimits(lines_per_event_max=2)
    assert error_fields(envelope(data={"lines": lines(("A", 1), ("B", 1), ("C", 1))}), limits) == {
        "data.lines"
    }


@pytest.mark.parametrize("raw_lines", [[], None, "A", {"sku": "A", "qty": 1}])
def test_an_event_needs_one_line_at_least(raw_lines: object) -> None:
    data: dict[str, Any] = {} if raw_lines is None else {"lines": raw_lines}
    assert error_fields(envelope(data=data)) == {"data.lines"}


def test_release_with_an_empty_lines_list_is_refused() -> None:
    data = {"reservation_id": "R-1", "lines": []}
    assert error_fields(envelope("stock.reservation_release", data)) == {"data.lines"}


@pytest.mark.parametrize("line", ["A", 1, None, ["A", 1]])
def test_a_line_must_be_an_object(line: object) -> None:
    assert error_fields(envelope(data={"lines": [line]})) == {"data.lines[0]"}


def test_a_line_without_sku_is_named() -> None:
    assert error_fields(envelope(data={"lines": [{"qty": 1}]})) == {"data.lines[0].sku"}


def test_the_same_sku_twice_in_one_event_is_refused() -> None:
    data = {"lines": lines(("A", 1), ("B", 1), ("A", 2))}
    assert error_fields(envelope(data=data)) == {"data.lines[2].sku"}


def test_the_same_sku_twice_in_other_units_is_still_refused() -> None:
    limits = IntakeLimits(units={"box12": 12})
    data = {"lines": [{"sku": "A", "qty": 1}, {"sku": "A", "qty": 1, "uom": "box12"}]}
    assert error_fields(envelope(data=data), limits) == {"data.lines[1].sku"}


def test_an_unknown_unit_is_refused() -> None:
    data = {"lines": [{"sku": "SKU-1", "qty": 1, "uom": "pallet"}]}
    assert error_fields(envelope(data=data)) == {"data.lines[0].uom"}
    limits = IntakeLimits(units={"box12": 12, "SKU-1/box": 6})
    assert error_fields(envelope(data=data), limits) == {"data.lines[0].uom"}


def test_a_unit_must_be_a_string() -> None:
    limits = IntakeLimits(units={"box12": 12})
    data = {"lines": [{"sku": "SKU-1", "qty": 1, "uom": 12}]}
    assert error_fields(envelope(data=data), limits) == {"data.lines[0].uom"}


# --- data by type ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["stock.reservation", "stock.reservation_release"])
def test_reservation_and_release_need_a_reservation_id(event_type: str) -> None:
    assert error_fields(envelope(event_type, {"lines": lines(("A", 1))})) == {"data.reservation_id"}


@pytest.mark.parametrize("reservation_id", ["R/1", "R-1\n", "", pytest.param("R" * 65, id="65-characters")])
def test_a_reservation_id_follows_the_id_rules(reservation_id: str) -> None:
    data = {"lines": lines(("A", 1)), "reservation_id": reservation_id}
    assert error_fields(envelope("stock.reservation", data)) == {"data.reservation_id"}


def test_adjustment_needs_a_reason() -> None:
    assert error_fields(envelope("stock.adjustment", {"lines": lines(("A", 1))})) == {"data.reason"}
    data = {"lines": lines(("A", 1)), "reason": ""}
    assert error_fields(envelope("stock.adjustment", data)) == {"data.reason"}


def test_transfer_needs_a_destination_and_a_transfer_id() -> None:
    assert error_fields(envelope("stock.transfer", {"lines": lines(("A", 1))})) == {
        "data.to_store",
        "data.transfer_id",
    }
    data = {"lines": lines(("A", 1)), "transfer_id": "T-1"}
    assert error_fields(envelope("stock.transfer", data)) == {"data.to_store"}
    data = {"lines": lines(("A", 1)), "to_store": "store-7"}
    assert error_fields(envelope("stock.transfer", data)) == {"data.transfer_id"}


def test_transfer_to_a_bad_store_id_is_named() -> None:
    data = {"lines": lines(("A", 1)), "to_store": "store/7", "transfer_id": "T-1"}
    assert error_fields(envelope("stock.transfer", data)) == {"data.to_store"}


def test_transfer_to_the_sending_store_is_refused() -> None:
    data = {"lines": lines(("A", 1)), "to_store": "store-12", "transfer_id": "T-1"}
    assert error_fields(envelope("stock.transfer", data)) == {"data.to_store"}


@pytest.mark.parametrize("name", ["order_id", "reference"])
@pytest.mark.parametrize("value", ["", 5, "x" * 257])
def test_optional_text_fields_must_be_short_non_empty_strings(name: str, value: object) -> None:
    data = {"lines": lines(("A", 1)), name: value}
    assert error_fields(envelope("stock.sale", data)) == {f"data.{name}"}


def test_fields_that_do_not_belong_to_the_type_are_dropped() -> None:
    data = {
        "lines": lines(("A", 1)),
        "reservation_id": "R-1",
        "to_store": "store-7",
        "transfer_id": "T-1",
        "reason": "why",
        "expires_at": "2026-11-23T10:00:00+03:00",
    }
    event = read_envelope(envelope("stock.sale", data), LIMITS)
    assert (event.reservation_id, event.to_store, event.transfer_id, event.reason, event.expires_at) == (
        None,
        None,
        None,
        None,
        None,
    )


# Line by line, the values that decide between the usual line and the rest: each valid and each
# wrong in a way the full reading names.
class _Sku(str):
    pass


class _Qty(IntEnum):
    TWO = 2


QTY_MAX = envelope_module.QTY_ABS_MAX
LINE_SKUS = ["SKU-1", "SKU-2", "", "sku with spaces", 7, None, "S" * 65, _Sku("SKU-3")]
LINE_QTYS = [1, 2, 0, -1, -3, 12, QTY_MAX, QTY_MAX + 1, -QTY_MAX, True, 1.0, "1", None, _Qty.TWO]
LINE_EXTRAS: list[dict[str, Any]] = [
    {},
    {"uom": "box"},
    {"uom": None},
    {"uom": "crate"},
    {"codes": ["c-1"]},
    {"codes": None},
    {"codes": []},
]


@pytest.mark.parametrize("event_type", sorted(t.value for t in PRODUCER_EVENT_TYPES))
def test_the_usual_line_is_read_exactly_as_the_full_reading_reads_it(event_type: str) -> None:
    """_lines takes the usual line at once and leaves any other to _line: for every mix of lines
    it must give the lines and the errors _line alone gives."""
    kind = EventType(event_type)
    limits = IntakeLimits(units={"box": 12})
    rule = envelope_module._qty_rule(kind)
    rng = random.Random(event_type)
    items: list[Any] = [
        {"sku": sku, "qty": qty, **extra} for sku in LINE_SKUS for qty in LINE_QTYS for extra in LINE_EXTRAS
    ]
    items += ["not an object", None, ["SKU-1", 1], OrderedDict(sku="SKU-4", qty=1)]
    for _ in range(3000):
        mix = [rng.choice(items) for _ in range(rng.randint(1, 4))]
        quick = envelope_module._Reader()
        read = envelope_module._lines(quick, {"lines": mix}, kind, limits)
        full = envelope_module._Reader()
        seen: set[str] = set()
        codes_seen: set[str] = set()
        one_by_one = [
            envelope_module._line(full, number, item, kind, limits, rule, seen, codes_seen)
            for number, item in enumerate(mix)
        ]
        assert read == tuple(line for line in one_by_one if line is not None), mix
        assert quick.errors == full.errors, mix
