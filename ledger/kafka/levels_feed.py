"""The availability feed's publisher (CONTRACT §9): reads each round of committed changes after its
position (ledger/feed/rounds.py), publishes it on LEDGER_KAFKA_LEVELS_TOPIC keyed by store id,
and moves its position once the broker has acknowledged every record of the round.

It runs beside the service, never in the writer: the writer commits and answers as if there were
no feed, and a slow or absent broker only makes the feed fall behind. Its outbox is the log
itself: nothing is held in memory beyond one round (LEDGER_FEED_ROWS_PER_ROUND_MAX history rows),
and after an outage it goes on from the last acknowledged position, so nothing is lost; how far
behind it is shows as `ledger_feed_lag_positions`. One instance per database publishes
(ledger/feed/leadership.py); the others wait to take over. A round that fails is published again
from its start (delivery is at least once): its records may repeat, each with its own position.
A round fails on the producer's verdict (a record it gave up, after its delivery timeout), not on
a timer of the feed's: until then the producer may still deliver it, and a copy sent meanwhile
would follow the first. A round unacknowledged past LEDGER_FEED_PUBLISH_TIMEOUT_S is said to wait
(a warning, `ledger_feed_unacknowledged_seconds`); only a producer that never answers is given up
by the feed, after `LevelsFeed.acknowledged_within_s`.

A round the broker refuses for good (a record too large for the topic, the topic missing or not
allowed: nothing but an operator changes that) is never skipped, since a consumer would keep that
store and SKU's older figures without a sign. The feed stands still at it and tries it again every
LEDGER_FEED_RETRY_BACKOFF_MS_MAX, and says so: `ledger_feed_stuck` is 1 and
`ledger_feed_refusals` counts each refusal, with a warning at most every REFUSED_WARNING_INTERVAL_S.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import (
    InvalidTopicError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from ledger.backoff import BROKER_RETRY_FIRST_S, Backoff
from ledger.config import Settings
from ledger.feed.cursor import FeedCursor
from ledger.feed.leadership import Leadership, leadership_for
from ledger.feed.record import LevelRecord, encode_record
from ledger.feed.rounds import DefaultChange, default_change_page, read_round
from ledger.kafka.feed_metrics import FeedCollector, FeedStats
from ledger.kafka.producer import verdict_within_s
from ledger.kafka.publisher import UNSENDABLE
from ledger.telemetry.warning_gate import WarningGate

log = logging.getLogger("ledger.feed")

SEND_BLOCK_S_MAX = 1.0  # the longest a new producer waits for a broker, and one send for buffer room
FLUSH_SLICE_S = 0.5  # the longest a shutdown waits on the broker before it is noticed
# A guard on the pages of one default policy change: 10,000 pages of LEDGER_FEED_ROWS_PER_ROUND_MAX SKUs.
PAGES_PER_DEFAULT_CHANGE_MAX = 10_000
FEED_NAME = "stock.levels"  # the cursor's and the lock's name: one feed per database, whatever its topic
# What the broker answers where sending the round again cannot help until an operator acts: a
# record it can never take, or a topic missing (the ledger never creates one) or not allowed.
REFUSED_FOR_GOOD = (
    *UNSENDABLE,
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)
# A feed refused for good is tried again every LEDGER_FEED_RETRY_BACKOFF_MS_MAX; its warning is
# written at most this often (the refusals in between are counted, in ledger_feed_refusals).
REFUSED_WARNING_INTERVAL_S = 60.0
# A round that failed and is tried again (a broker away, slow): the first failure is warned of at
# once, then at most this often while the same kind of failure goes on, with the count so far;
# the first round published after them says how many failed.
FAILED_WARNING_INTERVAL_S = 60.0
# A round still unacknowledged after LEDGER_FEED_PUBLISH_TIMEOUT_S (a slow broker) is warned of at
# once, then at most this often while rounds keep being late.
LATE_WARNING_INTERVAL_S = 60.0


class FeedPublishFailed(Exception):
    """A round was not acknowledged in full; it is published again."""


class LostTheFeed(Exception):
    """Another instance may publish the feed now: this one stops before it saves a position."""


class LevelsFeed:
    """The publishing loop; `run` on a thread of its own, `stop` from another."""

    def __init__(
        self,
        recorder: Any,
        settings: Settings,
        producer_factory: Callable[[Settings], Any],
        leadership: Leadership | None = None,
    ) -> None:
        self.recorder = recorder
        self.settings = settings
        self.topic = settings.kafka_levels_topic
        self.stats = FeedStats()
        self.collector = FeedCollector(self.stats)
        self._factory = producer_factory
        self._leadership = leadership or leadership_for(settings.database_url, FEED_NAME)
        self._cursor = FeedCursor(recorder, FEED_NAME)
        self._producer: Any = None
        self._stopping = threading.Event()
        self._poll_s = settings.feed_poll_ms / 1000
        self._backoff = Backoff(BROKER_RETRY_FIRST_S, settings.feed_retry_backoff_ms_max / 1000)
        self._refusal_warnings = WarningGate(REFUSED_WARNING_INTERVAL_S)
        self._failure_warnings = WarningGate(FAILED_WARNING_INTERVAL_S)
        self._late_warnings = WarningGate(LATE_WARNING_INTERVAL_S)
        self._failed_in_a_row = 0

    @property
    def acknowledged_within_s(self) -> float:
        """How long a round may wait for the broker before the feed gives it up and publishes it
        again (`verdict_within_s`); the wait is said long before (LEDGER_FEED_PUBLISH_TIMEOUT_S: a
        warning, `ledger_feed_unacknowledged_seconds`)."""
        return verdict_within_s(self.settings.feed_publish_timeout_s)

    # -- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    wait_s = self._turn()
                except Exception as error:  # noqa: BLE001 - the feed must outlive any outage
                    wait_s = self._failed(error)
                self._stopping.wait(wait_s)
        finally:
            # At once: a round the broker acknowledged is flushed already, and one it did not is
            # published again from the saved position; a silent broker must not hold the shutdown.
            self._close_producer()
            self._leadership.release()
            self.stats.publishing = False

    def stop(self) -> None:
        self._stopping.set()

    def _turn(self) -> float:
        """One step: take the feed over, or publish one round; returns how long to wait after it."""
        if not self.stats.publishing:
            if not self._leadership.try_take():
                return self.settings.feed_takeover_ms / 1000
            self.stats.published_position = self._cursor.load()
            self.stats.publishing = True
            self.stats.stuck = False
            self.stats.takeovers += 1
            log.info("publishing the availability feed from position %d", self.stats.published_position)
        with self.recorder.read_transaction() as tx:
            self.stats.head_position = self.recorder.head(tx)
            found = read_round(tx, self.stats.published_position, self.settings.feed_rows_per_round_max)
        if found is None:
            return self._poll_s
        try:
            self._held_or_lost()
            self._publish(found.records)
            if found.default_change is not None:
                self._publish_default_change(found.default_change)
            self._held_or_lost()
        except LostTheFeed:
            # Its records not yet on the wire are dropped with the producer: the new publisher
            # sends the round again from the saved position, after anything this one still sends.
            self._close_producer()
            self.stats.publishing = False
            log.warning("lost the availability feed's lock; another instance may publish it now")
            return self.settings.feed_takeover_ms / 1000
        self._cursor.save(found.end_position)
        self.stats.published_position = found.end_position
        self.stats.rounds_published += 1
        self.stats.stuck = False
        self._refusal_warnings.reset()
        if self._failed_in_a_row:
            log.info("the availability feed publishes again, after %d failed rounds", self._failed_in_a_row)
            self._failed_in_a_row = 0
            self._failure_warnings.reset()
        self._backoff.reset()
        # More committed than this round held: read it at once.
        return 0.0 if found.end_position < self.stats.head_position else self._poll_s

    def _held_or_lost(self) -> None:
        if not self._leadership.still_held():
            raise LostTheFeed

    def _publish_default_change(self, change: DefaultChange) -> None:
        """The records of a store's default policy change, a page of the store's SKUs at a time
        (LEDGER_FEED_ROWS_PER_ROUND_MAX), each page acknowledged before the next is read."""
        after_sku = ""
        for _ in range(PAGES_PER_DEFAULT_CHANGE_MAX):
            with self.recorder.read_transaction() as tx:
                page = default_change_page(tx, change, after_sku, self.settings.feed_rows_per_round_max)
            self._publish(page.records)
            if page.last_sku is None:
                return
            after_sku = page.last_sku
        raise FeedPublishFailed(f"store {change.store_id} has more SKUs than the feed pages through")

    def _publish(self, records: list[LevelRecord]) -> None:
        if not records:
            return
        if self._producer is None:
            self._producer = self._factory(self.settings)
        sent_s = time.monotonic()
        self.stats.unacknowledged_since_s = sent_s
        try:
            futures = self._send(self._producer, records)
            self._wait_for_verdicts(self._producer, futures, sent_s)
        finally:
            self.stats.unacknowledged_since_s = None  # acknowledged, or failed and dropped
        for record, future in zip(records, futures, strict=True):
            if future.failed():
                refusal = future.exception
                raise FeedPublishFailed(f"{_named(record)} was refused: {refusal!r}") from refusal
        self.stats.records_published += len(records)

    def _send(self, producer: Any, records: list[LevelRecord]) -> list[Any]:
        futures = []
        for record in records:
            try:
                futures.append(producer.send(self.topic, key=record.key, value=encode_record(record)))
            except REFUSED_FOR_GOOD as error:
                raise FeedPublishFailed(f"{_named(record)} was refused: {error!r}") from error
        return futures

    def _wait_for_verdicts(self, producer: Any, futures: list[Any], sent_s: float) -> None:
        """Until the producer has acknowledged or given up every record: `acknowledged_within_s` at
        most after the last was handed to it (its delivery timeout runs from there, however long the
        sends waited for buffer room); in slices, so that a shutdown or a lost lock does not wait
        for a slow broker."""
        late_s = sent_s + self.settings.feed_publish_timeout_s
        given_up_s = time.monotonic() + self.acknowledged_within_s
        said_late = False
        while not all(future.is_done for future in futures):
            if self._stopping.is_set():
                raise FeedPublishFailed("stopping before the broker acknowledged the round")
            now = time.monotonic()
            if now >= given_up_s:
                raise FeedPublishFailed(
                    f"the producer did not answer within {self.acknowledged_within_s:.0f} s"
                )
            if now >= late_s and not said_late:
                said_late = True
                self._late()
            producer.flush(timeout=FLUSH_SLICE_S)
            if not all(future.is_done for future in futures):
                self._held_or_lost()  # a slow broker: another instance may have taken over meanwhile

    def _late(self) -> None:
        """The round waits past the publish timeout: said (at most every LATE_WARNING_INTERVAL_S),
        not failed, as the producer may still deliver it."""
        if self._late_warnings.due(TimeoutError):
            log.warning(
                "the broker has not acknowledged the availability feed's round after position %d within "
                "%.1f s (%d positions behind the log's head): waiting for the producer to deliver it or "
                "give it up (%.0f s at most) rather than sending it again; said again at most every %.0f s",
                self.stats.published_position,
                self.settings.feed_publish_timeout_s,
                self.stats.lag_positions,
                self.acknowledged_within_s,
                LATE_WARNING_INTERVAL_S,
            )

    def _failed(self, error: BaseException) -> float:
        """Logs the failure, drops the producer (a new one publishes the round again), and backs off."""
        self.stats.rounds_failed += 1
        if self._stopping.is_set():
            return 0.0  # the position is where the last acknowledged round left it
        cause = error.__cause__ if isinstance(error, FeedPublishFailed) else error
        if isinstance(cause, REFUSED_FOR_GOOD):
            self._close_producer()
            return self._refused(error, type(cause))
        wait_s = self._backoff.next_s()
        self._failed_in_a_row += 1
        if self._failure_warnings.due(type(error if cause is None else cause)):
            log.warning(
                "the availability feed could not publish after position %d (%d behind the log's head): "
                "%r; trying again in %.1f s (%d failed rounds in a row; said again at most every %.0f s)",
                self.stats.published_position,
                self.stats.lag_positions,
                error,
                wait_s,
                self._failed_in_a_row,
                FAILED_WARNING_INTERVAL_S,
            )
        self._close_producer()
        return wait_s

    def _refused(self, error: BaseException, kind: type[BaseException]) -> float:
        """The round is refused for good: it is kept (never skipped), tried again at the longest
        backoff, and the refusal counted. The warning is written at most every
        REFUSED_WARNING_INTERVAL_S, and at once when the refusal's kind changes (the topic made,
        and now a record too large, say); the count is not limited."""
        self.stats.refusals += 1
        self.stats.stuck = True
        wait_s = self.settings.feed_retry_backoff_ms_max / 1000
        if self._refusal_warnings.due(kind):
            log.warning(
                "the broker refuses the availability feed's round after position %d for good (%s): the "
                "feed stands still there, %d positions behind the log's head, until the topic %s takes "
                "it (a record too large: raise the topic's max.message.bytes; the topic missing: create "
                "it); trying again every %.1f s, refused %d times so far",
                self.stats.published_position,
                error,
                self.stats.lag_positions,
                self.topic,
                wait_s,
                self.stats.refusals,
            )
        return wait_s

    # -- the producer ---------------------------------------------------------------------------------

    def _close_producer(self) -> None:
        """Drops the producer at once, its unacknowledged records purged: they belong to a round
        not saved, which is published again (by a new producer, or after a restart)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=0)


