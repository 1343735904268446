"""No I/O: how a record is read (event or dead letter) and what goes back out (results always with
`reason`, dead letters that always fit); the model retailer."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from kafka.record.default_records import DefaultRecordBatchBuilder

from devtools.retailer import JUNK_KINDS, WEIGHTS, Retailer, Traffic
from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason, Shortfall, StockEvent
from ledger.kafka.dead_letters import DeadLetter, DeadLetterLimits, dead_letter_record
from ledger.kafka.records import Origin, Unreadable, read_value, result_record
from ledger.results import EventResult, Original

SETTINGS = Settings()
LIMITS = intake_limits(SETTINGS)
DEAD_LETTER_LIMITS = DeadLetterLimits.from_settings(SETTINGS)
GOOD = {
    "specversion": "1.0",
    "id": "pos-1",
    "source": "pos/store-1",
    "type": "stock.pos_sale",
    "time": "2026-11-22T10:15:00+03:00",
    "subject": "store-1",
    "data": {"lines": [{"sku": "SKU-1", "qty": 2}]},
}


def test_a_valid_envelope_is_read_as_an_event() -> None:
    event = read_value(json.dumps(GOOD).encode(), LIMITS)
    assert isinstance(event, StockEvent)
    assert event.store_id == "store-1"
    assert event.key == ("pos/store-1", "pos-1")
    assert event.principal == "kafka"  # CONTRACT §5: what came from Kafka, whoever produced it


def test_a_value_that_is_not_json_is_unreadable_with_a_reason() -> None:
    read = read_value(b"\xff\xfe SALE;1", LIMITS)
    assert isinstance(read, Unreadable)
    assert read.error.startswith("not JSON")


def test_one_byte_order_mark_before_the_json_is_ignored_and_nothing_else_is() -> None:
    """RFC 8259 §8.1 lets a parser ignore a UTF-8 BOM; Windows and 1C writers send one."""
    bom = b"\xef\xbb\xbf"
    event = read_value(bom + json.dumps(GOOD).encode(), LIMITS)
    assert isinstance(event, StockEvent) and event.key == ("pos/store-1", "pos-1")
    for value in (bom + bom + json.dumps(GOOD).encode(), b" " + bom + json.dumps(GOOD).encode(), bom):
        read = read_value(value, LIMITS)
        assert isinstance(read, Unreadable) and read.error.startswith("not JSON"), value[:8]


def test_an_empty_record_is_unreadable() -> None:
    read = read_value(None, LIMITS)
    assert isinstance(read, Unreadable)
    assert read.error.startswith("empty record")


def test_an_invalid_envelope_names_every_wrong_field() -> None:
    broken = {**GOOD, "subject": "store/1", "data": {"lines": [{"sku": "SKU-1", "qty": 0}]}}
    read = read_value(json.dumps(broken).encode(), LIMITS)
    assert isinstance(read, Unreadable)
    assert {error.field for error in read.field_errors} == {"subject", "data.lines[0].qty"}
    assert "subject" in read.error and "data.lines[0].qty" in read.error


def test_a_result_record_is_the_http_result_plus_subject_keyed_by_store() -> None:
    rejected = EventResult(
        "sale-1",
        "web/shop",
        "store-9",
        Outcome.REJECTED,
        RejectionReason.INSUFFICIENT_STOCK,
        (Shortfall("SKU-1", 3, 1),),
        position=41,
    )
    record = result_record("stock.events.results", rejected)
    assert record.key == b"store-9"
    assert json.loads(record.value or b"") == {
        "id": "sale-1",
        "source": "web/shop",
        "subject": "store-9",
        "outcome": "rejected",
        "reason": "insufficient_stock",
        "shortfall": [{"sku": "SKU-1", "requested": 3, "available": 1}],
        "position": 41,
    }
    duplicate = EventResult(
        "r-1", "wms", "store-9", Outcome.DUPLICATE, original=Original(Outcome.ACCEPTED, None, 7)
    )
    body = json.loads(result_record("results", duplicate).value or b"")
    assert body["original"] == {"outcome": "accepted", "reason": None, "position": 7}
    assert body["reason"] is None
    assert body["position"] is None


def test_an_accepted_result_record_carries_reason_null() -> None:
    accepted = EventResult("rcpt-1", "wms", "store-2", Outcome.ACCEPTED, position=12)
    record = result_record("stock.events.results", accepted)
    assert json.loads(record.value or b"") == {
        "id": "rcpt-1",
        "source": "wms",
        "subject": "store-2",
        "outcome": "accepted",
        "reason": None,
        "position": 12,
    }


def test_a_dead_letter_keeps_the_record_and_says_why_and_where_it_came_from() -> None:
    why = read_value(b"[1]", LIMITS)
    assert isinstance(why, Unreadable)
    letter = DeadLetter(
        Origin("stock.events", 3, 1200, 1_700_000_000_000),
        b"store-1",
        b"[1]",
        (("trace", b"abc"), ("error", b"forged")),
        why,
    )
    record = dead_letter_record("stock.events.dlq", letter, DEAD_LETTER_LIMITS)
    headers = dict(record.headers)
    assert (record.topic, record.key, record.value) == ("stock.events.dlq", b"store-1", b"[1]")
    assert headers["trace"] == b"abc"
    assert headers["error"] == why.error.encode()
    assert [name for name, _ in record.headers].count("error") == 1
    assert headers["original_topic"] == b"stock.events"
    assert headers["original_partition"] == b"3"
    assert headers["original_offset"] == b"1200"
    assert headers["original_timestamp"] == b"1700000000000"
    assert headers["original_value_bytes"] == b"3"
    assert headers["original_value_sha256"] == hashlib.sha256(b"[1]").hexdigest().encode()
    assert "original_value_truncated" not in headers


def test_a_2_mb_dead_letter_is_cut_to_its_limit_and_keeps_its_size_digest_and_origin() -> None:
    junk = b"SALE;" + bytes(range(256)) * 8192  # 2 MB and a bit: what a till sent by mistake
    why = read_value(junk, LIMITS)
    assert isinstance(why, Unreadable)
    big_header = ("trace", b"t" * 100_000)
    letter = DeadLetter(Origin("stock.events", 1, 77), b"k" * 5000, junk, (("small", b"s"), big_header), why)
    record = dead_letter_record("stock.events.dlq", letter, DEAD_LETTER_LIMITS)
    headers = dict(record.headers)
    assert record.value == junk[: SETTINGS.kafka_dlq_value_bytes_max]
    assert headers["original_value_bytes"] == str(len(junk)).encode()
    assert headers["original_value_sha256"] == hashlib.sha256(junk).hexdigest().encode()
    assert headers["original_value_truncated"] == b"true"
    assert record.key == b"k" * SETTINGS.kafka_dlq_key_bytes_max
    assert headers["original_key_bytes"] == b"5000"
    assert headers["small"] == b"s"
    assert "trace" not in headers
    assert headers["original_headers_dropped"] == b"1"
    assert headers["error"].startswith(b"not JSON")
    assert (headers["original_topic"], headers["original_partition"], headers["original_offset"]) == (
        b"stock.events",
        b"1",
        b"77",
    )
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
    assert size < SETTINGS.kafka_produce_request_bytes_max
    assert record.fallback is not None
    assert record.fallback.value == b""
    assert dict(record.fallback.headers)["original_value_dropped"] == b"true"


def test_a_dead_letter_keeps_only_the_field_errors_and_text_that_fit() -> None:
    lines = [{"sku": f"SKU-{n}", "qty": 0} for n in range(1000)]
    broken = {**GOOD, "data": {"lines": lines}}
    why = read_value(json.dumps(broken).encode(), LIMITS)
    assert isinstance(why, Unreadable)
    assert len(why.field_errors) == 1000
    letter = DeadLetter(Origin("stock.events", 0, 1), None, b"{}", (), why)
    limits = DeadLetterLimits(value_bytes_max=1024, key_bytes_max=64, headers_bytes_max=8192)
    record = dead_letter_record("stock.events.dlq", letter, limits)
    headers = dict(record.headers)
    assert len(headers["error"]) <= 1024
    fields = json.loads(headers["error_fields"])
    assert 0 < len(fields) < 1000
    assert fields[0] == {"field": "data.lines[0].qty", "message": why.field_errors[0].message}
    assert sum(len(name) + len(value) for name, value in record.headers) <= limits.headers_bytes_max


def test_the_model_retailer_sends_every_kind_of_event_some_twice_and_some_junk() -> None:
    traffic = Traffic(
        stores=5, skus=30, events=4000, duplicate_share=0.03, junk_share=0.01, seed=3, run_id="t"
    )
    records = list(Retailer(traffic).records())
    kinds = Counter(record.kind for record in records)
    assert len(records) == 4000
    assert {kind for kind in WEIGHTS if kind.startswith("stock.")} <= set(kinds)
    assert kinds["duplicate"] > 0
    assert {f"junk:{why}" for why in JUNK_KINDS} <= set(kinds)
    firsts: dict[tuple[str, str], bytes] = {}
    for record in records:
        read = read_value(record.value, LIMITS)
        if record.kind.startswith("junk:"):
            assert isinstance(read, Unreadable), record
            continue
        assert isinstance(read, StockEvent), (record, read)
        assert record.key == read.store_id
        if record.kind == "duplicate":
            assert firsts[read.key] == record.value
        else:
            assert read.key not in firsts
            firsts[read.key] = record.value or b""


def test_the_model_retailer_ships_in_parts_and_lets_reservations_expire() -> None:
    traffic = Traffic(
        stores=3, skus=10, events=3000, expiring_share=0.5, expire_after_s=1, seed=5, run_id="t"
    )
    records = list(Retailer(traffic).records())
    bodies = [json.loads(r.value) for r in records if r.kind.startswith("stock.")]
    reserved = {b["data"]["reservation_id"]: b for b in bodies if b["type"] == "stock.reservation"}
    shipped = Counter(b["data"]["reservation_id"] for b in bodies if b["type"] == "stock.shipment")
    assert any(count > 1 for count in shipped.values())  # one reservation shipped in several parts
    soon = [
        b
        for b in reserved.values()
        if datetime.fromisoformat(b["data"]["expires_at"]) - datetime.fromisoformat(b["time"])
        < timedelta(days=1)
    ]
    assert soon
    transfer_ids = {b["data"]["transfer_id"] for b in bodies if b["type"] == "stock.transfer"}
    received = {b["data"].get("transfer_id") for b in bodies if b["type"] == "stock.receipt"}
    assert transfer_ids & received


def test_the_same_seed_makes_the_same_traffic() -> None:
    fixed = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    traffic = Traffic(events=500, seed=9, run_id="same")
    first = [r.value for r in Retailer(traffic, clock=lambda: fixed).records()]
    second = [r.value for r in Retailer(traffic, clock=lambda: fixed).records()]
    assert first == second


def test_a_value_that_gives_a_key_twice_is_unreadable_naming_it() -> None:
    """`{"qty": 1, "qty": 500}`: which was meant cannot be told, and an event is recorded for good."""
    value = json.dumps(GOOD).encode().replace(b'"qty": 2', b'"qty": 2, "qty": 500')
    read = read_value(value, LIMITS)
    assert isinstance(read, Unreadable), read
    assert read.error.startswith("ambiguous JSON: data.lines[0].qty: is given twice"), read.error
    assert [error.field for error in read.field_errors] == ["data.lines[0].qty"]
