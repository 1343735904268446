"""Outages under load, recovered from with no restart: PostgreSQL stopped and started again, a
SQLite database that refuses writes for a while, and a Kafka broker that goes away and comes back.
Through each: no 500, no request hanging past LEDGER_REQUEST_TIMEOUT_S, 503 problem+json with
Retry-After while it lasts, keep-alive connections kept, /readyz telling the truth, and nothing
acknowledged lost or recorded twice."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka_harness import Broker, TopicReader, result_bodies
from support.ids import unique
from support.postgres import EmbeddedPostgres

from production.checks import (
    check_kafka_results,
    check_levels_are_history_sums,
    check_recorded_once,
    read_ledger,
    read_results,
)
from production.faults import (
    RestartablePostgres,
    broker_frozen,
    broker_restarted_empty,
    files_cannot_grow,
    sqlite_write_lock_held,
)
from production.load import Acknowledged, new_catalogue, run_until
from production.outage import LoadThroughOutage
from production.service import ProductionService
from production.trial import KafkaTrial, kafka_trial

# Low, so that a write that cannot be recorded is answered soon; a hang past it fails the test.
REQUEST_TIMEOUT_S = 3.0
# Within the 10 s the issue allows; long enough for /readyz (a read waits up to 5 s for a pooled
# connection to an unreachable PostgreSQL) to be asked and answered inside it.
POSTGRES_OUTAGE_S = 9.0
SQLITE_REFUSAL_S = 8.0
BROKER_OUTAGE_S = 8.0
PARTITIONS = 2
KAFKA_CHUNK = 10
KAFKA_PAUSE_S = 0.1
KAFKA_EVENTS_BEFORE_RESTART = 300
RESULTS_DEADLINE_S = 120.0
KAFKA_ENV = {
    # A publish to a broker that has gone away fails, and the intake says it is not ready, soon.
    "LEDGER_KAFKA_PUBLISH_TIMEOUT_S": "3",
    "LEDGER_KAFKA_COMMIT_TIMEOUT_S": "3",
}


@pytest.fixture
def restartable_postgres() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, since the test stops it."""
    broker = Broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


def _trial(
    name: str, broker: Broker, database_url: str, log_dir: Path, extra_env: dict[str, str] | None = None
) -> KafkaTrial:
    return kafka_trial(
        name,
        broker,
        database_url,
        log_dir,
        partitions=PARTITIONS,
        request_timeout_s=REQUEST_TIMEOUT_S,
        extra_env=extra_env,
    )


def _check_ledger(
    service: ProductionService, load: LoadThroughOutage, kafka: list[Acknowledged] | None = None
) -> None:
    contents = read_ledger(service.url, load.writers.catalogue)
    check_recorded_once(contents, load.acknowledged)
    for acknowledged in kafka or []:
        check_recorded_once(contents, acknowledged)
    check_levels_are_history_sums(contents)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_postgres_stopped_under_load_and_started_again_is_recovered_from_without_a_restart(
    restartable_postgres: RestartablePostgres, production_broker: Broker, tmp_path: Path
) -> None:
    trial = _trial("pg-outage", production_broker, restartable_postgres.create_database(), tmp_path)
    topics, catalogue, service = trial.topics, trial.catalogue, trial.service.start()
    kafka = trial.producer(chunk=KAFKA_CHUNK, pause_s=KAFKA_PAUSE_S)
    try:
        kafka.start()
        with LoadThroughOutage(service, catalogue) as load:
            window = load.go_through(restartable_postgres.stopped(), POSTGRES_OUTAGE_S)
        kafka.stop()
        load.check(window, writes_refused=True, reads_refused=True)
        results = read_results(production_broker, topics, kafka.sent, RESULTS_DEADLINE_S)
        kafka_acknowledged = check_kafka_results(results, kafka.sent, kafka.uncertain, exactly_once=False)
        _check_ledger(service, load, [kafka_acknowledged])
        load.check_readiness(window, strictly=True)
    finally:
        kafka.stop()
        service.stop()


def _locked(service: ProductionService, path: Path) -> contextlib.AbstractContextManager[None]:
    return sqlite_write_lock_held(path)


