"""No broker: an idle member whose commit failed commits again, without waiting for a record.

Once the intake is idle, the group's offset goes past the offsets that hold no record for the ledger
(a transaction's marker; ledger/kafka/consumer.py, `_commit_passed`). A commit that failed then (the
group's coordinator moving, a broker restarting) was left for the next batch to carry: on a topic
gone quiet the group's offset stayed short of the end for good, and the lag, counted from it, above
0: what committing past the marker was for (found by review)."""

from __future__ import annotations

from typing import Any

from kafka.errors import KafkaConnectionError
from kafka_harness import wait_until
from one_partition import OnePartitionConsumer

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle

DEADLINE_S = 10.0
END = 6  # the partition's end: records 0 to 4, recorded and committed, and a transaction's marker at 5
COMMITS_REFUSED = 2
IDLE_POLLS_WATCHED = 20  # idle polls after the commit that went through: none may commit again


class NothingToRecord:
    """The ledger: the partition holds no record past the group's offset."""

    def submit_and_wait(self, events: list[Any]) -> list[Any]:
        raise AssertionError(f"recorded {events}")


class IdleAtAMarker(OnePartitionConsumer):
    """A member whose group committed up to the marker (END - 1) and whose position is past it
    (END); its first COMMITS_REFUSED commits fail."""

    highwater_offset = END
    position_offset = END

    def __init__(self) -> None:
        super().__init__()
        self.committed_offset = END - 1
        self.commit_tries = 0

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.commit_tries += 1
        if self.commit_tries <= COMMITS_REFUSED:
            raise KafkaConnectionError("the group's coordinator did not answer")
        self.committed_offset = offsets[OnePartitionConsumer.PARTITION].offset


def test_an_idle_member_commits_again_what_it_could_not_commit_and_then_nothing_more() -> None:
    consumer = IdleAtAMarker()
    chosen = Settings(kafka_bootstrap="nowhere:1", kafka_retry_backoff_ms_max=20, kafka_poll_timeout_ms=10)
    intake = KafkaIntake(
        NothingToRecord(),
        chosen,
        intake_limits(chosen),
        consumer_factory=lambda _: consumer,
        producer_factory=lambda _: None,
    )
    handle = ConsumerHandle(intake).start()
    try:
        wait_until(lambda: consumer.committed_offset == END, DEADLINE_S, "the group's offset past the marker")
        wait_until(lambda: intake.stats.lag_records == 0, DEADLINE_S, "a lag of 0")
        polls = consumer.polls
        wait_until(lambda: consumer.polls >= polls + IDLE_POLLS_WATCHED, DEADLINE_S, "more idle polls")
        assert consumer.commit_tries == COMMITS_REFUSED + 1  # not one a poll
    finally:
        assert handle.stop(DEADLINE_S)
