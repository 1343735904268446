"""Unit tests of reading a sourcing body (ledger/intake/across_body.py): the candidates checked
whole in one match, and the body's lines and reservation fields read as a reservation's without
an envelope, naming each wrong field as the caller wrote it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.intake.across_body import AcrossLimits, read_sourcing, store_ids_once
from ledger.intake.envelope import IntakeLimits, InvalidEvent, read_envelope

LIMITS = AcrossLimits(IntakeLimits(), 10, 50, 100, 100_000)
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stores", "once"),
    [
        (["s1"], True),
        (["s1", "s-2", "a.b:c_d"], True),
        (["x" * 64, "y"], True),
        (["x" * 65], False),
        ([""], False),
        (["s1", ""], False),
        (["s1", "s1"], False),
        (["s1,s2"], False),  # a comma inside an item is no join
        (["s1,", "s2"], False),
        ([",s1", "s2"], False),
        (["s1", "s2,"], False),
        (["s1\n"], False),
        (["s 1"], False),
        (["s1", 2], False),
        ([None], False),
    ],
)
def test_the_candidates_are_store_ids_named_once(stores: list[object], once: bool) -> None:
    assert store_ids_once(stores) is once


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}]}, ["lines[1].qty"]),
        ({"lines": [{"sku": "A b", "qty": 1}]}, ["lines[0].sku"]),
        ({"lines": [{"sku": "A", "qty": 1}, {"sku": "A", "qty": 2}]}, ["lines[1].sku"]),
        ({"lines": [{"sku": "A", "qty": 1}], "channel": "on line"}, ["channel"]),
        ({"lines": [{"sku": "A", "qty": 1}], "reserve": {}}, ["reserve.reservation_id"]),
        (
            {"lines": [{"sku": "A", "qty": 1}], "reserve": {"reservation_id": "R", "order_id": ""}},
            ["reserve.order_id"],
        ),
        (
            {"lines": [{"sku": "A", "qty": 1}], "reserve": {"reservation_id": "R", "expires_at": "soon"}},
            ["reserve.expires_at"],
        ),
        ({"lines": [], "stores": ["s", "s"]}, ["lines", "stores[1]"]),
    ],
)
def test_a_wrong_field_is_named_as_the_caller_wrote_it(body: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(InvalidEvent) as raised:
        read_sourcing(body, LIMITS, "ledger/sourcing", NOW)
    assert [error.field for error in raised.value.errors] == fields


def test_the_body_is_read_as_a_reservation_with_the_same_lines_and_fields() -> None:
    data = {
        "reservation_id": "R-1",
        "order_id": "O-1",
        "expires_at": "2026-12-04T10:00:00+03:00",
        "channel": "online",
        "lines": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1, "codes": ["c1"]}],
    }
    body = {
        "lines": data["lines"],
        "channel": "online",
        "stores": ["s2", "s1"],
        "max_stores": 2,
        "reserve": {k: data[k] for k in ("reservation_id", "order_id", "expires_at")},
    }
    ask = read_sourcing(body, LIMITS, "ledger/sourcing", NOW)
    envelope = {
        "specversion": "1.0",
        "id": "sourcing",
        "source": "ledger/sourcing",
        "type": "stock.reservation",
        "time": NOW.isoformat(),
        "subject": "sourcing",
        "data": data,
    }
    event = read_envelope(envelope, LIMITS.intake, None, made_by_ledger=True)
    assert (ask.lines, ask.channel, ask.reservation_id, ask.order_id, ask.expires_at) == (
        event.lines,
        event.channel,
        event.reservation_id,
        event.order_id,
        event.expires_at,
    )
    assert event.lines[1].codes == ("c1",) and event.expires_at is not None
    assert (ask.candidates, ask.max_stores) == (("s2", "s1"), 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lines": [{"sku": "A", "qty": 1}], "max_store": 2}, "max_store"),
        ({"lines": [{"sku": "A", "qty": 1}], "chanel": "online"}, "chanel"),
        ({"lines": [{"sku": "A", "qty": 1, "uom_": "box"}]}, "lines[0].uom_"),
        (
            {"lines": [{"sku": "A", "qty": 1}], "reserve": {"reservation_id": "R", "expire_at": "x"}},
            "reserve.expire_at",
        ),
    ],
)
def test_a_field_sourcing_does_not_have_is_named_not_dropped(body: dict[str, object], field: str) -> None:
    """A typo in `reserve` placed a reservation that never expires; elsewhere it lost the request's
    intent in silence."""
    with pytest.raises(InvalidEvent) as refused:
        read_sourcing(body, LIMITS, "test", NOW)
    assert field in [error.field for error in refused.value.errors]
