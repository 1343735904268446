"""Records whose header keys are not UTF-8, read as Java's client reads them.

The protocol calls a header key a string, but neither the broker nor librdkafka's C API nor Go's
clients check its bytes. kafka-python decodes each key strictly, inside its poll: one such record
made every poll of its partition raise, so nothing after it was recorded or dead-lettered, and the
intake made its consumer again and again. Java's client reads the key with its bad bytes replaced.

`install` wraps kafka-python's record reader: when a key is not UTF-8, each of its bytes that is
not part of a UTF-8 character is replaced by "?" in the batch's buffer (the same length, so every
length and offset in the record still holds), and the record is read again. Its value is
untouched: the event is recorded, or dead-lettered for its own reasons, with the mended key among
its headers. The batch's checksum was checked before its records are read.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

log = logging.getLogger("ledger.kafka")

_REPLACEMENT = ord("?")
_read_strictly = DefaultRecordBatch._read_msg


def install() -> None:
    """Idempotent: every consumer of the process shares kafka-python's record class."""
    DefaultRecordBatch._read_msg = _read_mending_keys


def _read_mending_keys(self: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _read_strictly(self, *args, **kwargs)
    except UnicodeDecodeError:
        # The reader moves `_pos` only once a record is read: it still points at this one.
        offset = mend_header_keys(self._buffer, self._pos, self.base_offset)
        if offset is None:
            raise
        log.warning(
            'the record at offset %d has a header key that is not UTF-8: read with "?" for its bad bytes',
            offset,
        )
        return _read_strictly(self, *args, **kwargs)


def mend_header_keys(buffer: bytearray, position: int, base_offset: int) -> int | None:
    """Replaces the bytes that are not UTF-8 in the header keys of the record at `position`; returns
    the record's offset, or None when every key was UTF-8 already (the error was something else)."""
    _, pos = decode_varint(buffer, position)  # the record's length
    _, pos = decode_varint(buffer, pos)  # attributes
    _, pos = decode_varint(buffer, pos)  # timestamp delta
    offset_delta, pos = decode_varint(buffer, pos)
    for _ in range(2):  # the key, then the value: their lengths, -1 for null
        length, pos = decode_varint(buffer, pos)
        pos += max(length, 0)
    headers, pos = decode_varint(buffer, pos)
    mended = False
    for _ in range(max(headers, 0)):
        length, pos = decode_varint(buffer, pos)
        if length < 0:
            return None  # kafka-python's own check refuses it
        key = bytes(buffer[pos : pos + length])
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            buffer[pos : pos + length] = _replaced(key)
            mended = True
        pos += length
        length, pos = decode_varint(buffer, pos)
        pos += max(length, 0)
    return base_offset + offset_delta if mended else None


def _replaced(key: bytes) -> bytes:
    """The same length: each byte that is not part of a UTF-8 character becomes "?"."""
    text = key.decode("utf-8", "surrogateescape")  # a bad byte reads as one surrogate
    return bytes(
        _REPLACEMENT if "\udc80" <= char <= "\udcff" else byte
        for char in text
        for byte in char.encode("utf-8", "surrogateescape")
    )
