"""Dead letters: every record that is not an event goes on to the dead-letter topic with why and
where it came from (CONTRACT §2), cut to named limits so that the broker always takes it.

A record the broker accepted can still be too large to send on (a 2 MB value, the producer's
request at most 1 MB), and a dead letter that cannot be sent would hold its partition forever.
So the value, the key and the headers are each cut to a limit well below the producer's request
size, and what was cut is described instead: the original's size and SHA-256 digest. Should the
broker still refuse it, `fallback` is the same letter without the value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from ledger.config import Settings
from ledger.kafka.records import ConsumerRecord, Headers, Origin, Outbound, Unreadable

ERROR_HEADER = "error"
ERROR_FIELDS_HEADER = "error_fields"
ORIGIN_TOPIC_HEADER = "original_topic"
ORIGIN_PARTITION_HEADER = "original_partition"
ORIGIN_OFFSET_HEADER = "original_offset"
ORIGIN_TIMESTAMP_HEADER = "original_timestamp"
NULL_RECORD_HEADER = "original_null_record"  # the original had neither key nor value
VALUE_BYTES_HEADER = "original_value_bytes"
VALUE_SHA256_HEADER = "original_value_sha256"
VALUE_TRUNCATED_HEADER = "original_value_truncated"  # the value is the original's first bytes
VALUE_DROPPED_HEADER = "original_value_dropped"  # the broker refused even the cut value
KEY_BYTES_HEADER = "original_key_bytes"
KEY_SHA256_HEADER = "original_key_sha256"
KEY_TRUNCATED_HEADER = "original_key_truncated"
HEADERS_DROPPED_HEADER = "original_headers_dropped"  # how many of the original's headers did not fit
# The record's own headers are kept, except any with these names.
DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_HEADER,
        ERROR_FIELDS_HEADER,
        ORIGIN_TOPIC_HEADER,
        ORIGIN_PARTITION_HEADER,
        ORIGIN_OFFSET_HEADER,
        ORIGIN_TIMESTAMP_HEADER,
        NULL_RECORD_HEADER,
        VALUE_BYTES_HEADER,
        VALUE_SHA256_HEADER,
        VALUE_TRUNCATED_HEADER,
        VALUE_DROPPED_HEADER,
        KEY_BYTES_HEADER,
        KEY_SHA256_HEADER,
        KEY_TRUNCATED_HEADER,
        HEADERS_DROPPED_HEADER,
    }
)
# The readable reason is cut to this; the field errors and the original's headers share what is
# left of the headers' limit (Settings.kafka_dlq_headers_bytes_max is at least 4 KiB).
ERROR_TEXT_BYTES_MAX = 1024
TRUE = b"true"


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    value_bytes_max: int
    key_bytes_max: int
    headers_bytes_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterLimits:
        return cls(
            settings.kafka_dlq_value_bytes_max,
            settings.kafka_dlq_key_bytes_max,
            settings.kafka_dlq_headers_bytes_max,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that is not an event, as read, and why."""

    origin: Origin
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    why: Unreadable


def dead_letter(record: ConsumerRecord, why: Unreadable) -> DeadLetter:
    """The dead letter of a record as kafka-python's consumer gave it (its ConsumerRecord); a
    header without a value is kept as an empty one."""
    headers = tuple((name, value or b"") for name, value in record.headers or ())
    return DeadLetter(
        Origin(record.topic, record.partition, record.offset, record.timestamp),
        record.key,
        record.value,
        headers,
        why,
    )


def refused_letter(record: ConsumerRecord, reason: str) -> DeadLetter:
    """The dead letter of an event the writer refused, as it will on any retry."""
    return dead_letter(
        record, Unreadable(f"the ledger could not record this event, nor will it on a retry: {reason}")
    )


