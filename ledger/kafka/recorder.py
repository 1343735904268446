"""The intake's recording thread: records the batches handed to it, one at a time and in the order
given, while the consumer thread polls and reads the next (kafka-python's consumer is not
thread-safe, so this thread never touches it; the ledger's `submit_and_wait` blocks, so the
consumer thread never calls it).

After a failed batch the recorder records nothing more until `discard()`: the batches handed over
after the failed one are cancelled, never recorded, so that no event is recorded ahead of an
earlier event of its store that is still to be read again.

A batch the writer refuses (SubmissionFailed: a retry will not change it; nothing of it was
recorded) is not failed: its events are recorded again one at a time, in order, and an event
refused alone is answered `Refused` (the intake dead-letters it) while the others are recorded.
Past `refused_max` refused events in one batch, or on any other failure meanwhile, the batch
fails as a whole and is read again (what was recorded of it then answers as duplicates).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.telemetry import tracing
from ledger.writer.submission import SubmissionFailed

log = logging.getLogger("ledger.kafka")


@dataclass(frozen=True, slots=True)
class Refused:
    """An event the writer could not record even alone, and why (SubmissionFailed's reason)."""

    reason: str


Outcome = EventResult | Refused
Recording = Future[list[Outcome]]


class TooManyRefused(Exception):
    """More events of one batch were refused alone than `refused_max`: the writer, rather than
    the events, is likely at fault, so the batch is read again instead of dead-lettered."""

    def __init__(self, refused: int, refused_max: int, last: SubmissionFailed) -> None:
        super().__init__(f"{refused} events of one batch refused alone (at most {refused_max}); last: {last}")


class LedgerPort(Protocol):
    """What the intake needs of the ledger: record events, answer once they are durable."""

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]: ...


@dataclass(frozen=True, slots=True)
class _Job:
    events: list[StockEvent]
    recording: Recording
    # With tracing on, the handing thread's context (its intake batch's span), for the writes.
    context: contextvars.Context | None = None


class Recorder:
    """At most `jobs_max` batches wait or record at once (the caller keeps within it)."""

    def __init__(self, ledger: LedgerPort, jobs_max: int, refused_max: int) -> None:
        self._ledger = ledger
        self.jobs_max = jobs_max
        self.refused_max = refused_max
        self._jobs: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._halted = False  # after a failure, until discard()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ledger-kafka-recorder", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, events: list[StockEvent]) -> Recording:
        """Hands a batch over; its future answers one result per event, in order, once durable."""
        recording: Recording = Future()
        with self._changed:
            assert not self._closing, "a batch handed to a closed recorder"
            assert len(self._jobs) < self.jobs_max, f"more than {self.jobs_max} batches handed over"
            if self._halted:
                recording.cancel()
            else:
                context = None if tracing.active is None else contextvars.copy_context()
                self._jobs.append(_Job(events, recording, context))
                self._changed.notify()
        return recording

    def discard(self) -> None:
        """Cancels every batch not yet started, and takes new batches again (after a failure)."""
        with self._changed:
            self._cancel_waiting()
            self._halted = False

    def close(self, timeout_s: float) -> bool:
        """Cancels what waits, lets the batch being recorded finish; True if it did in time."""
        with self._changed:
            self._cancel_waiting()
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _cancel_waiting(self) -> None:
        while self._jobs:
            self._jobs.popleft().recording.cancel()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                if not job.recording.set_running_or_notify_cancel():
                    continue
            try:
                if job.context is None:
                    results = self._record(job.events)
                else:
                    results = job.context.run(self._record, job.events)
            except BaseException as error:
                with self._changed:
                    self._halted = True
                    self._cancel_waiting()
                job.recording.set_exception(error)
                if not isinstance(error, Exception):
                    raise  # the thread ends; `alive` tells the consumer, which is then not ready
            else:
                job.recording.set_result(results)

    def _record(self, events: list[StockEvent]) -> list[Outcome]:
        """One outcome per event, in order: the batch whole, or one by one if the writer refused it."""
        try:
            return list(self._ledger.submit_and_wait(events))
        except SubmissionFailed as error:
            if len(events) == 1:
                return [Refused(error.reason)]
            log.warning(
                "a batch of %d events was refused (%s); recording them one by one", len(events), error
            )
        return self._record_one_by_one(events)

    def _record_one_by_one(self, events: list[StockEvent]) -> list[Outcome]:
        """At most len(events) attempts, one per event, in order; any failure other than a refusal,
        or more than `refused_max` refusals, fails the batch (read again, as after an outage)."""
        outcomes: list[Outcome] = []
        refused = 0
        for event in events:
            try:
                outcomes.extend(self._ledger.submit_and_wait([event]))
            except SubmissionFailed as error:
                refused += 1
                if refused > self.refused_max:
                    raise TooManyRefused(refused, self.refused_max, error) from error
                log.error(
                    "event %s from %s refused alone, to the dead-letter topic: %s",
                    event.event_id,
                    event.source,
                    error,
                )
                outcomes.append(Refused(error.reason))
        return outcomes
