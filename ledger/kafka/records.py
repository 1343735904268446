"""What a Kafka record means to the ledger (an event, or why it is none) and the result record the
ledger sends back for each event (CONTRACT §2). Dead letters have a module of their own.

The result record is written here, not borrowed from the HTTP layer: ledger/kafka and ledger/api
stay apart, and the topic's record keeps the fields §2 lists even where HTTP leaves them out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from ledger.domain.model import KAFKA_PRINCIPAL, StockEvent
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent, read_envelope
from ledger.intake.json_keys import DUPLICATE_KEY, duplicate_keys, path_text
from ledger.intake.json_text import without_bom
from ledger.results import EventResult

log = logging.getLogger("ledger.kafka")

Headers = list[tuple[str, bytes]]
# A result refused by the broker as too large is sent again with its shortfall cut to this: about
# 120 lines at the longest, far below the least producer request (64 KiB).
SHORTFALL_CUT_BYTES_MAX = 16 * 1024
# kafka-python's ConsumerRecord (topic, partition, offset, timestamp, key, value, headers, ...); it
# ships no type hints.
ConsumerRecord = Any


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was read: its topic, partition and offset (and the producer's timestamp)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why a record value is not an event: `error` for people, `field_errors` for programs."""

    error: str
    field_errors: tuple[FieldError, ...] = ()


@dataclass(slots=True)
class Outbound:
    """A record to produce. `what` names it in logs; `fallback` is what to send instead when the
    broker can never take this one (too large, invalid), so that it cannot block a partition: the
    record, or a function that makes it when it is needed (a result's cut shortfall is made only
    then, not for every result with a shortfall).

    Not frozen, though never changed: one is made for every result, and a frozen dataclass takes
    twice as long to make (2.2 against 1.0 µs)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    what: str = "a record"
    fallback: Outbound | Callable[[], Outbound] | None = None


def read_value(value: bytes | None, limits: IntakeLimits) -> StockEvent | Unreadable:
    """The event in a record's value, or why there is none. Never raises: a record the ledger
    cannot read must go to the dead-letter topic, not stop the consumer."""
    if value is None:
        return Unreadable("empty record (no value); expected a CloudEvents envelope")
    raw = without_bom(value)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Unreadable(f"not JSON: {error}")
    duplicates = [FieldError(path_text(path), DUPLICATE_KEY) for path in duplicate_keys(raw, document)]
    if duplicates:
        return Unreadable(f"ambiguous JSON: {InvalidEvent(duplicates)}", tuple(duplicates))
    try:
        return read_envelope(document, limits, KAFKA_PRINCIPAL)
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
    """The record on the results topic, keyed by the store id. A result with a shortfall may be too
    large for the broker (a line each, up to 1,000 lines: some 130 KiB, over the least producer
    request allowed and many topics' limits); given up, its event had no result at all. So it
    carries a fallback with the shortfall cut (`shortfall_cut`), made only if the broker refuses
    it. Any other result is small: its id and source are at most 256 characters each."""
    what = f"the result of {result.source} {result.event_id}"
    key = result.store_id.encode()
    body = result_body(result)
    fallback = partial(shortfall_cut, topic, key, body, what) if result.shortfall else None
    return Outbound(topic, key, orjson.dumps(body), [], what, fallback)


def shortfall_cut(topic: str, key: bytes, body: dict[str, Any], what: str) -> Outbound:
    """The result with only the first lines of its shortfall that fit in SHORTFALL_CUT_BYTES_MAX,
    `shortfall_truncated: true` and how many lines were short in all (`shortfall_lines`); should
    the broker refuse even that, the same with no lines at all."""
    lines = body["shortfall"]
    kept: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        size += len(orjson.dumps(line)) + 1  # and a comma
        if size > SHORTFALL_CUT_BYTES_MAX:
            break
        kept.append(line)
    cut = {**body, "shortfall": kept, "shortfall_truncated": True, "shortfall_lines": len(lines)}
    bare = Outbound(topic, key, orjson.dumps({**cut, "shortfall": []}), [], what)
    return Outbound(topic, key, orjson.dumps(cut), [], what, bare)
