"""Readiness against a real broker, with no events at all: an idle intake stays ready while the
broker answers, says it is not ready while the broker is frozen (SIGSTOP: connections stay open,
nothing is answered, no batch fails), and is ready again once the broker answers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_harness import (
    Broker,
    intake_settings,
    started_ledger,
    wait_until,
)

from ledger.config import Settings
from ledger.kafka import start_consumer
from ledger.service import Ledger

DEADLINE_S = 60
IDLE_HEARTBEATS = 5  # answered heartbeats watched on the idle topic


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, since the test freezes it."""
    broker = Broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def settings(own_broker: Broker, tmp_path: Path) -> Settings:
    return intake_settings(own_broker, f"sqlite:///{tmp_path / 'ledger.db'}", "readiness", partitions=2)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    with started_ledger(settings) as started:
        yield started


@contextlib.contextmanager
def frozen(broker: Broker) -> Iterator[None]:
    os.killpg(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(broker.process.pid, signal.SIGCONT)


def test_an_idle_intake_is_ready_not_ready_while_its_broker_is_frozen_and_ready_again_after(
    own_broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    handle = start_consumer(ledger, settings)
    try:
        wait_until(lambda: handle.ready, DEADLINE_S, "the consumer to join its group")
        heartbeat = handle.intake._consumer._coordinator.heartbeat  # what readiness follows
        answers: list[str | None] = []
        answered_at: set[float] = set()

        def idle_heartbeats_answered() -> bool:
            answers.append(handle.not_ready_because)
            answered_at.add(heartbeat.last_receive)
            return len(answered_at) > IDLE_HEARTBEATS

        wait_until(idle_heartbeats_answered, DEADLINE_S, f"{IDLE_HEARTBEATS} heartbeats on the idle topic")
        assert set(answers) == {None}, f"not ready on an idle topic: {set(answers)}"
        assert handle.stats.records_consumed == 0

        with frozen(own_broker):
            why = wait_until(lambda: handle.not_ready_because, DEADLINE_S, "not ready while frozen")
        assert "heartbeat" in why, why
        assert handle.stats.batches_failed == 0  # no batch had to fail for it to show

        wait_until(lambda: handle.ready, DEADLINE_S, "ready again once the broker answers")
    finally:
        assert handle.stop()


# kafka-python's poll goes round again at once while a heartbeat is overdue (it caps each round's
# wait by the time to the next heartbeat, then 0); a poll that waited out its timeout that way
# went round thousands of times against a frozen broker. One that does not: a few at most.
ROUNDS_PER_POLL_MAX = 5
POLLS_WATCHED = 5


def test_a_frozen_broker_does_not_make_the_intake_poll_in_a_tight_loop(
    own_broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    handle = start_consumer(ledger, settings)
    try:
        wait_until(lambda: handle.ready, DEADLINE_S, "the consumer to join its group")
        consumer = handle.intake._consumer
        rounds_per_poll: list[int] = []
        polled_at: list[float] = []
        rounds = [0]
        poll_once, poll = consumer._poll_once, consumer.poll

        def counted_round(*args: object, **kwargs: object) -> object:
            rounds[0] += 1
            return poll_once(*args, **kwargs)

        def counted_poll(*args: object, **kwargs: object) -> object:
            polled_at.append(time.monotonic())
            rounds[0] = 0
            try:
                return poll(*args, **kwargs)
            finally:
                rounds_per_poll.append(rounds[0])

        consumer._poll_once, consumer.poll = counted_round, counted_poll
        with frozen(own_broker):
            wait_until(lambda: handle.not_ready_because, DEADLINE_S, "not ready while frozen")
            watched_from = len(rounds_per_poll)
            wait_until(
                lambda: len(rounds_per_poll) >= watched_from + POLLS_WATCHED,
                DEADLINE_S,
                f"{POLLS_WATCHED} polls while frozen",
            )
            watched = rounds_per_poll[watched_from : watched_from + POLLS_WATCHED]
            first, last = polled_at[watched_from], polled_at[watched_from + POLLS_WATCHED - 1]
        assert max(watched) <= ROUNDS_PER_POLL_MAX, f"rounds of kafka-python's poll per poll: {watched}"
        # And the intake waits between its polls itself (a lower bound: a slow machine only adds).
        waited_s = (POLLS_WATCHED - 1) * settings.kafka_poll_timeout_ms / 1000 / 2
        assert last - first >= waited_s, f"{POLLS_WATCHED} polls in {last - first:.3f} s: polling in a loop"
        wait_until(lambda: handle.ready, DEADLINE_S, "ready again once the broker answers")
    finally:
        assert handle.stop()
