"""Reads a JSON Lines file of envelopes as a stream: each line, numbered, is an event or why not.

The file is never held whole: one line at a time, and a line over `line_bytes_max` is skipped in
pieces of that size (reported invalid), so a multi-gigabyte export or one broken line without a
newline costs no more memory than the limit. Each envelope is read by the same function as
POST /v1/events and the Kafka intake (ledger/intake/envelope.py), so a line is valid or invalid
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from ledger.domain.frozen_values import frozen_value
from ledger.domain.model import IMPORT_PRINCIPAL, StockEvent
from ledger.intake.envelope import IntakeLimits, InvalidEvent, read_envelope
from ledger.intake.json_keys import DUPLICATE_KEY, duplicate_keys, path_text
from ledger.intake.json_text import UTF8_BOM, without_bom


@frozen_value
class ValidLine:
    line_no: int
    event: StockEvent


@dataclass(frozen=True, slots=True)
class InvalidLine:
    line_no: int
    reason: str


@dataclass(slots=True)
class FileProgress:
    """How far the reading is: the line last read and the bytes read so far."""

    line_no: int = 0
    bytes_read: int = 0


def read_lines(
    file: BinaryIO, limits: IntakeLimits, line_bytes_max: int, progress: FileProgress
) -> Iterator[ValidLine | InvalidLine]:
    """Every line of `file` in order, blank ones left out, as an event or the reason it is none."""
    first = True
    while True:
        # The first line may begin with a byte order mark, which is not the line's: read as much
        # more, so that the line's own bytes meet the same limit as any other line's. (Dropped
        # after a read of the limit, the mark let a line 1 to 3 bytes too long pass as whole, and
        # the rest of it be read as the next line: an event could hide in the tail of line 1.)
        # Two bytes more than the limit: a line of the limit's length and its end, `\r\n` as well
        # as `\n`, is read whole.
        raw = file.readline(line_bytes_max + 2 + (len(UTF8_BOM) if first else 0))
        if not raw:
            return
        progress.line_no += 1
        progress.bytes_read += len(raw)
        if first:
            raw = without_bom(raw)
            first = False
        line_end = 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0
        if len(raw) - line_end > line_bytes_max:  # the line's bytes before its end, over the limit
            if not line_end:
                progress.bytes_read += _skip_rest_of_line(file, line_bytes_max)
            yield InvalidLine(
                progress.line_no, f"longer than {line_bytes_max} bytes (LEDGER_IMPORT_LINE_BYTES_MAX)"
            )
            continue
        if not raw.strip():
            continue
        yield read_line(progress.line_no, raw, limits)


def read_line(line_no: int, raw: bytes, limits: IntakeLimits) -> ValidLine | InvalidLine:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return InvalidLine(line_no, f"not JSON: {_json_error(raw) or error}")
    duplicates = duplicate_keys(raw, document)
    if duplicates:
        return InvalidLine(
            line_no, "; ".join(_field_error(path_text(path), DUPLICATE_KEY) for path in duplicates)
        )
    try:
        return ValidLine(line_no, read_envelope(document, limits, IMPORT_PRINCIPAL))
    except InvalidEvent as error:
        return InvalidLine(line_no, "; ".join(_field_error(e.field, e.message) for e in error.errors))


def _json_error(raw: bytes) -> str | None:
    """What is wrong, and where in the line, counted in the line (parsed again without its line
    end, where the end of data is): the parser counts lines of its own, which next to the file's
    line number reads as another line, and it names any byte that is not UTF-8 a surrogate."""
    line = raw.rstrip(b"\r\n")
    try:
        line.decode("utf-8")
        orjson.loads(line)
    except UnicodeDecodeError as bad:
        return f"not UTF-8 at byte {bad.start + 1} of the line"
    except orjson.JSONDecodeError as error:
        return f"{error.msg} at character {error.pos + 1} of the line"
    return None


def _field_error(field: str, message: str) -> str:
    return f"{field}: {message}" if field else message


def _skip_rest_of_line(file: BinaryIO, piece_bytes: int) -> int:
    """Reads past the end of an over-long line, a piece at a time; how many bytes that was."""
    skipped = 0
    while True:
        piece = file.readline(piece_bytes)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped
