"""kill -9 of `ledger consume` at every point of a batch loses no event and counts none twice: after the
crashes, every level equals a reference ledger's, every event is recorded once and has its result.

On each database (tests/conftest.py's `database_url`). On SQLite the intake runs as `ledger serve`
runs it there: its writer in a process of its own, reached over the writer's socket, and each kill
-9 takes the writer process too (consume_beside_writer.py); on PostgreSQL, as `ledger consume`
scales out, each consumer with its own writer thread."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

from kafka_harness import (
    QUICK_REJOIN_ENV,
    Broker,
    ConsumerFactory,
    TopicReader,
    consumer_env,
    effective_outcomes,
    events_in_order,
    produce,
    reference_ledger,
    result_bodies,
    snapshot,
    wait_until,
)

from devtools.retailer import Retailer, Traffic
from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.kafka.records import read_value

DEADLINE_S = 120
# Where the crashing consumer kills itself, and in which of its batches.
KILL_POINTS = (("while_recording", 2), ("after_recording", 2), ("after_publishing", 1))


def test_kill_9_at_any_point_of_a_batch_loses_nothing_and_doubles_nothing(
    broker: Broker, database_url: str, consumers: ConsumerFactory, tmp_path: Path
) -> None:
    topics = broker.new_topics("crash", partitions=3)
    beside = database_url.startswith("sqlite:")  # the writer in a process of its own, as serve runs it
    # No reservation expires during the test: the reference must decide exactly as the consumer did.
    traffic = Traffic(
        stores=8,
        skus=40,
        events=3000,
        duplicate_share=0.03,
        junk_share=0.01,
        expiring_share=0.0,
        seed=7,
        run_id="crash",
    )
    sent = produce(broker.bootstrap, topics.events, [(r.key, r.value) for r in Retailer(traffic).records()])
    env = consumer_env(
        database_url,
        broker.bootstrap,
        topics,
        LEDGER_KAFKA_BATCH_RECORDS_MAX="250",
        **QUICK_REJOIN_ENV,  # each consumer after a kill -9 joins a group whose last member never left
    )

    for point, batch in KILL_POINTS:
        crashing = consumers(
            {**env, "LEDGER_TEST_CRASH_POINT": point, "LEDGER_TEST_CRASH_BATCH": str(batch)},
            crashing=True,
            name=point,
            writer_process=beside,
        )
        assert crashing.wait_exit(DEADLINE_S) == -signal.SIGKILL, crashing.log[-3000:]
        assert f"CRASH-TEST SIGKILL {point.replace('_', ' ')}" in crashing.log

    # And once from outside, at whatever moment the consumer happens to be in.
    outside = consumers(env, name="killed-from-outside", writer_process=beside)
    wait_until(lambda: outside.metric("ledger_kafka_records_consumed_total") > 0, DEADLINE_S, "some progress")
    time.sleep(random.uniform(0, 0.3))
    outside.signal(signal.SIGKILL)
    assert outside.wait_exit(DEADLINE_S) == -signal.SIGKILL

    finisher = consumers(env, name="finisher", writer_process=beside)
    # Ready first: the others may have committed every offset already, and a SIGTERM while it still
    # starts ends it before its handler is set.
    finisher.wait_ready(DEADLINE_S)
    wait_until(lambda: broker.caught_up(topics, sent), DEADLINE_S, "every offset committed")
    finisher.signal(signal.SIGTERM)
    assert finisher.wait_exit(DEADLINE_S) == 0

    events = events_in_order(sent)
    reference_url, reference_outcomes = reference_ledger(events, tmp_path)
    expected_levels, expected_recorded = snapshot(reference_url, events)
    levels, recorded = snapshot(database_url, events)
    assert levels == expected_levels
    assert recorded == expected_recorded
    assert set(recorded.values()) == {1}
    assert len(recorded) == len(reference_outcomes)

    results = TopicReader(broker.bootstrap, topics.results, topics.partitions)
    try:
        records = results.read_until(
            lambda got: set(reference_outcomes) <= set(effective_outcomes(result_bodies(got))),
            DEADLINE_S,
            "a result for every event",
        )
    finally:
        results.close()
    outcomes = effective_outcomes(result_bodies(records))
    assert {key: {outcome} for key, outcome in reference_outcomes.items()} == outcomes

    limits = intake_limits(Settings())
    junk = {(s.partition, s.offset) for s in sent if not isinstance(read_value(s.value, limits), StockEvent)}
    assert junk
    dlq = TopicReader(broker.bootstrap, topics.dlq, topics.partitions)
    try:
        letters = dlq.read_until(lambda got: junk <= _origins(got), DEADLINE_S, "every dead letter")
    finally:
        dlq.close()
    assert _origins(letters) == junk


def _origins(letters: list[Any]) -> set[tuple[int, int]]:
    found = set()
    for letter in letters:
        headers = dict(letter.headers)
        found.add((int(headers["original_partition"]), int(headers["original_offset"])))
    return found
