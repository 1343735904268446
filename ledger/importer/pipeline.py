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

A batch can be decided from memory only if memory holds every key it reads, and while a batch is
in flight nothing is read from the database (its head is not memory's until the batch lands). A
real history brings keys memory never held in almost every batch (a SKU new at a store, the
shipment of a reservation that was refused): on 20,000 events of the import bench's file, none
of the 18 batches that could have been was decided in flight; with the keys read ahead, 17. So
the caller names the batch after the next one as well (`later`), and what it lacks is read in
the moment between a batch landing and the next one being sent, when the database's head is
memory's; each batch is then decided while the one before is recorded.

The order of the file is kept whatever fails: N+1 is sent only after N landed, and when N could
not be recorded (its retries done) nothing after it is sent; the caller sends N again. Where a
batch cannot be decided from memory (SQLite, or a batch that needs the database) it is recorded
the ordinary way, with no overlap.
"""

from __future__ import annotations

from ledger.domain.model import Outcome, StockEvent
from ledger.results import EventResult
from ledger.writer import deciding, in_flight
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
        self,
        events: list[StockEvent],
        upcoming: list[StockEvent] | None = None,
        later: list[StockEvent] | None = None,
    ) -> list[EventResult]:
        """`later`: the batch after `upcoming`, when it is read already: what memory lacks of it
        is read before `upcoming` is sent, so that it can be decided while `upcoming` is in flight."""
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
        found = None
        if flight is not None and upcoming:
            ready = in_flight.prepare(writer, [Submission(upcoming, next_answer)], in_flight=True)
            if later:
                found = deciding.lacking(writer.cache, later)  # while PostgreSQL records `events`
        landed = flight is None or in_flight.land(writer, flight)
        results = answer.results()  # raises what the batch failed with: nothing more is sent
        self._duplicates_seen = any(result.outcome is Outcome.DUPLICATE for result in results)
        writer.maybe_expire()
        if upcoming and landed and not self._duplicates_seen:
            if later:
                self._read_ahead(later, found)
            if ready is None:
                ready = in_flight.prepare(writer, [Submission(upcoming, next_answer)])
            self._flight = in_flight.send(writer, ready) if ready is not None else None
            if self._flight is not None:
                self._flight_events, self._flight_answer = upcoming, next_answer
        return results

    def _read_ahead(self, later: list[StockEvent], found: deciding.Lacking | None) -> None:
        """Reads into memory the keys `later` needs and memory lacks (a level never seen at a
        store, a reservation refused), now that nothing is in flight: the database's head is
        memory's, so what is read is exact there. While a batch is in flight nothing is read (the
        heads differ), and a batch that needs a key is decided only after the flight lands,
        without overlap: with new SKUs and stores in every batch of a real history, none was.

        Which keys those are was found (`found`) while the batch before was in flight, so that
        PostgreSQL waits here for the reads alone. Measured on the import bench's file (batches
        of 1,000 events): looking for them here, twice (whether to read, then in the read), took
        7.8 of the 9.7 ms a batch spent reading ahead, out of the 18 ms between landing a batch
        and sending the next, when PostgreSQL has nothing to do."""
        cache = self.writer.cache
        if found is None or not found.current(cache):
            found = deciding.lacking(cache, later)
        if found.missing:
            deciding.catch_up_and_fetch(self.writer.recorder, cache, later, found)

    def stop(self) -> None:
        """Lands what is still in flight (answered to nobody: the caller stopped)."""
        if self._flight is not None:
            in_flight.land(self.writer, self._flight)
            self._flight = self._flight_answer = self._flight_events = None
