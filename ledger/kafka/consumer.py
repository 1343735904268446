"""The Kafka intake (CONTRACT §2): poll batches, record their events, publish a result per event
and every unreadable record to the dead-letter topic, and only then commit the offsets.

It is a pipeline. The consumer thread polls and reads a batch and hands its events to the
recording thread (ledger/kafka/recorder.py), then polls and reads the next while the first is
recorded. A recorded batch's results are sent without waiting on each send; the broker's
acknowledgements are looked at on later turns of the loop, and a batch's offsets are committed
once it and every batch before it is done (ledger/kafka/pipeline.py; the commit and the
group's offsets: ledger/kafka/offsets.py). At most `kafka_batches_in_flight_max` batches are
between poll and commit; past that, fetching pauses (poll is still called, so the member stays in
its group).

Why every event has exactly one effect: an offset is committed only once the outcome of each
event before it is durable and its result acknowledged by the broker, and commits go in poll
order. A crash anywhere before a commit means its batches are read again, by this process after
a restart or by another member of the group; the ledger answers the events it already holds as
duplicates (by source and id) and records the others. Nothing is lost and nothing is counted
twice. What a crash can double is a message: the results topic may then carry a second result
for an event (`duplicate`, with the first outcome in `original`), and the dead-letter topic a
second copy of an unreadable record.

An event the writer refuses for good (SubmissionFailed, even alone: a bug, or an input it cannot
store) does not hold its partition: the recording thread records the batch's other events one at
a time (ledger/kafka/recorder.py), and the refused event goes to the dead-letter topic with why
and where it came from, its offset passed like any other once that letter is acknowledged.

A failed recording rewinds: every partition goes back to its first offset not yet committed, the
batches after the failed one are dropped unrecorded (never committed), and after a backoff all of
it is read again. A failed publish does not: the batch's outcomes are durable already, and reading
it again would only answer its events as duplicates. Its results and dead letters (and those of
the batches after it that were sent) are published again after a backoff, by a new producer when
the old one failed for good (ledger/kafka/publisher.py); only after `kafka_republishes_max` such
attempts is the batch read again like a failed recording. Either way nothing is committed until
the broker has acknowledged it.

Readiness tells the truth while the broker does not answer, before any batch fails and with no
batch at all (ledger/kafka/contact.py): heartbeats unanswered, results unacknowledged, or a poll
loop that does not come round, each for longer than a named limit.

Per-store order: producers key records by store, so one store's events are in one partition, in
order; a batch lists each partition's records in offset order, the recording thread records
batches in poll order (two at a time in the writer, each recorded only if the one before it was:
writer/chains.py), and the writer decides a batch's events in the order given. After a failed
batch nothing behind it is recorded until it is read again.

Rebalances: kafka-python calls the listener on its network thread while the consumer thread
waits in poll() (or close()), so the two never touch the pipeline at once. On revocation the
listener finishes what it can within `kafka_revoke_timeout_ms` (records, publishes, commits) and
hands the rest back uncommitted, its positions rewound, so that no offset beyond an unrecorded
event is ever committed, by this member or the next owner.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from typing import Any

from kafka.errors import KafkaTimeoutError

from ledger.backoff import BROKER_RETRY_FIRST_S, Backoff
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.intake.envelope import IntakeLimits
from ledger.kafka.clients import BrokerUnreachable, new_consumer, new_producer
from ledger.kafka.contact import BrokerContact
from ledger.kafka.dead_letters import DeadLetterLimits, dead_letter, dead_letter_record, refused_letter
from ledger.kafka.lag import partition_lag
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.offsets import GroupOffsets
from ledger.kafka.pipeline import InFlight, Pipeline, PollBatch
from ledger.kafka.publisher import Publisher, PublishFailed
from ledger.kafka.rebalance import Rebalance, partitions_text
from ledger.kafka.recorder import LedgerPort, Recorder, Recording, Refused
from ledger.kafka.records import read_value, result_record
from ledger.kafka.tracing import intake_traced, publishing_traced
from ledger.telemetry import tracing

__all__ = ["KafkaIntake", "LedgerPort", "PollBatch"]

log = logging.getLogger("ledger.kafka")


class BatchFailed(Exception):
    """A batch in flight could not be recorded or published: it and all after it are read again."""

    def __init__(self, flight: InFlight, step: str, error: BaseException) -> None:
        super().__init__(f"{step} {flight} failed: {error!r}")
        self.flight = flight
        self.step = step
        self.error = error

    @property
    def publishing(self) -> bool:
        return self.step == "publishing"


class KafkaIntake:
    """One member of the consumer group. `run()` consumes until `stop()`; it survives broker and
    database outages (it backs off and reads the failed batches again) but never skips a record."""

    def __init__(
        self,
        ledger: LedgerPort,
        settings: Settings,
        limits: IntakeLimits,
        stats: IntakeStats | None = None,
        *,
        consumer_factory: Callable[[Settings], Any] = new_consumer,
        producer_factory: Callable[[Settings], Any] = new_producer,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.limits = limits
        self.stats = stats or IntakeStats()
        self._consumer_factory = consumer_factory
        self._stopping = threading.Event()
        self._backoff = Backoff(BROKER_RETRY_FIRST_S, settings.kafka_retry_backoff_ms_max / 1000)
        self._recorder = Recorder(
            ledger, settings.kafka_batches_in_flight_max, settings.kafka_refused_per_batch_max
        )
        self._publisher = Publisher(settings, producer_factory, self.stats)
        self._pipeline = Pipeline(settings.kafka_batches_in_flight_max)
        self._dead_letter_limits = DeadLetterLimits.from_settings(settings)
        self._sequence = itertools.count(1)
        # Set by the rebalance listener (on the client's network thread), read by any thread.
        self._joined = False
        self._failing = False
        self._contact = BrokerContact(
            unanswered_ms_max=settings.kafka_unanswered_ms_max,
            loop_turn_ms_max=settings.kafka_loop_turn_ms_max,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        self._offsets = GroupOffsets(settings, self.stats)
        self._consumer: Any = None
        self._in_client_call = False  # the consumer thread waits in poll() or close()

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the loop to finish the batch being recorded, commit what is done, leave the group
        and return; batches not yet recording are left to be read again."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def ready(self) -> bool:
        return self.not_ready_because is None

    @property
    def not_ready_because(self) -> str | None:
        """Why the intake should not be counted on now, or None: it must be in its group, in touch
        with the broker (its loop turning, heartbeats and results answered in time), and able to
        record and publish (its last batch did not fail, its recording thread and producer are up)."""
        if self.stopping:
            return "stopping"
        if not self._joined:
            return "not in its consumer group"
        out_of_touch = self._contact.out_of_touch()
        if out_of_touch is not None:
            return out_of_touch
        if self._failing:
            return "its last batch failed and is being retried"
        if not self._recorder.alive:
            return "its recording thread has ended"
        if not self._publisher.ready:
            return "its producer is not built or its last publish failed"
        return None

    def run(self) -> None:
        self._recorder.start()
        try:
            while not self.stopping:
                try:
                    self._consume()
                except BrokerUnreachable as error:
                    self._joined = False
                    wait_s = self._backoff.next_s()
                    log.warning("the Kafka consumer: %s; trying again in %.1f s", error.args[0], wait_s)
                    self._stopping.wait(wait_s)
                except Exception:
                    log.exception("the Kafka consumer failed; starting it again")
                    self._joined = False
                    self._stopping.wait(self._backoff.next_s())
        finally:
            timeout_s = self.settings.kafka_shutdown_timeout_s
            if not self._recorder.close(timeout_s):
                log.error("the batch being recorded did not finish within %.0f s", timeout_s)
            self._publisher.close(timeout_s)

    # -- the loop -----------------------------------------------------------------------------------

    def _consume(self) -> None:
        settings = self.settings
        consumer = self._consumer_factory(settings)
        self._consumer = consumer
        try:
            consumer.subscribe([settings.kafka_topic], listener=Rebalance(self))
            self._contact.watch(consumer)
            log.info("consuming %s in group %s", settings.kafka_topic, settings.kafka_group)
            while not self.stopping:
                self._contact.turn_began()
                self._ensure_producer()
                self._advance(consumer)
                self._pace(consumer)
                polled = self._poll(consumer)
                if polled:
                    self._take(consumer, polled)
                else:
                    self._commit_passed(consumer)
                self._update_lag(consumer)
                self.stats.batches_in_flight = len(self._pipeline)
            self._finish(consumer, time.monotonic() + settings.kafka_shutdown_timeout_s, wait=True)
        finally:
            self._joined = False
            self._contact.unwatch()
            self.stats.assigned_partitions = 0
            # Its partitions go to the other members, whose lag counts them: not here as well.
            self.stats.set_lag({})
            # After an error: what is still in flight is read again, here or by another member.
            self._drop_in_flight()
            self._close(consumer)
            self._consumer = None

    def _ensure_producer(self) -> None:
        """A producer closed after failing for good is built anew before anything else is done."""
        if self._publisher.built:
            return
        try:
            self._publisher.open()
        except PublishFailed as error:
            self._failing = True
            log.warning("%s; trying again after a backoff", error)
            self._stopping.wait(self._backoff.next_s())

    def _poll(self, consumer: Any) -> dict[Any, list[Any]]:
        settings = self.settings
        timeout_ms = settings.kafka_poll_timeout_ms
        if self._pipeline:
            # Soon back to see what is done. When full, nothing is fetched until a batch is done:
            # rather than spin, wait a while for the recording thread, then only keep in the group.
            timeout_ms = settings.kafka_poll_in_flight_timeout_ms
            recording = self._pipeline.first_recording() if self._pipeline.full else None
            if recording is not None:
                wait_for_futures([recording], timeout=settings.kafka_poll_timeout_ms / 1000)
                timeout_ms = 0
        # While a heartbeat is unanswered past its time, kafka-python's poll does not wait out its
        # timeout: it caps each round's wait by the time to the next heartbeat, which is then 0, and
        # goes round again at once until the timeout ends. Against a broker that stopped answering
        # that spun each intake at a third of a core, taken from the writer and the HTTP requests
        # beside it. So then the intake polls without waiting and waits itself.
        heartbeat_late = self._contact.heartbeat_late()
        self._in_client_call = True
        try:
            polled: dict[Any, list[Any]] = consumer.poll(
                timeout_ms=0 if heartbeat_late else timeout_ms, max_records=settings.kafka_batch_records_max
            )
        finally:
            self._in_client_call = False
        if heartbeat_late and not polled:
            self._stopping.wait(settings.kafka_poll_timeout_ms / 1000)
        return polled

    def _pace(self, consumer: Any) -> None:
        """Pauses fetching while the pipeline is full; poll() still keeps the member in its group."""
        paused = consumer.paused()
        if self._pipeline.full:
            unpaused = set(consumer.assignment()) - set(paused)
            if unpaused:
                consumer.pause(*unpaused)
        elif paused:
            consumer.resume(*paused)

    def _take(self, consumer: Any, polled: dict[Any, list[Any]]) -> None:
        if self._pipeline.full or self.stopping:
            # Records of a partition assigned while fetching was paused, or polled as a stop came:
            # not taken, so read again later (kafka-python keeps a kept partition's position).
            for partition, records in polled.items():
                if records:
                    consumer.seek(partition, records[0].offset)
            return
        self.hand_off(self.read(polled))

    def _close(self, consumer: Any) -> None:
        timeout_s = self.settings.kafka_shutdown_timeout_s
        self._in_client_call = True
        try:
            # Leaves the group at once, so that the others take the partitions over without
            # waiting for the session timeout. Offsets are never committed implicitly.
            consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
        except Exception as error:  # noqa: BLE001 - the group drops this member after the session timeout
            log.warning("closing the consumer failed: %s", error)
        finally:
            self._in_client_call = False
        log.info("left group %s", self.settings.kafka_group)

    # -- reading and handing off --------------------------------------------------------------------

    def read(self, polled: dict[Any, list[Any]]) -> PollBatch:
        """Sorts the records of one poll into events and dead letters, partition by partition."""
        batch = PollBatch()
        for partition, records in polled.items():
            if not records:
                continue
            batch.first_offsets[partition] = records[0].offset
            batch.next_offsets[partition] = records[-1].offset + 1
            batch.records += len(records)
            for record in records:
                read = read_value(record.value, self.limits)
                if isinstance(read, StockEvent):
                    if record.key is not None and record.key != read.store_id.encode():
                        batch.key_mismatches += 1
                    batch.events.append(read)
                    batch.event_records.append(record)
                else:
                    batch.dead_letters.append(dead_letter(record, read))
        self.stats.records_consumed += batch.records
        return batch

    def hand_off(self, batch: PollBatch) -> InFlight:
        """Gives the batch's events to the recording thread; the batch is in flight until committed."""
        recording: Recording
        trace_parent = None
        if batch.events and tracing.active is not None:
            recording, trace_parent = intake_traced(self._recorder, batch, self.settings.kafka_topic)
        elif batch.events:
            recording = self._recorder.submit(batch.events)
        else:
            recording = Future()
            recording.set_result([])
        flight = InFlight(next(self._sequence), batch, recording, trace_parent=trace_parent)
        self._pipeline.append(flight)
        return flight

    # -- moving the pipeline on ---------------------------------------------------------------------

    def _advance(self, consumer: Any) -> None:
        """Publishes what is recorded and commits what is acknowledged, in poll order; on a failure,
        commits what was done before it and reads the rest again."""
        failure: BatchFailed | None = None
        try:
            self._publish_recorded()
        except BatchFailed as failed:
            failure = failed
        done, unacknowledged = self._acknowledged()
        self._commit(consumer, self._pipeline.take(done), wait=True)
        failure = unacknowledged or failure  # an unacknowledged batch comes before any unpublished one
        if failure is None:
            return
        if failure.publishing:
            self._publisher.failed(failure.error)  # a producer that failed for good is closed
            if self._publish_again(failure):
                return
        self._recover(consumer, failure)

    def _publish_recorded(self) -> None:
        for flight in self._pipeline:
            if flight.published:
                continue
            recording = flight.recording
            if not recording.done():
                return
            if recording.cancelled():
                raise BatchFailed(flight, "recording", RuntimeError("dropped after an earlier batch failed"))
            error = recording.exception()
            if error is not None:
                raise BatchFailed(flight, "recording", error)
            _take_outcomes(flight)
            self.publish(flight)

    def publish(self, flight: InFlight, deadline_s: float | None = None) -> None:
        """Sends one result per event and every dead letter, without waiting for the broker (for
        room in the producer's buffer, until `deadline_s`, else the publish timeout)."""
        settings = self.settings
        outbound = [result_record(settings.kafka_results_topic, result) for result in flight.results]
        outbound += [
            dead_letter_record(settings.kafka_dlq_topic, letter, self._dead_letter_limits)
            for letter in (*flight.batch.dead_letters, *flight.refused)
        ]
        flight.publishes += 1
        sent_ns = 0 if flight.trace_parent is None else time.time_ns()
        try:
            flight.deliveries = self._publisher.send(outbound, deadline_s)
        except PublishFailed as error:
            raise BatchFailed(flight, "publishing", error) from error
        if flight.trace_parent is not None:
            publishing_traced(flight.trace_parent, sent_ns, flight.deliveries, settings.kafka_results_topic)
        flight.published_at_s = time.monotonic()

    def _acknowledged(self) -> tuple[int, BatchFailed | None]:
        """How many of the oldest batches the broker has acknowledged, and the first that failed."""
        done = 0
        timeout_s = self._publisher.acknowledged_within_s
        waiting_since_s: float | None = None  # for readiness: since when the broker is awaited
        failure: BatchFailed | None = None
        for flight in self._pipeline:
            if flight.deliveries is None:
                break
            try:
                if not self._publisher.acknowledged(flight.deliveries):
                    waiting_since_s = flight.published_at_s
                    if time.monotonic() - flight.published_at_s > timeout_s:
                        error = KafkaTimeoutError(f"not acknowledged within {timeout_s:.0f} s")
                        failure = BatchFailed(flight, "publishing", error)
                    break
            except PublishFailed as error:
                failure = BatchFailed(flight, "publishing", error)
                break
            done += 1
        self._contact.results_waiting(waiting_since_s)
        return done, failure

    def _publish_again(self, failure: BatchFailed) -> bool:
        """After a failed publish: its batch's outcomes are durable, so its results and dead letters
        (and those of every batch sent after it) go out again on the next turn, rather than being
        recorded again. False once the batch has been published again `kafka_republishes_max`
        times: then it is read again instead."""
        flight = failure.flight
        republishes_max = self.settings.kafka_republishes_max
        if flight.publishes > republishes_max:
            return False
        self.stats.batches_republished += 1
        self._failing = True  # until a batch is committed again
        self._contact.results_waiting(None)
        log.warning(
            "%s; publishing its results again (%d of %d times at most)",
            failure,
            flight.publishes,
            republishes_max,
        )
        self._pipeline.publish_again(flight)
        self._stopping.wait(self._backoff.next_s())
        return True

    def _recover(self, consumer: Any, failure: BatchFailed) -> None:
        """Reads the failed batch and everything after it again, after a backoff."""
        self.stats.batches_failed += 1
        log.warning("%s; reading it and what follows again", failure)
        if not failure.publishing:
            # The batches before it are recorded and their results sent: give the broker a bounded
            # time to acknowledge them, so that only the failed batch and those after it are read again.
            self._publisher.flush(self.settings.kafka_publish_timeout_s)
            done, _ = self._acknowledged()
            self._commit(consumer, self._pipeline.take(done), wait=True)
        self._failing = True  # until a batch is committed again
        self._rewind(consumer)
        self._stopping.wait(self._backoff.next_s())

    def _finish(self, consumer: Any, deadline_s: float, *, wait: bool) -> None:
        """Finishes what is in flight by `deadline_s` (time.monotonic()): batches not yet recording
        are dropped, the one recording may finish, the recorded ones are published and, once the
        broker has them, committed; the rest is handed back, its positions rewound."""
        self._recorder.discard()
        for flight in self._pipeline:
            if not flight.published:
                wait_for_futures([flight.recording], timeout=max(deadline_s - time.monotonic(), 0))
                recording = flight.recording
                if not recording.done() or recording.cancelled() or recording.exception() is not None:
                    break
                _take_outcomes(flight)
                try:
                    self.publish(flight, deadline_s)
                except BatchFailed as failure:
                    log.warning("%s", failure)
                    break
        self._publisher.flush(deadline_s - time.monotonic())
        done, _ = self._acknowledged()
        self._commit(consumer, self._pipeline.take(done), wait=wait, final=True)
        if self._pipeline:
            log.info("%d batches in flight handed back uncommitted", len(self._pipeline))
        self._rewind(consumer)

    def _rewind(self, consumer: Any) -> None:
        """Moves each partition back to its first offset not committed, and drops what is in flight."""
        offsets = self._pipeline.rewind_offsets()
        self._drop_in_flight()
        assigned = consumer.assignment()
        for partition, offset in offsets.items():
            if partition in assigned:
                consumer.seek(partition, offset)
                # The lag counts what is to be read again: the fetch position it may have taken
                # (ahead of the batches dropped) would say 0 while nothing is recorded.
                self._offsets.positions[partition] = offset

    def _drop_in_flight(self) -> None:
        self._pipeline.clear()
        self._recorder.discard()
        self._contact.results_waiting(None)
        self.stats.batches_in_flight = 0

    # -- committing -----------------------------------------------------------------------------------

    def _commit(self, consumer: Any, flights: list[InFlight], *, wait: bool, final: bool = False) -> None:
        """Commits these batches, done (with any done before whose commit failed; `final`: those
        alone too, as the partitions are handed over or the member stops)."""
        if flights:
            self._publisher.succeeded()
            self._failing = False
            self._backoff.reset()
            for flight in flights:
                self._count(flight)
        if flights or (final and self._offsets.uncommitted):
            self.commit(consumer, flights, wait=wait)

    def commit(self, consumer: Any, flights: list[InFlight], *, wait: bool = True) -> None:
        """Commits the offsets that end these batches, and any not committed yet (ledger/kafka/offsets.py)."""
        self._offsets.commit(consumer, flights, wait=wait)

    def _commit_passed(self, consumer: Any) -> None:
        """Commits the offsets the consumer went past without a record for the ledger
        (GroupOffsets.passed), once nothing is in flight. Safe then: every record before the
        consumer's position is recorded, and committed or among the offsets whose commit failed (a
        batch dropped unrecorded was handed back, its partition's position rewound to it)."""
        if self._pipeline or not self._offsets.passed(consumer):
            return
        self.commit(consumer, [])
        self._offsets.passed_committed()

    def _count(self, flight: InFlight) -> None:
        stats = self.stats
        batch = flight.batch
        for result in flight.results:
            outcome = result.outcome.value
            stats.events_by_outcome[outcome] = stats.events_by_outcome.get(outcome, 0) + 1
        stats.dead_lettered += len(batch.dead_letters)
        stats.events_refused += len(flight.refused)
        stats.key_mismatches += batch.key_mismatches
        if batch.key_mismatches:
            log.warning("%d events came with a record key other than their subject", batch.key_mismatches)

    def _update_lag(self, consumer: Any) -> None:
        assigned = consumer.assignment()
        self.stats.set_lag(partition_lag(consumer, assigned, self._offsets.positions))
        self.stats.assigned_partitions = len(assigned)

    # -- rebalances (called on the client's network thread while the consumer thread waits) -------

    def on_assigned(self, assigned: list[Any]) -> None:
        self._offsets.positions = {}
        self._offsets.forget_uncommitted()  # another member may have gone further since
        self._joined = True
        self._failing = False  # a fresh assignment: nothing of it has failed yet
        if not self._pipeline:
            # What failed to publish was handed over with the partitions revoked: nothing pending
            # failed, so the producer counts as ready again until a publish of its own fails. Else
            # an idle member stayed not ready until its next commit, which idle partitions never bring.
            self._publisher.nothing_pending()
        self.stats.rebalances += 1
        self.stats.assigned_partitions = len(assigned)
        log.info("assigned %s", partitions_text(assigned))

    def on_revoked(self, revoked: list[Any]) -> None:
        assert self._in_client_call, "a rebalance listener called while the consumer thread is not waiting"
        consumer = self._consumer
        if (self._pipeline or self._offsets.uncommitted) and consumer is not None:
            settings = self.settings
            # It blocks the client's network thread, heartbeats too: well within the session timeout.
            wait_ms = min(settings.kafka_revoke_timeout_ms, settings.kafka_session_timeout_ms // 2)
            log.info(
                "revoked with %d batches in flight: finishing them (%d ms at most)",
                len(self._pipeline),
                wait_ms,
            )
            self._finish(consumer, time.monotonic() + wait_ms / 1000, wait=False)
        log.info("revoked %s", partitions_text(revoked))

    def on_lost(self, lost: list[Any]) -> None:
        # Another member may own these partitions already: nothing in flight can be committed.
        self._joined = False
        self._drop_in_flight()
        self._offsets.forget_uncommitted()
        log.warning("lost %s (this member was dropped from the group)", partitions_text(lost))


def _take_outcomes(flight: InFlight) -> None:
    """The recorded batch's outcomes, in order: a result per recorded event, a dead letter (from
    the record it was read from) per event the writer refused alone."""
    outcomes = flight.recording.result()
    batch = flight.batch
    assert len(outcomes) == len(batch.events), f"{flight}: {len(outcomes)} outcomes, not one per event"
    assert len(batch.event_records) == len(batch.events), f"{flight}: not one record per event"
    flight.results, flight.refused = [], []
    for outcome, record in zip(outcomes, batch.event_records, strict=True):
        if isinstance(outcome, Refused):
            flight.refused.append(refused_letter(record, outcome.reason))
        else:
            flight.results.append(outcome)
