"""`ledger consume` against a real broker and PostgreSQL: results, duplicates, dead letters, levels,
metrics and readiness. One consumer process serves the whole module; tests keep apart by store."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka_harness import (
    PRODUCE_REQUEST_BYTES_MAX,
    Broker,
    ConsumerFactory,
    ConsumerProcess,
    Sent,
    TopicReader,
    Topics,
    consumer_env,
    envelope,
    produce,
    result_bodies,
    snapshot,
    started_ledger,
    wait_until,
)
from support.header_keys import RawHeaderKey
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import ChannelQuota, EventType, Line, Outcome, Policy, StockEvent
from ledger.kafka.records import read_value

DEADLINE_S = 60
_ids = itertools.count(1)


@dataclass
class Intake:
    broker: Broker
    topics: Topics
    database_url: str
    consumer: ConsumerProcess
    results: TopicReader
    dlq: TopicReader
    sent: list[Sent] = field(default_factory=list)

    def send(
        self,
        *records: tuple[str | None, bytes | None],
        headers: list[tuple[str, bytes]] | None = None,
        request_bytes_max: int = PRODUCE_REQUEST_BYTES_MAX,
        compression: str | None = None,
    ) -> Any:
        sent = produce(
            self.broker.bootstrap,
            self.topics.events,
            records,
            headers,
            request_bytes_max=request_bytes_max,
            compression=compression,
        )
        self.sent.extend(sent)
        return sent

    def results_for(self, ids: set[str]) -> list[dict[str, Any]]:
        def arrived(records: list[Any]) -> bool:
            return ids <= {body["id"] for body in result_bodies(records)}

        records = self.results.read_until(arrived, DEADLINE_S, f"results for {sorted(ids)}")
        return [body for body in result_bodies(records) if body["id"] in ids]


@pytest.fixture(scope="module")
def intake(
    broker: Broker, kafka_postgres: EmbeddedPostgres, module_consumers: ConsumerFactory
) -> Iterator[Intake]:
    topics = broker.new_topics("intake", partitions=2)
    database_url = kafka_postgres.create_database("kafka")
    consumer = module_consumers(consumer_env(database_url, broker.bootstrap, topics))
    consumer.wait_ready()
    results = TopicReader(broker.bootstrap, topics.results, topics.partitions)
    dlq = TopicReader(broker.bootstrap, topics.dlq, topics.partitions)
    try:
        yield Intake(broker, topics, database_url, consumer, results, dlq)
    finally:
        results.close()
        dlq.close()


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def test_every_event_gets_one_result_keyed_by_its_store(intake: Intake) -> None:
    first, second = new_id("rcpt"), new_id("rcpt")
    intake.send(
        ("store-r1", envelope(first, "store-r1", "stock.receipt", [("SKU-1", 5)])),
        ("store-r2", envelope(second, "store-r2", "stock.receipt", [("SKU-1", 7), ("SKU-2", 1)])),
    )
    intake.results_for({first, second})
    records = [r for r in intake.results.records if json.loads(r.value)["id"] in {first, second}]
    assert len(records) == 2
    by_id = {json.loads(record.value)["id"]: record for record in records}
    assert by_id[first].key == b"store-r1"
    assert by_id[second].key == b"store-r2"
    body = json.loads(by_id[second].value)
    assert body["outcome"] == "accepted"
    assert "reason" in body and body["reason"] is None  # CONTRACT §2: always there, null when none
    assert body["subject"] == "store-r2"
    assert body["source"] == "test/kafka"
    assert isinstance(body["position"], int)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_events_in_compressed_batches_are_recorded(intake: Intake, codec: str) -> None:
    """The producer or the topic picks the codec; a batch the intake cannot open would stop its
    partition for good, every later event of it with it."""
    store = f"store-{codec}"
    ids = [new_id(codec) for _ in range(3)]
    intake.send(
        *[(store, envelope(event_id, store, "stock.receipt", [("SKU-Z", 2)])) for event_id in ids],
        compression=codec,
    )
    assert {body["outcome"] for body in intake.results_for(set(ids))} == {"accepted"}


def test_levels_follow_the_events_read_from_kafka(intake: Intake) -> None:
    store = "store-lv"
    ids = [new_id("lv") for _ in range(4)]
    values = [
        envelope(ids[0], store, "stock.receipt", [("SKU-A", 10), ("SKU-B", 3)]),
        envelope(ids[1], store, "stock.pos_sale", [("SKU-A", 4)]),
        envelope(ids[2], store, "stock.reservation", [("SKU-B", 2)], reservation_id="R-lv-1"),
        envelope(ids[3], store, "stock.shipment", [("SKU-B", 1)], reservation_id="R-lv-1"),
    ]
    intake.send(*[(store, value) for value in values])
    assert {body["outcome"] for body in intake.results_for(set(ids))} == {"accepted"}
    limits = intake_limits(Settings())
    events = [
        event for event in (read_value(value, limits) for value in values) if isinstance(event, StockEvent)
    ]
    levels, recorded = snapshot(intake.database_url, events)
    assert levels[(store, "SKU-A")] == (6, 0, 0)
    assert levels[(store, "SKU-B")] == (2, 1, 0)
    assert all(recorded[("test/kafka", event_id)] == 1 for event_id in ids)


def test_a_sale_beyond_the_stock_is_a_rejected_result_not_a_dead_letter(intake: Intake) -> None:
    store, stocked, refused = "store-rj", new_id("rj"), new_id("rj")
    sent = intake.send(
        (store, envelope(stocked, store, "stock.receipt", [("SKU-1", 1)])),
        (store, envelope(refused, store, "stock.sale", [("SKU-1", 3)], order_id="O-1")),
    )
    body = next(b for b in intake.results_for({stocked, refused}) if b["id"] == refused)
    assert body["outcome"] == "rejected"
    assert body["reason"] == "insufficient_stock"
    assert body["shortfall"] == [{"sku": "SKU-1", "requested": 3, "available": 1}]
    refused_offset = str(sent[1].offset).encode()
    dead = [
        r
        for r in intake.dlq.records
        if dict(r.headers).get("original_offset") == refused_offset
        and dict(r.headers).get("original_partition") == str(sent[1].partition).encode()
    ]
    assert dead == []


def test_an_event_sent_again_is_answered_as_a_duplicate_with_the_first_outcome(intake: Intake) -> None:
    store, event_id = "store-dup", new_id("dup")
    value = envelope(event_id, store, "stock.receipt", [("SKU-1", 2)])
    intake.send((store, value))
    first = intake.results_for({event_id})[0]
    intake.send((store, value))

    def both(records: list[Any]) -> bool:
        return sum(body["id"] == event_id for body in result_bodies(records)) == 2

    records = intake.results.read_until(both, DEADLINE_S, "the duplicate's result")
    again = [body for body in result_bodies(records) if body["id"] == event_id][1]
    assert again["outcome"] == "duplicate"
    assert again["original"] == {"outcome": "accepted", "reason": None, "position": first["position"]}
    assert again["position"] is None
    assert again["reason"] is None


def test_unreadable_records_go_unchanged_to_the_dead_letter_topic_and_the_consumer_goes_on(
    intake: Intake,
) -> None:
    store = "store-dlq"
    invalid = json.loads(envelope(new_id("bad"), store, "stock.sale", [("SKU-1", -2)]))
    # under the ledger's own source, with the id of an expiry: it would stop every expiry due with it
    squatting = json.loads(envelope(f"expire:{store}/R-1", store, "stock.receipt", [("SKU-1", 1)]))
    squatting["source"] = "ledger/expiry"
    junk: list[tuple[str | None, bytes | None]] = [
        (store, b"\xff\xfe not json at all"),
        (store, b"[1, 2, 3]"),
        (store, json.dumps(invalid).encode()),
        (store, None),
        (store, json.dumps(squatting).encode()),
    ]
    after = new_id("after-junk")
    sent = intake.send(
        *junk, (store, envelope(after, store, "stock.receipt", [("SKU-1", 1)])), headers=[("trace", b"t-1")]
    )
    assert intake.results_for({after})[0]["outcome"] == "accepted"
    origins = {(str(s.partition).encode(), str(s.offset).encode()) for s in sent[:5]}

    def dead_lettered(records: list[Any]) -> bool:
        found = {
            (dict(r.headers).get("original_partition"), dict(r.headers).get("original_offset"))
            for r in records
        }
        return origins <= found

    records = intake.dlq.read_until(dead_lettered, DEADLINE_S, "five dead letters")
    letters = {}
    for record in records:
        headers = dict(record.headers)
        origin = (headers.get("original_partition"), headers.get("original_offset"))
        if origin in origins:
            letters[origin] = (record, headers)
    assert len(letters) == 5
    for sent_record in sent[:5]:
        record, headers = letters[(str(sent_record.partition).encode(), str(sent_record.offset).encode())]
        assert record.value == sent_record.value
        assert record.key == sent_record.key
        assert headers["original_topic"] == intake.topics.events.encode()
        assert headers["trace"] == b"t-1"
        assert headers["error"]
    errors = {
        letters[(str(s.partition).encode(), str(s.offset).encode())][1]["error"].decode() for s in sent[:5]
    }
    assert any(error.startswith("not JSON") for error in errors)
    assert any("must be a JSON object" in error for error in errors)
    assert any("data.lines[0].qty" in error for error in errors)
    assert any(error.startswith("empty record") for error in errors)
    assert any("source: must not start with ledger/" in error for error in errors), errors
    results_ids = {body["id"] for body in result_bodies(intake.results.records)}
    assert invalid["id"] not in results_ids


def test_header_keys_that_are_not_utf8_stop_nothing(intake: Intake) -> None:
    """kafka-python read such a key as an error on every poll of the partition: nothing after it was
    recorded, and the consumer was made again and again. Java's client reads the key with its bad
    bytes replaced; the intake reads it so too, and records the events."""
    store = "store-hk"
    ids = [new_id("hk") for _ in range(2)]
    intake.send(
        *[(store, envelope(event_id, store, "stock.receipt", [("SKU-H", 1)])) for event_id in ids],
        (store, b"not json"),
        headers=[("trace", b"t-2"), (RawHeaderKey(b"span-\xff\xfe"), b"s-1")],
    )
    after = new_id("hk-after")
    intake.send((store, envelope(after, store, "stock.receipt", [("SKU-H", 1)])))
    outcomes = {body["id"]: body["outcome"] for body in intake.results_for({*ids, after})}
    assert outcomes == {ids[0]: "accepted", ids[1]: "accepted", after: "accepted"}

    def letters(records: list[Any]) -> list[Any]:
        return [r for r in records if r.value == b"not json" and dict(r.headers).get("trace") == b"t-2"]

    records = intake.dlq.read_until(
        lambda r: bool(letters(r)), DEADLINE_S, "the unreadable record's dead letter"
    )
    (letter,) = letters(records)
    assert dict(letter.headers)["span-??"] == b"s-1"  # the key's bytes that are not UTF-8 read as "?"


def test_a_2_mb_record_is_dead_lettered_cut_to_its_limit_and_the_partition_goes_on(intake: Intake) -> None:
    store = "store-big"
    junk = b"SALE;" + b"0123456789abcdef" * (2 * 1024 * 1024 // 16)  # 2 MB the broker accepts
    after = new_id("after-big")
    sent = intake.send(
        (store, junk),
        (store, envelope(after, store, "stock.receipt", [("SKU-1", 1)])),
        request_bytes_max=4 * 1024 * 1024,
    )
    body = intake.results_for({after})[0]
    assert body["outcome"] == "accepted"  # recorded once: the junk before it did not hold the batch
    offset = (str(sent[0].partition).encode(), str(sent[0].offset).encode())

    def dead_lettered(records: list[Any]) -> bool:
        return any(_origin(record) == offset for record in records)

    records = intake.dlq.read_until(dead_lettered, DEADLINE_S, "the 2 MB record's dead letter")
    letter = next(record for record in records if _origin(record) == offset)
    headers = dict(letter.headers)
    value_bytes_max = Settings().kafka_dlq_value_bytes_max
    assert letter.value == junk[:value_bytes_max]
    assert headers["original_value_bytes"] == str(len(junk)).encode()
    assert headers["original_value_sha256"] == hashlib.sha256(junk).hexdigest().encode()
    assert headers["original_value_truncated"] == b"true"
    assert headers["original_topic"] == intake.topics.events.encode()
    assert headers["error"].startswith(b"not JSON")
    wait_until(lambda: intake.broker.caught_up(intake.topics, intake.sent), DEADLINE_S, "offsets past it")
    assert intake.consumer.ready()


def _origin(record: Any) -> tuple[bytes | None, bytes | None]:
    headers = dict(record.headers)
    return headers.get("original_partition"), headers.get("original_offset")


def test_metrics_count_consumed_accepted_duplicate_rejected_and_dead_lettered_events(intake: Intake) -> None:
    store = "store-metrics"
    stocked, refused = new_id("m"), new_id("m")
    before = intake.consumer.metrics()
    intake.send(
        (store, envelope(stocked, store, "stock.receipt", [("SKU-1", 1)])),
        (store, envelope(stocked, store, "stock.receipt", [("SKU-1", 1)])),
        (store, envelope(refused, store, "stock.sale", [("SKU-1", 5)])),
        (store, b"junk"),
    )
    intake.results_for({stocked, refused})

    def grew(name: str, by: int) -> bool:
        return intake.consumer.metric(name) - before.get(name, 0.0) >= by

    wait_until(lambda: grew("ledger_kafka_records_committed_total", 4), DEADLINE_S, "the commit")
    after = intake.consumer.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("ledger_kafka_records_consumed_total") == 4
    assert delta('ledger_kafka_events_total{outcome="accepted"}') == 1
    assert delta('ledger_kafka_events_total{outcome="duplicate"}') == 1
    assert delta('ledger_kafka_events_total{outcome="rejected"}') == 1
    assert delta("ledger_kafka_dead_lettered_total") == 1
    assert after["ledger_kafka_assigned_partitions"] == 2
    assert "ledger_kafka_lag_records" in after


def test_lag_shows_zero_once_every_record_is_committed(intake: Intake) -> None:
    event_id = new_id("lag")
    intake.send(("store-lag", envelope(event_id, "store-lag", "stock.receipt", [("SKU-1", 1)])))
    intake.results_for({event_id})
    wait_until(lambda: intake.consumer.metrics().get("ledger_kafka_lag_records") == 0, DEADLINE_S, "lag 0")
    wait_until(lambda: intake.broker.caught_up(intake.topics, intake.sent), DEADLINE_S, "offsets at the end")


def test_readiness_reports_ready_while_the_consumer_is_in_its_group(intake: Intake) -> None:
    assert intake.consumer.ready()
    assert intake.consumer.metric("ledger_kafka_ready") == 1
    assert len(intake.broker.group_members(intake.topics.group)) == 1


def test_a_channel_on_a_kafka_event_is_limited_by_its_quota_and_kept_on_the_reservation(
    intake: Intake,
) -> None:
    """CONTRACT §6 over Kafka: the policy is set by another process (as the REST route would, through
    its own writer on the same database); the consumer's writer learns it from the log."""
    store = "store-ch"
    policy = Policy(1, (ChannelQuota("online", units=3),))
    with started_ledger(Settings(database_url=intake.database_url)) as ledger:
        [changed] = ledger.submit_and_wait(
            [
                StockEvent(
                    new_id("policy"),
                    "ledger/policies",
                    EventType.POLICY_CHANGED,
                    datetime.now(UTC),
                    store,
                    (Line("SKU-1", 0),),
                    policy=policy,
                )
            ]
        )
    assert changed.outcome is Outcome.ACCEPTED
    ids = [new_id("ch") for _ in range(4)]
    intake.send(
        (store, envelope(ids[0], store, "stock.receipt", [("SKU-1", 10)])),
        (
            store,
            envelope(
                ids[1], store, "stock.reservation", [("SKU-1", 3)], reservation_id="R-1", channel="online"
            ),
        ),
        (
            store,
            envelope(
                ids[2], store, "stock.reservation", [("SKU-1", 1)], reservation_id="R-2", channel="online"
            ),
        ),
        (store, envelope(ids[3], store, "stock.reservation", [("SKU-1", 6)], reservation_id="R-3")),
    )
    by_id = {body["id"]: body for body in intake.results_for(set(ids))}
    assert [by_id[event_id]["outcome"] for event_id in ids] == [
        "accepted",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert by_id[ids[2]]["shortfall"] == [{"sku": "SKU-1", "requested": 1, "available": 0}]
    with started_ledger(Settings(database_url=intake.database_url)) as ledger:
        [view] = ledger.levels(store, ["SKU-1"])
        held = ledger.reservation(store, "R-1")
    assert (view.level.reserved_units, view.level.channel_reserved, view.policy) == (9, {"online": 3}, policy)
    assert held is not None and held.reservation.channel == "online"