def dead_letter_record(topic: str, letter: DeadLetter, limits: DeadLetterLimits) -> Outbound:
    """The record as read (cut to the limits), with why and where it came from."""
    headers = _own_headers(letter)
    value = letter.value
    if value is None:
        if letter.key is None:
            # A record needs a key or a value; the broker let one through with neither.
            headers.append((NULL_RECORD_HEADER, TRUE))
        value = b"" if letter.key is None else None
    else:
        headers += _described(VALUE_BYTES_HEADER, VALUE_SHA256_HEADER, value)
        if len(value) > limits.value_bytes_max:
            value = value[: limits.value_bytes_max]
            headers.append((VALUE_TRUNCATED_HEADER, TRUE))
    key = letter.key
    if key is not None and len(key) > limits.key_bytes_max:
        headers += _described(KEY_BYTES_HEADER, KEY_SHA256_HEADER, key)
        headers.append((KEY_TRUNCATED_HEADER, TRUE))
        key = key[: limits.key_bytes_max]
    what = f"the dead letter of {letter.origin}"
    # The broker may refuse even this (a topic whose max.message.bytes is below our limit).
    fallback = Outbound(topic, key, b"", [*headers, (VALUE_DROPPED_HEADER, TRUE)], what)
    budget = limits.headers_bytes_max - _size(headers)
    fields, budget = _field_errors(letter.why, budget // 2, budget)
    kept, dropped = _fitting(letter.headers, budget)
    headers = kept + headers + fields
    if dropped:
        headers.append((HEADERS_DROPPED_HEADER, str(dropped).encode()))
    return Outbound(topic, key, value, headers, what, fallback)


def _own_headers(letter: DeadLetter) -> Headers:
    origin = letter.origin
    headers: Headers = [
        (ERROR_HEADER, _cut_text(letter.why.error, ERROR_TEXT_BYTES_MAX)),
        (ORIGIN_TOPIC_HEADER, origin.topic.encode()),
        (ORIGIN_PARTITION_HEADER, str(origin.partition).encode()),
        (ORIGIN_OFFSET_HEADER, str(origin.offset).encode()),
    ]
    if origin.timestamp_ms is not None:
        headers.append((ORIGIN_TIMESTAMP_HEADER, str(origin.timestamp_ms).encode()))
    return headers


def _described(size_header: str, digest_header: str, data: bytes) -> Headers:
    return [
        (size_header, str(len(data)).encode()),
        (digest_header, hashlib.sha256(data).hexdigest().encode()),
    ]


def _field_errors(why: Unreadable, share_bytes_max: int, budget_bytes: int) -> tuple[Headers, int]:
    """As many field errors as fit in their share (a JSON list); and the budget left after them."""
    if not why.field_errors:
        return [], budget_bytes
    items: list[bytes] = []
    size = len(ERROR_FIELDS_HEADER) + len(b"[]")
    for error in why.field_errors:
        item = orjson.dumps(error.as_dict())
        size += len(item) + (1 if items else 0)  # and a comma between items
        if size > share_bytes_max:
            break
        items.append(item)
    if not items:
        return [], budget_bytes
    header = (ERROR_FIELDS_HEADER, b"[" + b",".join(items) + b"]")
    return [header], budget_bytes - _size([header])


def _fitting(headers: tuple[tuple[str, bytes], ...], budget_bytes: int) -> tuple[Headers, int]:
    """The original's own headers (ours overwrite any of the same name), in order, while they fit."""
    kept: Headers = []
    dropped = 0
    for name, value in headers:
        if name in DEAD_LETTER_HEADERS:
            continue
        size = _size([(name, value)])
        if size > budget_bytes:
            dropped += 1
            continue
        kept.append((name, value))
        budget_bytes -= size
    return kept, dropped


def _size(headers: Headers) -> int:
    return sum(len(name.encode()) + len(value) for name, value in headers)


def _cut_text(text: str, bytes_max: int) -> bytes:
    """UTF-8, at most `bytes_max` bytes, never ending inside a character."""
    encoded = text.encode()
    if len(encoded) <= bytes_max:
        return encoded
    return encoded[:bytes_max].decode(errors="ignore").encode()