def _named(record: LevelRecord) -> str:
    return f"the record of store {record.store_id}, SKU {record.sku} at position {record.position}"


class FeedHandle:
    """A running feed: `collector` for /metrics, `stats`, `stop()` on shutdown."""

    def __init__(self, feed: LevelsFeed) -> None:
        self.feed = feed
        self.collector = feed.collector
        self._thread = threading.Thread(target=feed.run, name="ledger-feed", daemon=True)

    @property
    def stats(self) -> FeedStats:
        return self.feed.stats

    def start(self) -> FeedHandle:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        self.feed.stop()
        self._thread.join(self.feed.settings.kafka_shutdown_timeout_s if timeout_s is None else timeout_s)
        return not self._thread.is_alive()


def start_levels_feed(recorder: Any, settings: Settings) -> FeedHandle:
    """Starts the availability feed on a thread, on the ledger's recorder."""
    from ledger.kafka.clients import new_producer

    def producer(for_settings: Settings) -> Any:
        # A send waits at most this for buffer room, and a new producer as long for a broker: a
        # round that cannot be sent fails and is sent again later; no shutdown is held up long.
        blocking = for_settings.model_copy(update={"kafka_publish_timeout_s": SEND_BLOCK_S_MAX})
        built = new_producer(blocking, role="levels", broker_contact_timeout_s=SEND_BLOCK_S_MAX)
        # A missing topic is asked about once here: a send to it would only fail after librdkafka
        # waited for the topic to appear, longer than a round waits, as if the broker were slow.
        topic = for_settings.kafka_levels_topic
        try:
            found = built.has_topic(topic, SEND_BLOCK_S_MAX)
        except BaseException:
            built.close(0)
            raise
        if not found:
            built.close(0)
            raise UnknownTopicOrPartitionError(
                f"the broker has no topic {topic} (the ledger never makes one)"
            )
        return built

    return FeedHandle(LevelsFeed(recorder, settings, producer)).start()
