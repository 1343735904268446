"""No I/O, a clock of the test's own: when the intake counts as out of touch with the broker
(heartbeats unanswered, results unacknowledged, a loop that does not come round), and that an
idle member whose heartbeats are answered never does."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.kafka.contact import BrokerContact

HEARTBEAT_INTERVAL_MS = 1000
UNANSWERED_MS_MAX = 3000
LOOP_TURN_MS_MAX = 10_000
POLL_TIMEOUT_S = 0.5
STEP_S = 0.05


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class Heartbeat:
    last_receive: float = float("-inf")
    last_reset: float = 0.0


@dataclass
class Coordinator:
    """kafka-python's coordinator as far as readiness reads it."""

    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    is_stable: bool = True
    _heartbeat_enabled: bool = True

    def stable(self) -> bool:
        return self.is_stable


@dataclass
class Consumer:
    _coordinator: Coordinator = field(default_factory=Coordinator)


def contact_with(consumer: object, clock: Clock) -> BrokerContact:
    contact = BrokerContact(
        unanswered_ms_max=UNANSWERED_MS_MAX,
        loop_turn_ms_max=LOOP_TURN_MS_MAX,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        clock=clock,
    )
    contact.watch(consumer)
    return contact


def joined(clock: Clock) -> Consumer:
    consumer = Consumer()
    consumer._coordinator.heartbeat.last_reset = clock.now_s
    return consumer


def run_idle(contact: BrokerContact, consumer: Consumer, clock: Clock, seconds: float) -> list[str | None]:
    """An idle, healthy member: a heartbeat answered every interval, a poll every poll timeout."""
    heartbeat = consumer._coordinator.heartbeat
    answers: list[str | None] = []
    next_heartbeat_s = clock.now_s + HEARTBEAT_INTERVAL_MS / 1000
    next_turn_s = clock.now_s
    end_s = clock.now_s + seconds
    while clock.now_s < end_s:
        clock.now_s += STEP_S
        if clock.now_s >= next_heartbeat_s:
            heartbeat.last_receive = clock.now_s
            next_heartbeat_s += HEARTBEAT_INTERVAL_MS / 1000
        if clock.now_s >= next_turn_s:
            contact.turn_began()
            next_turn_s += POLL_TIMEOUT_S
        answers.append(contact.out_of_touch())
    return answers


def test_an_idle_member_whose_heartbeats_are_answered_stays_in_touch() -> None:
    clock = Clock()
    consumer = joined(clock)
    contact = contact_with(consumer, clock)
    assert set(run_idle(contact, consumer, clock, seconds=60)) == {None}


def test_unanswered_heartbeats_put_it_out_of_touch_until_one_is_answered() -> None:
    clock = Clock()
    consumer = joined(clock)
    contact = contact_with(consumer, clock)
    run_idle(contact, consumer, clock, seconds=5)
    last_answer_s = consumer._coordinator.heartbeat.last_receive
    # The broker stops answering; the loop still turns (its polls just come back empty).
    out_of_touch_at_s = last_answer_s + (HEARTBEAT_INTERVAL_MS + UNANSWERED_MS_MAX) / 1000
    while clock.now_s < out_of_touch_at_s - STEP_S:
        clock.now_s += STEP_S
        contact.turn_began()
        assert contact.out_of_touch() is None
    clock.now_s = out_of_touch_at_s + STEP_S
    contact.turn_began()
    why = contact.out_of_touch()
    assert why is not None and "heartbeat" in why
    consumer._coordinator.heartbeat.last_receive = clock.now_s
    assert contact.out_of_touch() is None


def test_no_heartbeat_is_awaited_while_the_member_joins_its_group() -> None:
    clock = Clock()
    consumer = joined(clock)
    contact = contact_with(consumer, clock)
    consumer._coordinator.is_stable = False
    clock.now_s += 4 * (HEARTBEAT_INTERVAL_MS + UNANSWERED_MS_MAX) / 1000
    contact.turn_began()
    assert contact.out_of_touch() is None
    # Joined again: kafka-python resets the heartbeat's timeouts, which counts as an answer.
    consumer._coordinator.is_stable = True
    consumer._coordinator.heartbeat.last_reset = clock.now_s
    assert contact.out_of_touch() is None


def test_results_unacknowledged_past_the_limit_put_it_out_of_touch() -> None:
    clock = Clock()
    consumer = joined(clock)
    contact = contact_with(consumer, clock)
    contact.results_waiting(clock.now_s)
    run_idle(contact, consumer, clock, seconds=UNANSWERED_MS_MAX / 1000 - STEP_S)
    assert contact.out_of_touch() is None
    run_idle(contact, consumer, clock, seconds=2 * STEP_S)
    why = contact.out_of_touch()
    assert why is not None and "not acknowledged" in why
    contact.results_waiting(None)
    assert contact.out_of_touch() is None


def test_a_poll_loop_that_does_not_come_round_puts_it_out_of_touch() -> None:
    clock = Clock()
    consumer = joined(clock)
    contact = contact_with(consumer, clock)
    contact.turn_began()
    clock.now_s += LOOP_TURN_MS_MAX / 1000 + STEP_S
    consumer._coordinator.heartbeat.last_receive = clock.now_s  # heartbeats are on a thread of their own
    why = contact.out_of_touch()
    assert why is not None and "poll loop" in why
    contact.turn_began()
    assert contact.out_of_touch() is None


def test_a_consumer_whose_heartbeats_cannot_be_read_is_judged_by_results_and_polls_alone() -> None:
    clock = Clock()
    contact = contact_with(object(), clock)
    clock.now_s += 4 * (HEARTBEAT_INTERVAL_MS + UNANSWERED_MS_MAX) / 1000
    contact.turn_began()
    assert contact.out_of_touch() is None
