"""The intake's recording thread: records the batches handed to it, in the order given, while the
consumer thread polls and reads the next (kafka-python's consumer is not thread-safe, so this
thread never touches it; the ledger's answers block, so the consumer thread never waits for them).

It keeps up to IN_WRITER_MAX batches in the writer at once: the writer decides the next while the
one before commits (writer/in_flight.py), instead of waiting idle between them. Each batch is sent
after the one before it (writer/chains.py), so that the writer records it only if that one was
recorded: whatever fails, no event is recorded ahead of an earlier event of its store that is
still to be read again or recorded one by one.

After a failed batch the recorder records nothing more until `discard()`: the batches handed over
after the failed one are cancelled (or, if already sent, answered as failed: the writer did not
try them), never recorded.

A batch the writer refuses (SubmissionFailed: a retry will not change it; nothing of it was
recorded) is not failed: its events are recorded again one at a time, in order, and an event
refused alone is answered `Refused` (the intake dead-letters it) while the others are recorded;
the batches sent after it are then sent again. Past `refused_max` refused events in one batch, or
past `refused_max` events refused in a row with nothing recorded between them (a trickle of
batches of one event each, refused by a writer that refuses everything), or on any other failure
meanwhile, the batch fails as a whole and is read again (what was recorded of it then answers as
duplicates): the stream must not drain into the dead-letter topic while the writer is at fault.
The count in a row is not reset by that failure: read again, the batch fails again at its first
event refused alone, until an event is recorded (the writer works again) or the intake restarts.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.telemetry import tracing
from ledger.writer.submission import Answered, NotTried, Sent, SubmissionFailed, answered_now

log = logging.getLogger("ledger.kafka")


@dataclass(frozen=True, slots=True)
class Refused:
    """An event the writer could not record even alone, and why (SubmissionFailed's reason)."""

    reason: str


Outcome = EventResult | Refused
Recording = Future[list[Outcome]]
_T = TypeVar("_T")


class TooManyRefused(Exception):
    """More events were refused alone than `refused_max`, in one batch or in a row: the writer,
    rather than the events, is likely at fault, so the batch is read again instead of dead-lettered."""

    def __init__(
        self, refused: int, refused_max: int, last: SubmissionFailed, where: str = "of one batch"
    ) -> None:
        super().__init__(f"{refused} events {where} refused alone (at most {refused_max}); last: {last}")


# Batches in the writer at once: one recorded while the next is decided; a third would only wait
# in the writer's queue (and be sent again, too, when the first is refused).
IN_WRITER_MAX = 2
# While waiting for a batch's answer, how often the recorder looks for a batch handed over since,
# to send it at once: a batch takes the writer a few hundred milliseconds.
ANSWER_POLL_S = 0.005


class LedgerPort(Protocol):
    """What the intake needs of the ledger: record events, answer once they are durable."""

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]: ...


@runtime_checkable
class SendingPort(LedgerPort, Protocol):
    """A ledger that also takes events without waiting (Ledger.send), to be recorded only after
    those sent before them (`after`)."""

    @property
    def sends_ahead(self) -> bool: ...
    def send(self, events: list[StockEvent], after: Sent | None = None) -> Sent: ...


@dataclass(frozen=True, slots=True)
class _Job:
    events: list[StockEvent]
    recording: Recording
    # With tracing on, the handing thread's context (its intake batch's span), for the writes.
    context: contextvars.Context | None = None

    def run(self, work: Callable[[], _T]) -> _T:
        return work() if self.context is None else self.context.run(work)


@dataclass(frozen=True, slots=True)
class _Sending:
    """A batch in the writer, its answer not yet read."""

    job: _Job
    sent: Sent


