"""The Kafka intake's recorder keeps two batches in the writer, each sent after the one before
(ledger/kafka/recorder.py, writer/chains.py): whatever fails, no event is recorded ahead of an
earlier one, and a refused batch's followers are sent again once it is recorded one by one."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from support import events as ev

from ledger.domain.model import Outcome, StockEvent
from ledger.kafka.recorder import IN_WRITER_MAX, Recorder, Refused
from ledger.results import EventResult
from ledger.writer.submission import NotTried, Sent, SubmissionFailed, WriterUnavailable

ANSWER_DEADLINE_S = 10.0


@dataclass(frozen=True, slots=True)
class _Request:
    request_id: int
    events: list[StockEvent]
    after: int | None


@dataclass(frozen=True, slots=True)
class _Sent:
    ledger: ChainedLedger
    request_id: int

    def wait(self) -> list[EventResult]:
        return self.ledger.answer(self.request_id)

    def poll(self, wait_s: float) -> list[EventResult] | None:
        if not self.ledger.held.wait(wait_s):
            return None
        return self.ledger.answer(self.request_id)


@dataclass
class ChainedLedger:
    """A writer that keeps what it is sent and records it in order once an answer is asked for,
    by the writer's rules: an event whose id starts with `refused` fails its request for good,
    one starting with `down` fails it as unavailable, and a request after one that was not
    recorded is not tried. It records nothing while `held` is set, so that the test sees how
    many requests the recorder leaves with it."""

    sends_ahead = True
    recorded: list[str] = field(default_factory=list)  # event ids, in the order recorded
    most_in_writer: int = 0
    held: threading.Event = field(default_factory=threading.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: deque[_Request] = field(default_factory=deque)
    _answers: dict[int, list[EventResult] | Exception] = field(default_factory=dict)
    _recorded: set[int] = field(default_factory=set)  # requests recorded
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, events: list[StockEvent], after: Sent | None = None) -> Sent:
        assert after is None or isinstance(after, _Sent)
        with self._lock:
            request = _Request(next(self._ids), events, None if after is None else after.request_id)
            self._waiting.append(request)
            self.most_in_writer = max(self.most_in_writer, len(self._waiting))
            return _Sent(self, request.request_id)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        return self.send(events).wait()

    def answer(self, request_id: int) -> list[EventResult]:
        assert self.held.wait(ANSWER_DEADLINE_S), "the test never let the writer record"
        with self._lock:
            while request_id not in self._answers:
                self._record(self._waiting.popleft())
            outcome = self._answers.pop(request_id)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _record(self, request: _Request) -> None:
        ids = [event.event_id for event in request.events]
        outcome: list[EventResult] | Exception
        if request.after is not None and request.after not in self._recorded:
            outcome = NotTried("not tried: the request it follows was not recorded")
        elif any(i.startswith("refused") for i in ids):
            outcome = SubmissionFailed(f"cannot store {ids}")
        elif any(i.startswith("down") for i in ids):
            outcome = WriterUnavailable("the database went away")
        else:
            self.recorded.extend(ids)
            outcome = [
                EventResult(e.event_id, e.source, e.store_id, Outcome.ACCEPTED) for e in request.events
            ]
        self._answers[request.request_id] = outcome
        if not isinstance(outcome, Exception):
            self._recorded.add(request.request_id)


def _events(*ids: str) -> list[StockEvent]:
    return [ev.stock_event(i, "stock.receipt", "store-1", [("SKU-1", 1)]) for i in ids]


def _ids(outcomes: list[object]) -> list[str]:
    return [o.event_id if isinstance(o, EventResult) else f"refused:{o.reason}" for o in outcomes]  # type: ignore[attr-defined]


def test_two_batches_are_left_with_the_writer_at_once() -> None:
    ledger = ChainedLedger()
    recorder = Recorder(ledger, jobs_max=4, refused_max=10).start()
    try:
        recordings = [recorder.submit(_events(f"{n}-1", f"{n}-2")) for n in "abc"]
        # Until the writer records, the recorder has sent as many as it may, and no more.
        assert _until(lambda: ledger.most_in_writer == IN_WRITER_MAX)
        time.sleep(0.05)  # a moment more: no third is sent
        assert ledger.most_in_writer == IN_WRITER_MAX
        ledger.held.set()
        answers = [recording.result(ANSWER_DEADLINE_S) for recording in recordings]
        assert [_ids(answer) for answer in answers] == [["a-1", "a-2"], ["b-1", "b-2"], ["c-1", "c-2"]]
        assert ledger.recorded == ["a-1", "a-2", "b-1", "b-2", "c-1", "c-2"]
    finally:
        ledger.held.set()
        assert recorder.close(ANSWER_DEADLINE_S)


def test_the_batch_after_a_refused_one_is_recorded_after_its_events_not_ahead_of_them() -> None:
    ledger = ChainedLedger()
    recorder = Recorder(ledger, jobs_max=4, refused_max=10).start()
    try:
        first = recorder.submit(_events("a-1", "refused-a", "a-3"))
        second = recorder.submit(_events("b-1"))
        third = recorder.submit(_events("c-1"))
        ledger.held.set()
        a_1, refused, a_3 = first.result(ANSWER_DEADLINE_S)
        assert isinstance(refused, Refused) and "refused-a" in refused.reason
        assert isinstance(a_1, EventResult) and isinstance(a_3, EventResult)
        assert _ids(second.result(ANSWER_DEADLINE_S)) == ["b-1"]
        assert _ids(third.result(ANSWER_DEADLINE_S)) == ["c-1"]
        assert ledger.recorded == ["a-1", "a-3", "b-1", "c-1"]
    finally:
        ledger.held.set()
        assert recorder.close(ANSWER_DEADLINE_S)


def test_after_a_failed_batch_nothing_sent_or_handed_after_it_is_recorded_until_discarded() -> None:
    ledger = ChainedLedger()
    recorder = Recorder(ledger, jobs_max=4, refused_max=10).start()
    try:
        first = recorder.submit(_events("a-1"))
        failing = recorder.submit(_events("down-b"))
        after = [recorder.submit(_events("c-1")), recorder.submit(_events("d-1"))]
        ledger.held.set()
        assert _ids(first.result(ANSWER_DEADLINE_S)) == ["a-1"]
        assert isinstance(failing.exception(ANSWER_DEADLINE_S), WriterUnavailable)
        for recording in after:
            try:
                error = recording.exception(ANSWER_DEADLINE_S)
            except BaseException as cancelled:  # noqa: BLE001 - cancelled before it was sent
                error = cancelled
            assert error is not None, "a batch after the failed one was recorded"
        recorder.discard()
        assert _ids(recorder.submit(_events("c-1")).result(ANSWER_DEADLINE_S)) == ["c-1"]
        assert ledger.recorded == ["a-1", "c-1"]
    finally:
        ledger.held.set()
        assert recorder.close(ANSWER_DEADLINE_S)


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + ANSWER_DEADLINE_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_batch_handed_over_while_the_writer_holds_one_is_sent_before_that_one_is_answered() -> None:
    ledger = ChainedLedger()
    recorder = Recorder(ledger, jobs_max=4, refused_max=10).start()
    try:
        first = recorder.submit(_events("a-1"))
        assert _until(lambda: ledger.most_in_writer == 1)
        second = recorder.submit(_events("b-1"))
        assert _until(lambda: ledger.most_in_writer == 2), "the second waited for the first's answer"
        assert not first.done()
        ledger.held.set()
        assert _ids(first.result(ANSWER_DEADLINE_S)) == ["a-1"]
        assert _ids(second.result(ANSWER_DEADLINE_S)) == ["b-1"]
    finally:
        ledger.held.set()
        assert recorder.close(ANSWER_DEADLINE_S)
