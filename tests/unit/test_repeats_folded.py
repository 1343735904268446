"""The Kafka clients' repeated lines folded (ledger/telemetry/repeats.py): the first of a kind is
logged, the rest of its window counted, and the next one logged says how many were left out."""

from __future__ import annotations

import logging

from ledger.telemetry.repeats import RepeatsFolded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_the_same_kind_is_logged_once_a_window_then_with_the_count_left_out() -> None:
    clock = Clock()
    folded = RepeatsFolded(window_s=60, clock=clock)
    first = record("kafka.librdkafka", "FAIL [client#producer-%d]: connect to %s failed", 1, "127.0.0.1:1")
    assert folded.filter(first) and first.getMessage().endswith("127.0.0.1:1 failed")
    for producer in range(2, 40):
        clock.now += 1
        # A new producer's number: one kind (numbers do not tell kinds apart).
        assert not folded.filter(
            record(
                "kafka.librdkafka", "FAIL [client#producer-%d]: connect to %s failed", producer, "127.0.0.1:1"
            )
        )
    clock.now += 30  # 68 s after the first
    again = record("kafka.librdkafka", "FAIL [client#producer-%d]: connect to %s failed", 40, "127.0.0.1:1")
    assert folded.filter(again)
    assert again.getMessage() == (
        "FAIL [client#producer-40]: connect to 127.0.0.1:1 failed"
        " (38 more like it in the 68 s before, not logged)"
    )
    clock.now += 1
    assert not folded.filter(
        record("kafka.librdkafka", "FAIL [client#producer-%d]: connect to %s failed", 41, "127.0.0.1:1")
    )


def test_other_levels_loggers_and_messages_are_kinds_of_their_own_and_the_ledgers_lines_never_fold() -> None:
    folded = RepeatsFolded(window_s=60, clock=Clock())
    assert folded.filter(record("kafka.net.manager", "Connection failed"))
    assert folded.filter(record("kafka.net.manager", "Connection failed", level=logging.WARNING))
    assert folded.filter(record("kafka.net.connection", "Connection failed"))
    assert folded.filter(record("kafka.net.manager", "Bootstrap failed"))
    assert not folded.filter(record("kafka.net.manager", "Connection failed"))
    for _ in range(3):
        assert folded.filter(record("ledger.kafka", "the Kafka consumer: no broker"))
        assert folded.filter(record("kafkaesque", "not the Kafka clients"))


def test_the_kinds_remembered_are_bounded_the_longest_unseen_forgotten_first() -> None:
    folded = RepeatsFolded(window_s=60, kinds_max=3, clock=Clock())
    for kind in ("a", "b", "c"):
        assert folded.filter(record("kafka", kind))
    assert not folded.filter(record("kafka", "a"))  # a is seen last now, b the longest unseen
    assert folded.filter(record("kafka", "d"))  # b forgotten
    assert len(folded._seen) == 3
    assert folded.filter(record("kafka", "b"))
    assert not folded.filter(record("kafka", "a"))


def test_a_line_that_cannot_be_formatted_is_let_through_for_the_handler_to_report() -> None:
    folded = RepeatsFolded(window_s=60, clock=Clock())
    assert folded.filter(record("kafka.conn", "%d brokers", "not a number"))
