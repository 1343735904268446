"""What a Kafka record means to the ledger (an event, or a dead letter and why) and what the ledger
sends back: one result per event, and every unreadable record unchanged (CONTRACT §2).

The result record is written here, not borrowed from the HTTP layer: ledger/kafka and ledger/api
stay apart, and the topic's record keeps the fields §2 lists even where HTTP leaves them out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.domain.model import StockEvent
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent, read_envelope
from ledger.results import EventResult

log = logging.getLogger("ledger.kafka")

Headers = list[tuple[str, bytes]]

# Header names on a dead letter. The record's own headers are kept, except any with these names.
ERROR_HEADER = "error"
ERROR_FIELDS_HEADER = "error_fields"
ORIGIN_TOPIC_HEADER = "original_topic"
ORIGIN_PARTITION_HEADER = "original_partition"
ORIGIN_OFFSET_HEADER = "original_offset"
ORIGIN_TIMESTAMP_HEADER = "original_timestamp"
NULL_RECORD_HEADER = "original_null_record"  # the original had neither key nor value
DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_HEADER,
        ERROR_FIELDS_HEADER,
        ORIGIN_TOPIC_HEADER,
        ORIGIN_PARTITION_HEADER,
        ORIGIN_OFFSET_HEADER,
        ORIGIN_TIMESTAMP_HEADER,
        NULL_RECORD_HEADER,
    }
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was read: its topic, partition and offset (and the producer's timestamp)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why a record value is not an event: `error` for people, `field_errors` for programs."""

    error: str
    field_errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    origin: Origin
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    why: Unreadable


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def read_value(value: bytes | None, limits: IntakeLimits) -> StockEvent | Unreadable:
    """The event in a record's value, or why there is none. Never raises: a record the ledger
    cannot read must go to the dead-letter topic, not stop the consumer."""
    if value is None:
        return Unreadable("empty record (no value); expected a CloudEvents envelope")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        return Unreadable(f"not JSON: {error}")
    try:
        return read_envelope(document, limits)
    except InvalidEvent as error:
        return Unreadable(f"not a valid event: {error}", tuple(error.errors))
    except Exception as error:
        log.exception("the envelope reader failed on a record")
        return Unreadable(f"could not be read: {type(error).__name__}: {error}")


def result_body(result: EventResult) -> dict[str, Any]:
    """CONTRACT §2: `id, source, subject, outcome, reason, position` always (null where there is
    none), plus `shortfall` and `original` where they apply, shaped as in the HTTP results."""
    body: dict[str, Any] = {
        "id": result.event_id,
        "source": result.source,
        "subject": result.store_id,
        "outcome": result.outcome.value,
        "reason": None if result.reason is None else result.reason.value,
        "position": result.position,
    }
    if result.shortfall:
        body["shortfall"] = [
            {"sku": s.sku, "requested": s.requested_units, "available": s.available_units}
            for s in result.shortfall
        ]
    if result.original is not None:
        original = result.original
        body["original"] = {
            "outcome": original.outcome.value,
            "reason": None if original.reason is None else original.reason.value,
            "position": original.position,
        }
    return body


def result_record(topic: str, result: EventResult) -> Outbound:
    """The record on the results topic, keyed by the store id."""
    return Outbound(topic, result.store_id.encode(), orjson.dumps(result_body(result)), [])


def dead_letter_record(topic: str, letter: DeadLetter) -> Outbound:
    """The record unchanged (key, value, its headers), with why and where it came from."""
    headers: Headers = [(name, value) for name, value in letter.headers if name not in DEAD_LETTER_HEADERS]
    headers.append((ERROR_HEADER, letter.why.error.encode()))
    if letter.why.field_errors:
        headers.append((ERROR_FIELDS_HEADER, orjson.dumps([e.as_dict() for e in letter.why.field_errors])))
    origin = letter.origin
    headers.append((ORIGIN_TOPIC_HEADER, origin.topic.encode()))
    headers.append((ORIGIN_PARTITION_HEADER, str(origin.partition).encode()))
    headers.append((ORIGIN_OFFSET_HEADER, str(origin.offset).encode()))
    if origin.timestamp_ms is not None:
        headers.append((ORIGIN_TIMESTAMP_HEADER, str(origin.timestamp_ms).encode()))
    value = letter.value
    if letter.key is None and value is None:
        # A record needs a key or a value; the broker let one through with neither.
        headers.append((NULL_RECORD_HEADER, b"true"))
        value = b""
    return Outbound(topic, letter.key, value, headers)
