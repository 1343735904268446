"""The intake's offsets in its consumer group: the group's committed offset of each partition this
member holds, the offsets it could not commit yet (carried by the next commit), and the offsets
the consumer went past without a record for the ledger. When to commit is the intake's
(ledger/kafka/consumer.py): a batch once it is done, and the passed offsets once nothing is in
flight."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from ledger.backoff import BROKER_RETRY_FIRST_S, Backoff
from ledger.config import Settings
from ledger.kafka.lag import POSITION_TIMEOUT_MS
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.pipeline import InFlight, TopicPartition, Uncommitted, commit_offsets

log = logging.getLogger("ledger.kafka")


class GroupOffsets:
    """One member's offsets. `commit` runs on the consumer thread, or (without waiting) on the
    client's network thread from the rebalance listener while the consumer thread waits."""

    def __init__(self, settings: Settings, stats: IntakeStats) -> None:
        self.settings = settings
        self.stats = stats
        self.positions: dict[TopicPartition, int] = {}  # the group's committed offset (lag.py)
        self.uncommitted: dict[TopicPartition, int] = {}  # of batches done whose commit failed
        self._uncommitted_counts = Uncommitted()  # their records and batches, for the metrics
        self._counting = threading.Lock()  # an async commit's callback counts on the network thread
        # An idle member's commit that failed is tried again after these waits (`passed`).
        self._commit_again_backoff = Backoff(BROKER_RETRY_FIRST_S, settings.kafka_retry_backoff_ms_max / 1000)
        self._commit_again_at_s = 0.0  # time.monotonic()

    def forget_uncommitted(self) -> None:
        """The partitions went to another member, which may have gone further since."""
        self.uncommitted = {}
        self._uncommitted_counts = Uncommitted()

    def commit(self, consumer: Any, flights: list[InFlight], *, wait: bool = True) -> None:
        """Commits the offsets that end these batches. `wait=False` from the rebalance listener:
        it runs on the client's network thread, which a blocking commit would wait on for ever."""
        self.uncommitted.update(commit_offsets(flights))
        for flight in flights:
            self._uncommitted_counts.add(flight.batch)
        counts, self._uncommitted_counts = self._uncommitted_counts, Uncommitted()
        offsets = {
            partition: OffsetAndMetadata(offset, "", -1) for partition, offset in self.uncommitted.items()
        }
        if not wait:
            # Sent ahead of the group's JoinGroup request; should it fail, the next owner reads
            # these batches again and the ledger answers them as duplicates.
            consumer.commit_async(
                offsets=offsets,
                callback=lambda _offsets, response: (
                    None if isinstance(response, BaseException) else self._count_committed(counts)
                ),
            )
            self.uncommitted = {}
            return
        try:
            consumer.commit(offsets=offsets, timeout_ms=int(self.settings.kafka_commit_timeout_s * 1000))
        except CommitFailedError as error:
            # The group moved these partitions to another member, which reads them from the last
            # committed offset: the ledger answers what these batches recorded as duplicates.
            log.warning("offsets not committed, the group rebalanced: %s", error)
            self._uncommitted_counts = counts  # (forgotten at the assignment, with the offsets)
        except KafkaError as error:
            # The outcomes are durable and published: the next commit (or the hand-over of the
            # partitions, or the stop) carries these offsets too.
            log.warning("committing offsets failed: %r", error)
            self._uncommitted_counts = counts
        else:
            self.positions.update(self.uncommitted)
            self.uncommitted = {}
            self._count_committed(counts)

    def passed(self, consumer: Any) -> bool:
        """Adds to the offsets to commit each partition's position, where the consumer went past
        its committed offset without a record for the ledger: a transaction's commit or abort marker
        takes an offset, and a read_committed consumer skips an aborted transaction's records. A
        batch's offsets end at its last record, so without this the group stayed short of the end
        of a partition for good once its transactional producer was idle: the lag never 0, and what
        an aborted transaction left fetched again after every restart. Whether there is anything to
        commit; after a commit that failed, not before a backoff (`passed_committed`): else, the
        topic quiet, they waited for the next record, and the group's offset and the lag stayed
        short of the end after one commit that failed. Only with nothing in flight (the caller's)."""
        if self.uncommitted and time.monotonic() < self._commit_again_at_s:
            return False  # tried again after a backoff, not at every idle poll
        for partition, committed in self.positions.items():
            try:
                position = consumer.position(partition, timeout_ms=POSITION_TIMEOUT_MS)
            except KafkaError:
                continue  # no longer assigned, or not known yet: nothing to go past
            if position is not None and position > max(committed, self.uncommitted.get(partition, 0)):
                self.uncommitted[partition] = position
        return bool(self.uncommitted)

    def passed_committed(self) -> None:
        """After the commit of what `passed` found: a failed one is tried again after a backoff."""
        if self.uncommitted:
            self._commit_again_at_s = time.monotonic() + self._commit_again_backoff.next_s()
        else:
            self._commit_again_backoff.reset()

    def _count_committed(self, counts: Uncommitted) -> None:
        with self._counting:
            self.stats.records_committed += counts.records
            self.stats.batches_committed += counts.batches
