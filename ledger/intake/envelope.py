"""Reads a CloudEvents envelope (CONTRACT §1) into a StockEvent, or says which fields are wrong.

HTTP and Kafka both come through here, so an event is valid or invalid the same way on both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.domain.ids import ID_PATTERN
from ledger.domain.model import (
    CODE_CHARS_MAX,
    CODE_EVENT_TYPES,
    LEDGER_SOURCE_PREFIX,
    PRODUCER_EVENT_TYPES,
    EventType,
    Line,
    StockEvent,
)

# RFC 3339 bounds no fraction: every digit is read, and those past the sixth are cut (_parse).
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
TEXT_CHARS_MAX = 256  # id, source and the free-text data fields
QTY_ABS_MAX = 1_000_000_000
# CONTRACT §10: a marking code or SSCC is 1 to 200 printable ASCII characters (space to tilde).
CODE_PATTERN = re.compile(rf"[\x20-\x7e]{{1,{CODE_CHARS_MAX}}}")


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    lines_per_event_max: int = 1000
    units: Mapping[str, int] | None = None  # "box12" -> 12, or per SKU "SKU-1/box" -> 6


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidEvent(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class _Reader:
    """Collects every error of one envelope rather than stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def text(self, obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.error(where, "is required")
            return None
        if not isinstance(value, str) or not value or len(value) > TEXT_CHARS_MAX:
            self.error(where, f"must be a non-empty string of at most {TEXT_CHARS_MAX} characters")
            return None
        if "\x00" in value:  # PostgreSQL's text cannot hold it: the writer's batch would fail whole
            self.error(where, "must not contain the NUL character (U+0000)")
            return None
        return value

    def ident(self, obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.error(where, "is required")
            return None
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            self.error(where, "must be 1 to 64 ASCII letters, digits or -_.: characters")
            return None
        return value

    def moment(self, obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> datetime | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.error(where, "is required")
            return None
        moment = parse_rfc3339(value)
        if moment is None:
            self.error(
                where,
                "must be an RFC 3339 time with an offset, between the years 1 and 9999 in UTC, "
                "e.g. 2026-11-22T10:15:00+03:00",
            )
        return moment


def parse_rfc3339(value: object) -> datetime | None:
    """An RFC 3339 date-time (offset required) whose UTC form Python can hold; None for anything
    else. 9999-12-31T23:00:00-05:00 is valid RFC 3339 but past year 9999 in UTC: the ledger keeps
    times in UTC, and converting it failed only when the writer wrote it, failing its whole batch
    every time it was read again (a Kafka partition stuck behind one event)."""
    moment = _parse(value)
    if moment is None:
        return None
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return None
    return moment


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        return None
    try:  # Python 3.11+ reads the usual forms itself, fractions of 1 to 9 digits cut to 6
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    text = value.upper().replace(" ", "T")
    if "." in text:  # Python keeps microseconds: cut longer fractions rather than refuse them
        main, rest = text.split(".", 1)
        cut = next(i for i, ch in enumerate(rest) if not ch.isdigit())
        text = f"{main}.{rest[:cut][:6].ljust(6, '0')}{rest[cut:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _qty_rule(event_type: EventType) -> tuple[int, str]:
    """The smallest allowed quantity for the type, and how to say it."""
    if event_type is EventType.ADJUSTMENT:
        return -QTY_ABS_MAX, "must be a non-zero integer"
    if event_type is EventType.COUNT:
        return 0, "must be an integer >= 0 (the counted amount)"
    return 1, "must be an integer >= 1"


def _lines(
    reader: _Reader, data: Mapping[str, Any], event_type: EventType, limits: IntakeLimits
) -> tuple[Line, ...]:
    raw = data.get("lines")
    if raw is None and event_type is EventType.RESERVATION_RELEASE:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= limits.lines_per_event_max:
        reader.error("data.lines", f"must be a list of 1 to {limits.lines_per_event_max} lines")
        return ()
    minimum, rule = _qty_rule(event_type)
    zero_allowed = event_type is not EventType.ADJUSTMENT
    lines: list[Line] = []
    seen: set[str] = set()
    codes_seen: set[str] = set()  # no code twice in one event, across its lines
    for number, item in enumerate(raw):
        # The usual line (a SKU, a quantity in base units, nothing else) is taken here at once:
        # a line is read for every event line recorded, so this is the intake's hottest loop. Any
        # other line, valid or not, is read by _line, which also names what is wrong.
        if type(item) is dict:
            sku = item.get("sku")
            qty = item.get("qty")
            if (
                type(sku) is str
                and type(qty) is int
                and minimum <= qty <= QTY_ABS_MAX
                and (qty or zero_allowed)
                and item.get("uom") is None
                and item.get("codes") is None
                and sku not in seen
                and ID_PATTERN.fullmatch(sku)
            ):
                seen.add(sku)
                lines.append(Line(sku, qty, ()))
                continue
        line = _line(reader, number, item, event_type, limits, (minimum, rule), seen, codes_seen)
        if line is not None:
            lines.append(line)
    return tuple(lines)


def _line(
    reader: _Reader,
    number: int,
    item: object,
    event_type: EventType,
    limits: IntakeLimits,
    qty_rule: tuple[int, str],
    seen: set[str],
    codes_seen: set[str],
) -> Line | None:
    """One line of `data.lines`, or None with its errors noted."""
    minimum, rule = qty_rule
    where = f"data.lines[{number}]"
    if not isinstance(item, dict):
        reader.error(where, "must be an object with sku and qty")
        return None
    sku = reader.ident(item, "sku", f"{where}.sku", required=True)
    qty = item.get("qty")
    if not isinstance(qty, int) or isinstance(qty, bool):
        reader.error(f"{where}.qty", "must be an integer")
        return None
    if qty < minimum or (event_type is EventType.ADJUSTMENT and qty == 0):
        reader.error(f"{where}.qty", rule)
        return None
    if abs(qty) > QTY_ABS_MAX:
        reader.error(f"{where}.qty", f"must be at most {QTY_ABS_MAX:,} in absolute value")
        return None
    factor = _unit_factor(reader, item, sku, where, limits)
    if sku is None or factor is None:
        return None
    if abs(qty * factor) > QTY_ABS_MAX:
        reader.error(f"{where}.qty", f"is {qty * factor:,} in base units, over {QTY_ABS_MAX:,}")
        return None
    if sku in seen:
        reader.error(f"{where}.sku", f"{sku} appears twice in one event")
        return None
    seen.add(sku)
    codes = _codes(reader, item, event_type, qty * factor, where, codes_seen)
    return Line(sku, qty * factor, codes)


def _codes(
    reader: _Reader,
    item: Mapping[str, Any],
    event_type: EventType,
    qty_units: int,
    where: str,
    seen: set[str],
) -> tuple[str, ...]:
    """CONTRACT §10: at most qty strings (in base units), each 1 to 200 printable ASCII
    characters, no two equal within one event; only on the lines of the types that move units out
    or back (and a reservation's, for the picking order)."""
    raw = item.get("codes")
    if raw is None:
        return ()
    field = f"{where}.codes"
    if event_type not in CODE_EVENT_TYPES:
        names = ", ".join(sorted(t.value for t in CODE_EVENT_TYPES))
        reader.error(field, f"marking codes are carried only by lines of {names}")
        return ()
    if not isinstance(raw, list) or len(raw) > qty_units:
        reader.error(field, f"must be a list of at most qty ({qty_units}) codes")
        return ()
    for number, code in enumerate(raw):
        if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
            reader.error(f"{field}[{number}]", f"must be 1 to {CODE_CHARS_MAX} printable ASCII characters")
            return ()
        if code in seen:
            reader.error(f"{field}[{number}]", f"{code} appears twice in one event")
            return ()
        seen.add(code)
    return tuple(raw)


def _unit_factor(
    reader: _Reader, item: Mapping[str, Any], sku: str | None, where: str, limits: IntakeLimits
) -> int | None:
    uom = item.get("uom")
    if uom is None:
        return 1
    units = limits.units or {}
    if not isinstance(uom, str):
        reader.error(f"{where}.uom", "must be a string")
        return None
    # A key with "/" is one SKU's unit (no SKU id holds "/"): never a unit of every SKU.
    factor = units.get(f"{sku}/{uom}", None if "/" in uom else units.get(uom))
    if factor is None:
        reader.error(f"{where}.uom", f"unknown unit {uom!r}; configured units: {sorted(units) or 'none'}")
        return None
    return factor


def read_envelope(
    document: object, limits: IntakeLimits, principal: str | None = None, *, made_by_ledger: bool = False
) -> StockEvent:
    """The StockEvent in a CloudEvents envelope, or InvalidEvent naming every wrong field.
    `principal`: who sent it, as the history will say (CONTRACT §5). `made_by_ledger`: the ledger
    made the envelope from a request (a REST reservation, sourcing), under one of its own sources,
    which a producer's envelope may not name (LEDGER_SOURCE_PREFIX)."""
    reader = _Reader()
    if not isinstance(document, dict):
        raise InvalidEvent([FieldError("", "an event must be a JSON object (a CloudEvents envelope)")])
    if document.get("specversion") != "1.0":
        reader.error("specversion", 'must be "1.0"')
    event_id = reader.text(document, "id", "id", required=True)
    source = reader.text(document, "source", "source", required=True)
    if source is not None and source.startswith(LEDGER_SOURCE_PREFIX) and not made_by_ledger:
        reader.error(
            "source", f"must not start with {LEDGER_SOURCE_PREFIX}: the ledger's own events' sources"
        )
    store_id = reader.ident(document, "subject", "subject", required=True)
    moment = reader.moment(document, "time", "time", required=True)
    content_type = document.get("datacontenttype")
    if content_type is not None and content_type != "application/json":
        reader.error("datacontenttype", 'must be "application/json" when given')
    raw_type = document.get("type")
    try:
        event_type = EventType(str(raw_type))
        if event_type not in PRODUCER_EVENT_TYPES:
            raise ValueError
    except ValueError:
        names = ", ".join(sorted(t.value for t in PRODUCER_EVENT_TYPES))
        reader.error("type", f"must be one of {names}")
        raise InvalidEvent(reader.errors) from None
    data = document.get("data")
    if not isinstance(data, dict):
        reader.error("data", "must be an object")
        raise InvalidEvent(reader.errors)
    lines = _lines(reader, data, event_type, limits)
    fields = _type_fields(reader, data, event_type, store_id)
    if reader.errors:
        raise InvalidEvent(reader.errors)
    assert event_id and source and store_id and moment
    return StockEvent(
        event_id=event_id,
        source=source,
        type=event_type,
        time=moment,
        store_id=store_id,
        lines=lines,
        **fields,
        principal=principal,
    )


def read_data(
    data: Mapping[str, Any], event_type: EventType, limits: IntakeLimits, store_id: str
) -> tuple[tuple[Line, ...], dict[str, Any]]:
    """An event's `data` read exactly as `read_envelope` reads it (errors named `data.…`), where
    the ledger itself is the envelope: the lines and the type's fields (the StockEvent's keyword
    arguments). Sourcing checks its body's lines and reservation fields so, as a reservation's,
    without writing an envelope only to read it back or building an event it does not keep."""
    reader = _Reader()
    lines = _lines(reader, data, event_type, limits)
    fields = _type_fields(reader, data, event_type, store_id)
    if reader.errors:
        raise InvalidEvent(reader.errors)
    return lines, fields


def _type_fields(
    reader: _Reader, data: Mapping[str, Any], event_type: EventType, store_id: str | None
) -> dict[str, Any]:
    needs_reservation = event_type in (EventType.RESERVATION, EventType.RESERVATION_RELEASE)
    is_transfer = event_type is EventType.TRANSFER
    fields: dict[str, Any] = {
        "order_id": reader.text(data, "order_id", "data.order_id", required=False),
        "reference": reader.text(data, "reference", "data.reference", required=False),
        "reservation_id": reader.ident(
            data, "reservation_id", "data.reservation_id", required=needs_reservation
        ),
        "transfer_id": reader.text(data, "transfer_id", "data.transfer_id", required=is_transfer),
        "reason": reader.text(data, "reason", "data.reason", required=event_type is EventType.ADJUSTMENT),
        "expires_at": reader.moment(data, "expires_at", "data.expires_at", required=False),
        "to_store": reader.ident(data, "to_store", "data.to_store", required=is_transfer),
        # Limits a reservation or a sale by its channel's quota (CONTRACT §6); on any other type
        # it is kept in the history only.
        "channel": reader.ident(data, "channel", "data.channel", required=False),
    }
    if is_transfer and fields["to_store"] is not None and fields["to_store"] == store_id:
        reader.error("data.to_store", "must differ from subject (the store sending the goods)")
    if not is_transfer:
        fields["to_store"] = None
    if event_type is not EventType.RESERVATION:
        fields["expires_at"] = None
    if event_type not in (EventType.RESERVATION, EventType.RESERVATION_RELEASE, EventType.SHIPMENT):
        fields["reservation_id"] = None
    if event_type not in (EventType.RECEIPT, EventType.TRANSFER):
        fields["transfer_id"] = None
    if event_type is not EventType.ADJUSTMENT:
        fields["reason"] = None
    return fields
