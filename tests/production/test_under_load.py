"""The production configuration under everything at once: HTTP writes through two workers, the
Kafka intake, and clients of the writer's socket that never read, on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka_harness import Broker
from support.postgres import EmbeddedPostgres

from production.checks import (
    check_answers,
    check_kafka_results,
    check_levels_are_history_sums,
    check_recorded_once,
    read_ledger,
    read_results,
)
from production.load import Acknowledged, HttpWriters, run_until
from production.service import StalledClients
from production.trial import kafka_trial

# Low enough that a writer frozen by a silent client shows within seconds, high enough for a slow CI.
REQUEST_TIMEOUT_S = 10.0
HTTP_WRITER_THREADS = 3
HTTP_REQUESTS_PER_THREAD = 200
KAFKA_EVENTS = 4000
KAFKA_CHUNK = 100
KAFKA_PAUSE_S = 0.05
PARTITIONS = 4
LOAD_DEADLINE_S = 180.0
RESULTS_DEADLINE_S = 120.0


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_every_http_write_and_kafka_event_is_answered_once_while_a_writer_client_never_reads(
    postgres: EmbeddedPostgres, production_broker: Broker, tmp_path: Path
) -> None:
    trial = kafka_trial(
        "load",
        production_broker,
        postgres.create_database(),
        tmp_path,
        partitions=PARTITIONS,
        request_timeout_s=REQUEST_TIMEOUT_S,
    )
    topics, catalogue, service = trial.topics, trial.catalogue, trial.service
    acknowledged = Acknowledged()
    service.start()
    try:
        with StalledClients(service.writer_socket) as stalled:
            run_until(lambda: stalled.connected_total >= 2, 30, "silent clients on the writer's socket")
            writers = HttpWriters(
                service,
                catalogue,
                acknowledged,
                threads=HTTP_WRITER_THREADS,
                strict=True,
                requests_max=HTTP_REQUESTS_PER_THREAD,
            )
            kafka = trial.producer(chunk=KAFKA_CHUNK, pause_s=KAFKA_PAUSE_S, events_max=KAFKA_EVENTS)
            writers.start()
            kafka.start()
            run_until(lambda: writers.done() and kafka.done(), LOAD_DEADLINE_S, "the load to be sent")
            writers.stop()
            kafka.stop()

            statuses = check_answers(
                writers.answers, expected={200, 201, 409}, transport_errors_allowed=False
            )
            assert sum(statuses.values()) == HTTP_WRITER_THREADS * HTTP_REQUESTS_PER_THREAD, statuses
            assert not kafka.uncertain, kafka.errors[:5]
            results = read_results(production_broker, topics, kafka.sent, RESULTS_DEADLINE_S)
            kafka_acknowledged = check_kafka_results(results, kafka.sent, (), exactly_once=True)
            failed = service.failed_recordings()
            assert not failed, f"{len(failed)} failed recordings, e.g.:\n" + "\n".join(failed[:5])

            contents = read_ledger(service.url, catalogue)
            check_recorded_once(contents, acknowledged)
            check_recorded_once(contents, kafka_acknowledged)
            check_levels_are_history_sums(contents)
    finally:
        service.stop()
