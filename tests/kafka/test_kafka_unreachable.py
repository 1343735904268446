"""A broker nobody can reach is an outage to wait out, said in one line a try: no traceback for
it, neither from building the consumer nor from the intake's loop; and meanwhile the member
reports no lag for partitions it no longer holds (no broker runs here)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka_harness import wait_until
from one_partition import OnePartitionConsumer

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.kafka import clients
from ledger.kafka.clients import BrokerUnreachable, new_consumer
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle

DEADLINE_S = 10.0


class NeverReached:
    """The ledger: nothing is recorded while no consumer is ever built."""

    def submit_and_wait(self, events: list[Any]) -> list[Any]:
        raise AssertionError(f"recorded {events} without a broker")


def settings() -> Settings:
    return Settings(kafka_bootstrap="nowhere:1, nowhere:2", kafka_retry_backoff_ms_max=20)


def test_a_consumer_no_broker_answers_is_refused_as_unreachable_naming_the_brokers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_broker(**config: Any) -> None:
        raise KafkaTimeoutError("Unable to bootstrap from ['nowhere:1', 'nowhere:2']")

    monkeypatch.setattr(clients, "KafkaConsumer", no_broker)
    with pytest.raises(
        BrokerUnreachable,
        match=r"no broker at nowhere:1,nowhere:2 answered \(a refused TLS or SASL .*Unable to bootstrap",
    ):
        new_consumer(settings())


def test_the_intake_says_an_unreachable_broker_in_one_line_a_try_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = threading.Semaphore(0)

    def unreachable(_: Settings) -> Any:
        tries.release()
        raise BrokerUnreachable("no broker at nowhere:1 answered: KafkaTimeoutError: Unable to bootstrap")

    chosen = settings()
    intake = KafkaIntake(
        NeverReached(),
        chosen,
        intake_limits(chosen),
        consumer_factory=unreachable,
        producer_factory=lambda _: None,
    )
    caplog.set_level(logging.WARNING, logger="ledger.kafka")
    handle = ConsumerHandle(intake).start()
    try:
        for _ in range(3):
            assert tries.acquire(timeout=DEADLINE_S), "the intake stopped trying"
        wait_until(lambda: len(said(caplog)) >= 2, DEADLINE_S, "a line for each try")
        assert intake.not_ready_because == "not in its consumer group"
    finally:
        assert handle.stop(DEADLINE_S)
    lines = said(caplog)
    assert all(line.exc_info is None for line in lines), "a traceback for an outage"
    assert all(line.levelno == logging.WARNING for line in lines)
    assert "no broker at nowhere:1 answered" in lines[0].getMessage()
    assert "trying again in" in lines[0].getMessage() and "BrokerUnreachable" not in lines[0].getMessage()


def said(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "ledger.kafka" and "Kafka consumer" in record.getMessage()
    ]


def refused_port() -> int:
    """A port nothing listens on: each connection to it is refused."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return int(closed.getsockname()[1])


def test_the_intake_stops_within_its_bound_while_the_real_client_waits_for_a_broker() -> None:
    """kafka-python's consumer waits for a first broker in its constructor: 30 s unless told, and a
    stop asked meanwhile waited as long (`ledger consume` with no broker, SIGINT: 28 s)."""
    chosen = Settings(kafka_bootstrap=f"127.0.0.1:{refused_port()}", kafka_bootstrap_timeout_ms=2000)
    building = threading.Event()

    def real_consumer(given: Settings) -> Any:
        building.set()
        return new_consumer(given)

    intake = KafkaIntake(
        NeverReached(),
        chosen,
        intake_limits(chosen),
        consumer_factory=real_consumer,
        producer_factory=lambda _: None,
    )
    handle = ConsumerHandle(intake).start()
    assert building.wait(DEADLINE_S)
    assert handle.stop(DEADLINE_S), "the intake's stop waited on the client's bootstrap"


# Run in a process of its own: pytest's log capture keeps the failed connections' exceptions, and
# with them their frames and sockets, which a service's log handlers do not.
_TRIES = """
import gc, logging, os, sys, threading
logging.disable(logging.CRITICAL)
from ledger.config import Settings
from ledger.kafka.clients import BrokerUnreachable, new_consumer
settings = Settings(kafka_bootstrap=sys.argv[1], kafka_bootstrap_timeout_ms=1000)
for _ in range(4):
    try:
        new_consumer(settings)
    except BrokerUnreachable:
        pass
    gc.collect()
    print(threading.active_count(), len(os.listdir("/proc/self/fd")), flush=True)
"""


def test_a_consumer_that_found_no_broker_leaves_no_thread_or_socket_behind() -> None:
    """kafka-python starts its network thread before it waits for a broker, and left it running
    with its sockets when none answered: one more thread and four descriptors every try, for as
    long as an outage lasts."""
    tries = subprocess.run(
        [sys.executable, "-c", _TRIES, f"127.0.0.1:{refused_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts = [tuple(map(int, line.split())) for line in tries.stdout.strip().splitlines()]
    assert len(counts) == 4 and len(set(counts)) == 1, counts  # after the first, nothing more kept


class GoneAfterAssignment(OnePartitionConsumer):
    """A consumer assigned one partition (10 records, 4 committed), whose connection is lost on a
    later poll once `lose` is set."""

    highwater_offset = 10
    committed_offset = 4
    position_offset = 4

    def __init__(self) -> None:
        super().__init__()
        self.lose = threading.Event()

    def wait_out(self, timeout_s: float) -> None:
        if self.lose.wait(timeout_s):
            raise KafkaConnectionError("the connection to the broker was lost")


def test_a_member_whose_consumer_is_gone_reports_no_lag_for_partitions_it_no_longer_holds() -> None:
    """Else its last lag stayed on /metrics (and /readyz) while it was out of the group, for
    partitions the other members had taken over and counted as well."""
    first = GoneAfterAssignment()
    rebuilding = threading.Event()
    built = [False]

    def factory(chosen: Settings) -> Any:
        if not built[0]:
            built[0] = True
            return first
        rebuilding.set()
        raise BrokerUnreachable("no broker at nowhere:1 answered")

    chosen = settings()
    intake = KafkaIntake(
        NeverReached(),
        chosen,
        intake_limits(chosen),
        consumer_factory=factory,
        producer_factory=lambda _: None,
    )
    handle = ConsumerHandle(intake).start()
    try:
        wait_until(lambda: intake.stats.lag_records == 6, DEADLINE_S, "the lag of the partition assigned")
        first.lose.set()
        assert rebuilding.wait(DEADLINE_S), "the intake did not build its consumer again"
        assert intake.stats.assigned_partitions == 0
        assert intake.stats.lag_by_partition == {}
        assert intake.stats.lag_records is None
    finally:
        assert handle.stop(DEADLINE_S)
