"""How `ledger import` reads its file (ledger/importer/reading.py): line numbers as an editor shows
them, a UTF-8 BOM and Windows line ends accepted, an over-long line skipped without being held."""

from __future__ import annotations

import io

import orjson
import pytest

from ledger.importer.reading import FileProgress, InvalidLine, ValidLine, read_lines
from ledger.intake.envelope import IntakeLimits

LINE_BYTES_MAX = 1024


def _envelope(n: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": "1c/test",
            "type": "stock.receipt",
            "time": "2025-01-09T10:12:00+03:00",
            "subject": "store-12",
            "data": {"lines": [{"sku": "SKU-1", "qty": n}]},
        }
    )


def _read(data: bytes) -> tuple[list[ValidLine | InvalidLine], FileProgress]:
    progress = FileProgress()
    return list(read_lines(io.BytesIO(data), IntakeLimits(), LINE_BYTES_MAX, progress)), progress


def test_lines_are_numbered_as_in_the_file_blank_ones_counted_but_skipped() -> None:
    data = b"\xef\xbb\xbf" + _envelope(1) + b"\r\n\r\n   \n" + _envelope(2) + b"\nnot json\n" + _envelope(3)
    lines, progress = _read(data)
    assert [(type(line).__name__, line.line_no) for line in lines] == [
        ("ValidLine", 1),
        ("ValidLine", 4),
        ("InvalidLine", 5),
        ("ValidLine", 6),
    ]
    assert [line.event.lines[0].qty_units for line in lines if isinstance(line, ValidLine)] == [1, 2, 3]
    assert progress.bytes_read == len(data) and progress.line_no == 6


def test_an_over_long_line_is_invalid_and_the_next_line_is_read_whole() -> None:
    long_line = b'{"id": "' + b"x" * (5 * LINE_BYTES_MAX) + b'"}\n'
    lines, progress = _read(_envelope(1) + b"\n" + long_line + _envelope(2) + b"\n")
    assert isinstance(lines[1], InvalidLine) and lines[1].line_no == 2
    assert "longer than 1024 bytes" in lines[1].reason
    assert isinstance(lines[2], ValidLine) and lines[2].line_no == 3
    assert progress.line_no == 3


def test_an_invalid_envelope_names_every_wrong_field() -> None:
    wrong = orjson.loads(_envelope(1))
    wrong["time"] = "yesterday"
    wrong["subject"] = "store/12"
    [line] = _read(orjson.dumps(wrong))[0]
    assert isinstance(line, InvalidLine)
    assert line.reason.startswith("subject: must be") and "; time: must be an RFC 3339 time" in line.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"specversion": "1.0"\n', "not JSON: unexpected end of data at character 22 of the line"),
        (b'{"a": tru}\n', "not JSON: invalid literal, expected 'true' at character 7 of the line"),
        (b'{"a": "\xff"}\n', "not JSON: not UTF-8 at byte 8 of the line"),
    ],
)
def test_a_line_that_is_not_json_says_where_in_the_line(raw: bytes, reason: str) -> None:
    # The parser's own "line 2 column 1" stood next to the file's line number, and it called a
    # byte that is not UTF-8 a surrogate.
    [line], _ = _read(raw)
    assert isinstance(line, InvalidLine)
    assert (line.line_no, line.reason) == (1, reason)


def _envelope_of(size: int) -> bytes:
    """An envelope of exactly `size` bytes: lines added, then its reference (up to 256) padded."""
    document = orjson.loads(_envelope(1))
    document["data"]["reference"] = "r"
    while len(orjson.dumps(document)) < size - 256:
        n = len(document["data"]["lines"])
        document["data"]["lines"].append({"sku": f"SKU-{n + 1}", "qty": 1})
    document["data"]["reference"] = "r" * (1 + size - len(orjson.dumps(document)))
    line = orjson.dumps(document)
    assert len(line) == size
    return line


def test_a_byte_order_mark_does_not_count_toward_the_first_lines_limit() -> None:
    bom = b"\xef\xbb\xbf"
    lines, _ = _read(bom + _envelope_of(LINE_BYTES_MAX) + b"\n" + _envelope(2) + b"\n")
    assert [(type(line).__name__, line.line_no) for line in lines] == [("ValidLine", 1), ("ValidLine", 2)]
    for extra in (1, 2, 3):  # a byte over, whatever the mark's three bytes would have hidden
        lines, _ = _read(bom + _envelope_of(LINE_BYTES_MAX + extra) + b"\n" + _envelope(2) + b"\n")
        assert [(type(line).__name__, line.line_no) for line in lines] == [
            ("InvalidLine", 1),
            ("ValidLine", 2),
        ]
        assert "longer than 1024 bytes" in lines[0].reason  # type: ignore[union-attr]


def test_no_event_hides_in_the_tail_of_an_over_long_first_line_after_a_mark() -> None:
    """A mark dropped after a read of the limit let the line's first bytes pass as a whole line
    and its tail be read as the next: here that tail is a valid event, which must not be recorded."""
    padding = b'"' + b"x" * (LINE_BYTES_MAX - 2 - 2) + b'"'
    lines, progress = _read(b"\xef\xbb\xbf" + padding + _envelope(7) + b"\n" + _envelope(3) + b"\n")
    assert [(type(line).__name__, line.line_no) for line in lines] == [("InvalidLine", 1), ("ValidLine", 2)]
    assert [line.event.lines[0].qty_units for line in lines if isinstance(line, ValidLine)] == [3]
    assert progress.line_no == 2


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_a_line_of_the_limits_length_is_read_whole_whatever_its_end(line_end: bytes) -> None:
    """A Windows file's `\\r` is the line's end, not its content: it counted toward the limit."""
    lines, _ = _read(_envelope_of(LINE_BYTES_MAX) + line_end + _envelope(2) + line_end)
    assert [(type(line).__name__, line.line_no) for line in lines] == [("ValidLine", 1), ("ValidLine", 2)]
    for extra in (1, 2):  # one or two bytes over: the whole line is refused, the next read whole
        lines, _ = _read(_envelope_of(LINE_BYTES_MAX + extra) + line_end + _envelope(2) + line_end)
        assert [(type(line).__name__, line.line_no) for line in lines] == [
            ("InvalidLine", 1),
            ("ValidLine", 2),
        ]


def test_a_line_that_gives_a_key_twice_is_invalid_naming_it() -> None:
    twice = _envelope(1).replace(b'"qty":1', b'"qty":1,"qty":500')
    [line] = _read(twice + b"\n")[0]
    assert isinstance(line, InvalidLine), line
    assert line.reason.startswith("data.lines[0].qty: is given twice in one object"), line.reason
