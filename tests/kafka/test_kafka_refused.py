"""The intake's recording thread with a refused batch, without a broker: it records the batch's
events one by one, in order, answers each refused one `Refused`, and fails the batch as a whole
(read again) past `refused_max` refusals or on any other failure meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field

from support import events as ev

from ledger.domain.model import Outcome, StockEvent
from ledger.kafka.recorder import Recorder, Refused, TooManyRefused
from ledger.results import EventResult
from ledger.writer.submission import SubmissionFailed, WriterUnavailable

ANSWER_DEADLINE_S = 10.0


@dataclass
class FakeLedger:
    """Refuses any submission holding an event whose id starts with `refused`; else fails any
    holding one that starts with `down`."""

    calls: list[list[str]] = field(default_factory=list)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        ids = [event.event_id for event in events]
        self.calls.append(ids)
        if any(i.startswith("refused") for i in ids):
            raise SubmissionFailed(f"cannot store {ids}")
        if any(i.startswith("down") for i in ids):
            raise WriterUnavailable("the database went away")
        return [EventResult(e.event_id, e.source, e.store_id, Outcome.ACCEPTED) for e in events]


def _events(*ids: str) -> list[StockEvent]:
    return [ev.stock_event(i, "stock.receipt", "store-1", [("SKU-1", 1)]) for i in ids]


def _record(ledger: FakeLedger, ids: tuple[str, ...], refused_max: int = 10) -> object:
    recorder = Recorder(ledger, jobs_max=1, refused_max=refused_max).start()
    try:
        recording = recorder.submit(_events(*ids))
        error = recording.exception(ANSWER_DEADLINE_S)
        return error if error is not None else recording.result()
    finally:
        assert recorder.close(ANSWER_DEADLINE_S)


def test_a_refused_batch_is_recorded_one_by_one_and_only_the_refused_event_is_answered_refused() -> None:
    ledger = FakeLedger()
    outcomes = _record(ledger, ("a", "refused-b", "c"))
    assert isinstance(outcomes, list)
    a, b, c = outcomes
    assert isinstance(a, EventResult) and a.event_id == "a"
    assert isinstance(b, Refused) and "refused-b" in b.reason
    assert isinstance(c, EventResult) and c.event_id == "c"
    assert ledger.calls == [["a", "refused-b", "c"], ["a"], ["refused-b"], ["c"]]


def test_more_refusals_than_the_limit_fail_the_batch_to_be_read_again() -> None:
    error = _record(FakeLedger(), ("refused-a", "refused-b", "c"), refused_max=1)
    assert isinstance(error, TooManyRefused)


def test_an_unavailable_writer_while_recording_one_by_one_fails_the_batch_to_be_read_again() -> None:
    ledger = FakeLedger()
    error = _record(ledger, ("refused-a", "down-b", "c"))
    assert isinstance(error, WriterUnavailable)
    assert ledger.calls[-1] == ["down-b"]  # nothing after it was recorded


def test_a_refused_batch_of_one_is_not_sent_again() -> None:
    ledger = FakeLedger()
    outcomes = _record(ledger, ("refused-a",))
    assert isinstance(outcomes, list) and isinstance(outcomes[0], Refused)
    assert ledger.calls == [["refused-a"]]


def test_events_refused_one_batch_at_a_time_in_a_row_past_the_limit_fail_their_batch() -> None:
    """A writer that refuses everything, fed a trickle (a batch of one event each): past
    `refused_max` in a row the batch is read again, instead of the topic draining into the
    dead-letter topic; one event recorded in between starts the count again."""
    ledger = FakeLedger()
    recorder = Recorder(ledger, jobs_max=1, refused_max=2).start()
    try:
        answers = []
        for ids in (("refused-1",), ("refused-2",), ("ok",), ("refused-3",), ("refused-4",), ("refused-5",)):
            recording = recorder.submit(_events(*ids))
            error = recording.exception(ANSWER_DEADLINE_S)
            answers.append(error if error is not None else recording.result())
    finally:
        assert recorder.close(ANSWER_DEADLINE_S)
    assert all(isinstance(answer, list) for answer in answers[:5]), answers
    assert isinstance(answers[5], TooManyRefused), answers[5]
