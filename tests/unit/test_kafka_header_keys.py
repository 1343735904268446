"""Header keys that are not UTF-8 (ledger/kafka/header_keys.py), read from record batches as the
broker sends them: the record is read with "?" for each bad byte, nothing else in it or after it
changes; an error that is not a key's is still raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from support.header_keys import RawHeaderKey

from ledger.kafka import header_keys

Record = tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]  # key, value, headers


def batch_of(records: list[Record], codec: int = DefaultRecordBatch.CODEC_NONE) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for offset, (key, value, headers) in enumerate(records):
        written = [(RawHeaderKey(name), header_value) for name, header_value in headers]
        assert builder.append(offset, timestamp=1_700_000_000_000, key=key, value=value, headers=written)
    return bytes(builder.build())


def read(batch: bytes) -> list[tuple[int, bytes | None, list[tuple[str, bytes | None]]]]:
    parsed = DefaultRecordBatch(batch)
    assert parsed.validate_crc()
    return [(record.offset, record.value, record.headers) for record in parsed]


@pytest.fixture
def installed() -> Iterator[None]:
    before = DefaultRecordBatch._read_msg
    header_keys.install()
    try:
        yield
    finally:
        DefaultRecordBatch._read_msg = before


RECORDS: list[Record] = [
    (b"store-1", b'{"first": 1}', [(b"trace", b"t-1")]),
    (
        b"store-1",
        b'{"second": 2}',
        [(b"span-\xff\xfe", b"s-1"), (b"caf\xc3\xa9-\xe9", None), (b"trace", b"")],
    ),
    (None, None, [(b"\x80", b"x")]),
    (b"store-1", b'{"third": 3}', []),
]
READ = [
    (0, b'{"first": 1}', [("trace", b"t-1")]),
    (1, b'{"second": 2}', [("span-??", b"s-1"), ("café-?", None), ("trace", b"")]),
    (2, None, [("?", b"x")]),
    (3, b'{"third": 3}', []),
]


def test_kafka_python_alone_cannot_read_such_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the intake met: the error came out of every poll of the partition. (An intake built
    earlier in this process has installed the mending reader: kafka-python's own is put back.)"""
    monkeypatch.setattr(DefaultRecordBatch, "_read_msg", header_keys._read_strictly)
    with pytest.raises(CorruptRecordError, match="UnicodeDecodeError"):
        read(batch_of(RECORDS))


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("codec", [DefaultRecordBatch.CODEC_NONE, DefaultRecordBatch.CODEC_GZIP])
def test_bad_bytes_of_a_key_read_as_question_marks_and_the_rest_unchanged(codec: int) -> None:
    assert read(batch_of(RECORDS, codec)) == READ


@pytest.mark.usefixtures("installed")
def test_a_batch_of_utf8_keys_reads_as_before() -> None:
    records: list[Record] = [(b"k", b"v", [(b"caf\xc3\xa9", b"1")])]
    assert read(batch_of(records)) == [(0, b"v", [("café", b"1")])]


@pytest.mark.usefixtures("installed")
def test_an_error_that_is_not_a_key_s_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: object, *args: object, **kwargs: object) -> object:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "somewhere else")

    monkeypatch.setattr(header_keys, "_read_strictly", failing)
    with pytest.raises(CorruptRecordError, match="somewhere else"):
        read(batch_of([(b"k", b"v", [(b"fine", b"1")])]))


def test_mending_changes_the_bad_bytes_alone() -> None:
    parsed = DefaultRecordBatch(batch_of(RECORDS[1:2]))
    before = bytes(parsed._buffer)
    assert header_keys.mend_header_keys(parsed._buffer, parsed._pos, parsed.base_offset) == 0  # its offset
    changed = [(a, b) for a, b in zip(before, parsed._buffer, strict=True) if a != b]
    assert changed == [(0xFF, ord("?")), (0xFE, ord("?")), (0xE9, ord("?"))]
    assert header_keys.mend_header_keys(parsed._buffer, parsed._pos, parsed.base_offset) is None  # all UTF-8
