"""The event envelope of CONTRACT §1 as a JSON Schema (2020-12): for Kafka producers, schema
registries and the OpenAPI document. It says what ledger/intake/envelope.py accepts; what a schema
cannot say (no SKU twice in one event, a unit the table knows, base-unit bounds) is in descriptions."""

from __future__ import annotations

from typing import Any

from ledger.domain.ids import ID_REGEX
from ledger.domain.model import (
    CODE_CHARS_MAX,
    CODE_EVENT_TYPES,
    LEDGER_SOURCE_PREFIX,
    PRODUCER_EVENT_TYPES,
    EventType,
)
from ledger.intake.envelope import QTY_ABS_MAX, TEXT_CHARS_MAX

SCHEMA_ID = "https://github.com/stock-ledger/stock-ledger/schemas/event-envelope.schema.json"
LINES_PER_EVENT_MAX = 1000  # CONTRACT §1; LEDGER_LINES_PER_EVENT_MAX may lower it
ID_PATTERN = ID_REGEX

# No NUL (U+0000): PostgreSQL's text cannot hold it, so the ledger refuses it on every database.
_TEXT = {"type": "string", "minLength": 1, "maxLength": TEXT_CHARS_MAX, "pattern": "^[^\\u0000]*$"}
_IDENT = {"type": "string", "pattern": ID_PATTERN, "description": "1 to 64 ASCII letters, digits or -_.:"}
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset"}

# What a line's qty may be, by type: (minimum, zero allowed, what it means).
_QTY_RULES: dict[EventType, tuple[int, bool, str]] = {
    EventType.ADJUSTMENT: (-QTY_ABS_MAX, False, "signed and non-zero: a write-off, damage or found"),
    EventType.COUNT: (0, True, "the counted amount (on_hand := qty)"),
}
_REQUIRED_DATA: dict[EventType, list[str]] = {
    EventType.RESERVATION: ["lines", "reservation_id"],
    EventType.RESERVATION_RELEASE: ["reservation_id"],
    EventType.ADJUSTMENT: ["lines", "reason"],
    EventType.TRANSFER: ["lines", "to_store", "transfer_id"],
}


def _line(event_type: EventType) -> dict[str, Any]:
    minimum, zero_allowed, meaning = _QTY_RULES.get(event_type, (1, True, "units moved"))
    qty: dict[str, Any] = {
        "type": "integer",
        "minimum": minimum,
        "maximum": QTY_ABS_MAX,
        "description": f"{meaning}, in the SKU's base unit (or in `uom`)",
    }
    if not zero_allowed:
        qty["not"] = {"const": 0}
    properties: dict[str, Any] = {
        "sku": _IDENT,
        "qty": qty,
        "uom": _nullable(
            {"type": "string", "description": "a unit of LEDGER_UNITS; qty × its factor is at most 1e9"}
        ),
    }
    if event_type in CODE_EVENT_TYPES:
        properties["codes"] = _nullable(
            {
                "type": "array",
                "items": {"type": "string", "pattern": f"^[\\x20-\\x7e]{{1,{CODE_CHARS_MAX}}}$"},
                "uniqueItems": True,
                "description": "marking codes or SSCCs of the units the line moved (CONTRACT §10): "
                "at most qty (in base units), no code twice in one event; they change no level",
            }
        )
    return {"type": "object", "required": ["sku", "qty"], "properties": properties}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field may also be null: the ledger reads null as absent."""
    return {"anyOf": [schema, {"type": "null"}]}


def _data(event_type: EventType) -> dict[str, Any]:
    required = _REQUIRED_DATA.get(event_type, ["lines"])
    properties: dict[str, Any] = {
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": LINES_PER_EVENT_MAX,
            "items": _line(event_type),
            "description": "no SKU twice in one event",
        },
        "reference": _TEXT,
        "order_id": _TEXT,
        "reservation_id": _IDENT,
        "transfer_id": _TEXT,
        "reason": _TEXT,
        "expires_at": _TIME,
        "to_store": {**_IDENT, "description": "the receiving store; not the subject"},
        "channel": {
            **_IDENT,
            "description": "e.g. online: a reservation or sale is limited by that channel's quota; "
            "on other types it is kept in the history only",
        },
    }
    return {
        "type": "object",
        "required": required,
        "properties": {
            name: schema if name in required else _nullable(schema) for name, schema in properties.items()
        },
    }


def _variant(event_type: EventType) -> dict[str, Any]:
    return {
        "properties": {"type": {"const": event_type.value}, "data": _data(event_type)},
    }


def envelope_schema() -> dict[str, Any]:
    """The envelope, one variant per producer event type (a `oneOf` on `type`)."""
    types = sorted(PRODUCER_EVENT_TYPES, key=lambda t: t.value)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Stock ledger event",
        "description": "A CloudEvents 1.0 envelope in structured mode (CONTRACT §1): the value of a "
        "record on stock.events (key = the store id) or the body of POST /v1/events.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {**_TEXT, "description": "with source, identifies the event: a second one is a duplicate"},
            "source": {
                **_TEXT,
                "not": {"pattern": f"^{LEDGER_SOURCE_PREFIX}"},
                "description": (
                    f"the producing system; not {LEDGER_SOURCE_PREFIX}…, the ledger's own events' sources"
                ),
            },
            "type": {"enum": [t.value for t in types]},
            "time": {**_TIME, "description": "when it happened at the producer (RFC 3339 with an offset)"},
            "subject": {**_IDENT, "description": "the store id"},
            "datacontenttype": {"enum": ["application/json", None]},
            "data": {"type": "object"},
        },
        "oneOf": [_variant(t) for t in types],
        "examples": [WALKTHROUGH_RECEIPT],
    }


# The README walkthrough's first event.
WALKTHROUGH_RECEIPT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "rcpt-1",
    "source": "wms/main",
    "type": "stock.receipt",
    "time": "2026-11-22T09:00:00+03:00",
    "subject": "store-12",
    "data": {"lines": [{"sku": "SKU-1", "qty": 5}], "reference": "delivery 77"},
}