class Recorder:
    """At most `jobs_max` batches wait or record at once (the caller keeps within it)."""

    def __init__(self, ledger: LedgerPort, jobs_max: int, refused_max: int) -> None:
        self._ledger = ledger
        # A ledger that cannot leave events with its writer records each batch as it is sent, one
        # at a time (a second sent at once would only hold back the first's answer).
        self._send: Callable[[list[StockEvent], Sent | None], Sent]
        if isinstance(ledger, SendingPort):
            self._send = ledger.send
            self.in_writer_max = IN_WRITER_MAX if ledger.sends_ahead else 1
        else:
            self._send = functools.partial(answered_now, ledger.submit_and_wait)
            self.in_writer_max = 1
        self.jobs_max = jobs_max
        self.refused_max = refused_max
        self._refused_in_a_row = 0  # events refused alone since one was last recorded, any batch
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
        in_writer: deque[_Sending] = deque()  # oldest first, each sent after the one before
        again: deque[_Job] = deque()  # sent after a batch the writer refused: to be sent again
        while True:
            with self._changed:
                while not (in_writer or again or self._jobs or self._closing):
                    self._changed.wait()
                if not (in_writer or again or self._jobs):
                    return
            while again and len(in_writer) < self.in_writer_max:
                in_writer.append(self._sent(again.popleft(), in_writer))
            self._send_handed_over(in_writer)
            if in_writer:
                self._settle(in_writer, again)

    def _send_handed_over(self, in_writer: deque[_Sending]) -> None:
        """Sends the batches handed over, as many as the writer may hold, each after the last."""
        with self._changed:
            to_send: list[_Job] = []
            while self._jobs and len(in_writer) + len(to_send) < self.in_writer_max:
                job = self._jobs.popleft()
                if job.recording.set_running_or_notify_cancel():
                    to_send.append(job)
        for job in to_send:  # outside the lock: a send may take as long as a recording
            in_writer.append(self._sent(job, in_writer))

    def _sent(self, job: _Job, in_writer: deque[_Sending]) -> _Sending:
        """Sends a batch after the last one in the writer; a send that fails is its answer."""
        after = in_writer[-1].sent if in_writer else None
        try:
            return _Sending(job, job.run(lambda: self._send(job.events, after)))
        except Exception as error:  # noqa: BLE001 - the batch's failure, answered in order
            return _Sending(job, Answered(error))

    def _settle(self, in_writer: deque[_Sending], again: deque[_Job]) -> None:
        """Answers the oldest batch in the writer, sending those handed over meanwhile. If it was
        not recorded, the ones sent after it were not tried: they are waited out, then sent again
        (after a refusal, once the refused batch is recorded one by one) or failed with it."""
        oldest = in_writer[0]
        job = oldest.job
        try:
            while (results := oldest.sent.poll(ANSWER_POLL_S)) is None:
                self._send_handed_over(in_writer)
            outcomes: list[Outcome] = list(results)
        except SubmissionFailed as refusal:
            in_writer.popleft()
            followers = _waited_out(in_writer)
            try:
                outcomes = job.run(functools.partial(self._record_refused, job.events, refusal))
            except BaseException as failure:  # noqa: BLE001 - the batch fails; see raise_unless_exception
                self._fail(job, failure, followers)
                raise_unless_exception(failure)
                return
            again.extendleft(reversed(followers))
        except BaseException as error:  # noqa: BLE001 - the batch fails; see raise_unless_exception
            in_writer.popleft()
            self._fail(job, error, _waited_out(in_writer))
            raise_unless_exception(error)
            return
        else:
            in_writer.popleft()
            if outcomes:
                self._refused_in_a_row = 0
        job.recording.set_result(outcomes)

    def _fail(self, job: _Job, error: BaseException, followers: list[_Job]) -> None:
        with self._changed:
            self._halted = True
            self._cancel_waiting()
        job.recording.set_exception(error)
        for follower in followers:
            follower.recording.set_exception(NotTried("not recorded: a batch before it failed"))

    def _record_refused(self, events: list[StockEvent], error: SubmissionFailed) -> list[Outcome]:
        """A batch the writer refused: one outcome per event, recorded one by one."""
        if len(events) == 1:
            self._refused_alone(error)
            return [Refused(error.reason)]
        log.warning("a batch of %d events was refused (%s); recording them one by one", len(events), error)
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
                self._refused_alone(error)
                log.error(
                    "event %s from %s refused alone, to the dead-letter topic: %s",
                    event.event_id,
                    event.source,
                    error,
                )
                outcomes.append(Refused(error.reason))
            else:
                self._refused_in_a_row = 0
        return outcomes

    def _refused_alone(self, error: SubmissionFailed) -> None:
        """Counts an event refused alone; past `refused_max` in a row, fails its batch."""
        self._refused_in_a_row += 1
        if self._refused_in_a_row > self.refused_max:
            raise TooManyRefused(self._refused_in_a_row, self.refused_max, error, "in a row") from error


def _waited_out(in_writer: deque[_Sending]) -> list[_Job]:
    """Waits for the answers of the batches in the writer (each within the writer's timeout),
    whatever they are, and takes them out: sent after one that was not recorded, they were not
    tried (or, if the connection was lost meanwhile, they fail with it and are read again)."""
    followers: list[_Job] = []
    while in_writer:
        sending = in_writer.popleft()
        with contextlib.suppress(Exception):  # NotTried, as expected, or the connection lost
            sending.sent.wait()
        followers.append(sending.job)
    return followers


def raise_unless_exception(error: BaseException) -> None:
    """The thread ends on what is not an Exception (`alive` tells the consumer, then not ready)."""
    if not isinstance(error, Exception):
        raise error
