"""The import's own writer: one batch in flight at PostgreSQL while the next one is decided.

It drives the same Writer, through the same three steps as the writer process's loop
(ledger/writer/in_flight.py: prepare, send, land), for a single caller: while batch N is
recorded by PostgreSQL, batch N+1 is decided from memory, and it is sent only once N has
committed. Measured in-process on the benchmark's file: the writer's Python and PostgreSQL
took turns before, and a batch cost their sum.

A batch after one with duplicates (a file imported again) is recorded the ordinary way: a batch
decided from memory bets that its events are new, and a duplicate loses the bet only when
PostgreSQL refuses its key, after inserting the rest of the batch (seen: a second import of the
benchmark's file ran at a few hundred events a second); the ordinary way reads the keys first.

The order of the file is kept whatever fails: N+1 is sent only after N landed, and when N could
not be recorded (its retries done) nothing after it is sent; the caller sends N again. Where a
batch cannot be decided from memory (SQLite, or a batch that needs the database) it is recorded
the ordinary way, with no overlap.
"""

from __future__ import annotations

from ledger.domain.model import Outcome, StockEvent
from ledger.results import EventResult
from ledger.writer import in_flight
from ledger.writer.facade import Writer
from ledger.writer.submission import Submission


class _Answer:
    """What a Submission's `done` was called with."""

    def __init__(self) -> None:
        self.value: list[EventResult] | BaseException | None = None

    def __call__(self, result: list[EventResult] | BaseException) -> None:
        self.value = result

    def results(self) -> list[EventResult]:
        value = self.value
        assert value is not None, "a batch was not answered"
        if isinstance(value, BaseException):
            raise value
        return value


class PipelinedWriter:
    """Runs the writer in the caller's thread; `submit_and_wait(events, upcoming)` records
    `events` and, once they have committed, sends `upcoming` on its way (the caller's next call
    must be for that very list)."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._flight: in_flight.InFlight | None = None
        self._flight_events: list[StockEvent] | None = None  # the caller's list, sent ahead
        self._flight_answer: _Answer | None = None
        self._duplicates_seen = False  # in the last batch: the next one is recorded the ordinary way

    def submit_and_wait(
        self, events: list[StockEvent], upcoming: list[StockEvent] | None = None
    ) -> list[EventResult]:
        writer = self.writer
        flight, answer = self._flight, self._flight_answer
        assert flight is None or self._flight_events is events, "a batch in flight was never landed"
        self._flight = self._flight_answer = self._flight_events = None
        if flight is None:
            answer = _Answer()
            if self._duplicates_seen:
                writer.process([Submission(events, answer)])
            else:
                flight = in_flight.begin(writer, [Submission(events, answer)])
        assert answer is not None
        ready = None
        next_answer = _Answer()
        if flight is not None and upcoming:
            ready = in_flight.prepare(writer, [Submission(upcoming, next_answer)], in_flight=True)
        landed = flight is None or in_flight.land(writer, flight)
        results = answer.results()  # raises what the batch failed with: nothing more is sent
        self._duplicates_seen = any(result.outcome is Outcome.DUPLICATE for result in results)
        writer.maybe_expire()
        if upcoming and landed and not self._duplicates_seen:
            if ready is None:
                ready = in_flight.prepare(writer, [Submission(upcoming, next_answer)])
            self._flight = in_flight.send(writer, ready) if ready is not None else None
            if self._flight is not None:
                self._flight_events, self._flight_answer = upcoming, next_answer
        return results

    def stop(self) -> None:
        """Lands what is still in flight (answered to nobody: the caller stopped)."""
        if self._flight is not None:
            in_flight.land(self.writer, self._flight)
            self._flight = self._flight_answer = self._flight_events = None