def _full(service: ProductionService, path: Path) -> contextlib.AbstractContextManager[None]:
    return files_cannot_grow(service.writer_process())


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("refusal", [_locked, _full], ids=["locked-by-another-program", "disk-full"])
def test_sqlite_database_that_refuses_writes_for_a_while_is_recovered_from_without_a_restart(
    refusal: Callable[[ProductionService, Path], contextlib.AbstractContextManager[None]], tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    catalogue = new_catalogue(unique("sqlite-refusal"))
    # Writes wait 1 s for SQLite's lock (not the default 30 s) before they fail and are retried.
    service = ProductionService(
        f"sqlite:///{path}",
        tmp_path,
        request_timeout_s=REQUEST_TIMEOUT_S,
        extra_env={"LEDGER_DB_LOCK_TIMEOUT_S": "1"},
    ).start()
    try:
        with LoadThroughOutage(service, catalogue) as load:
            window = load.go_through(refusal(service, path), SQLITE_REFUSAL_S)
        load.check(window, writes_refused=True, reads_refused=False)
        _check_ledger(service, load)
        load.check_readiness(window, strictly=True)
    finally:
        service.stop()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kafka_broker_that_stops_answering_for_a_while_loses_and_doubles_nothing(
    own_broker: Broker, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    trial = _trial("broker-frozen", own_broker, postgres.create_database(), tmp_path, KAFKA_ENV)
    topics, catalogue, service = trial.topics, trial.catalogue, trial.service.start()
    kafka = trial.producer(chunk=KAFKA_CHUNK, pause_s=KAFKA_PAUSE_S)
    try:
        kafka.start()
        with LoadThroughOutage(service, catalogue) as load:
            window = load.go_through(broker_frozen(own_broker), BROKER_OUTAGE_S)
        kafka.stop()
        load.check(window, writes_refused=False, reads_refused=False)
        results = read_results(own_broker, topics, kafka.sent, RESULTS_DEADLINE_S)
        kafka_acknowledged = check_kafka_results(results, kafka.sent, kafka.uncertain, exactly_once=False)
        _check_ledger(service, load, [kafka_acknowledged])
        load.check_readiness(window, strictly=False)
    finally:
        kafka.stop()
        service.stop()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kafka_broker_restarted_empty_is_consumed_from_and_published_to_again(
    own_broker: Broker, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A memory-only broker that restarts has lost every record, offset and group: the intake's
    clients must find their way back (the issue: its producer stayed failed until a restart)."""
    trial = _trial("broker-empty", own_broker, postgres.create_database(), tmp_path, KAFKA_ENV)
    topics, catalogue, service = trial.topics, trial.catalogue, trial.service.start()
    before = trial.producer(
        chunk=KAFKA_CHUNK, pause_s=0, events_max=KAFKA_EVENTS_BEFORE_RESTART, name="before"
    )
    after = trial.producer(chunk=KAFKA_CHUNK, pause_s=KAFKA_PAUSE_S, name="after")
    try:
        before.start()
        run_until(before.done, RESULTS_DEADLINE_S, "the events before the restart to be sent")
        before.stop()
        acknowledged_before = check_kafka_results(
            read_results(own_broker, topics, before.sent, RESULTS_DEADLINE_S),
            before.sent,
            (),
            exactly_once=True,
        )
        with LoadThroughOutage(service, catalogue) as load:
            window = load.go_through(broker_restarted_empty(own_broker, topics), BROKER_OUTAGE_S)
            after.start()
            run_until(
                lambda: len(after.sent) >= KAFKA_EVENTS_BEFORE_RESTART,
                RESULTS_DEADLINE_S,
                "events sent after",
            )
            after.stop()
        load.check(window, writes_refused=False, reads_refused=False)
        reader = TopicReader(own_broker.bootstrap, topics.results, topics.partitions)
        try:
            expected = set(after.sent)
            records = reader.read_until(
                lambda found: expected <= {(b["source"], b["id"]) for b in result_bodies(found)},
                RESULTS_DEADLINE_S,
                "a result for every event sent to the restarted broker",
            )
        finally:
            reader.close()
        # Sent once the broker was back: nothing of them failed, so each has its first result.
        acknowledged_after = check_kafka_results(
            result_bodies(records), after.sent, after.uncertain, exactly_once=False, first_results_kept=True
        )
        _check_ledger(service, load, [acknowledged_before, acknowledged_after])
        load.check_readiness(window, strictly=False)
    finally:
        before.stop()
        after.stop()
        service.stop()
