"""A batch in flight: sent to PostgreSQL as one statement while the next one is decided.

The one-statement batch, split in three so that the writer's Python and PostgreSQL's work
overlap: `prepare` decides (from memory, on top of a batch still in flight), `send` sends the
statement without waiting and puts the batch's effects in the writer's memory at once, `land`
waits and answers. The next batch is sent only after `land` said the one before committed: its
head check would not catch a failed predecessor otherwise (another writer could have recorded
just as many entries). A batch in flight that fails is recorded the ordinary way, and what was
decided on top of it is decided again. Memory held its effects: a lost bet (nothing of it
committed) takes back just those, keeping the rest of memory; any other failure, which may have
committed, empties it. Only a memory nobody else reads may hold effects not yet committed: the
writer process's own (the HTTP workers hear of a batch only once it has committed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ledger.clock import utc_now, utc_text
from ledger.domain.model import StockEvent
from ledger.storage.sent_statements import SentBatch
from ledger.writer import batching
from ledger.writer.answers import answers
from ledger.writer.facade import Writer
from ledger.writer.recording import OneStatement
from ledger.writer.submission import Submission

log = logging.getLogger("ledger.writer")


@dataclass(slots=True)
class Ready:
    """A batch decided and encoded, not yet sent."""

    batch: list[Submission]
    events: list[StockEvent]
    statement: OneStatement
    generation: int  # the memory's, when it was decided


@dataclass(slots=True)
class InFlight:
    ready: Ready
    sent: SentBatch

    @property
    def last_position(self) -> int:
        return self.ready.statement.last_position


def prepare(writer: Writer, batch: list[Submission], *, in_flight: bool = False) -> Ready | None:
    """Decides a batch from memory; None when it must be recorded the ordinary way. With a batch
    `in_flight`, keys the memory lacks are not read (the heads differ until it lands)."""
    events = [event for submission in batch for event in submission.events]
    if not writer.one_statement_batches or not events or writer.unanswered_lately():
        return None  # a readiness probe, or a database that did not answer: Writer.process answers
    generation = writer.cache.generation
    try:
        statement = writer.decide_from_memory(events, utc_text(utc_now()), fetch=not in_flight)
    except Exception as error:  # noqa: BLE001 - the ordinary way decides again, and answers errors
        if batching.went_unanswered(error):
            writer.failed(batch, error)  # the ordinary way answers it at once: Writer.process
        log.warning("could not decide a batch from memory, recording it the ordinary way: %s", error)
        return None
    return None if statement is None else Ready(batch, events, statement, generation)


def send(writer: Writer, ready: Ready) -> InFlight | None:
    """Sends a prepared batch; None when it could not be sent (nothing was recorded)."""
    statement = ready.statement
    cache = writer.cache
    if ready.generation != cache.generation or statement.head != cache.head:
        return None  # decided on top of something the memory no longer holds
    try:
        sent = writer.recorder.send_collected(statement.collected, statement.head, statement.last_position)
    except Exception as error:  # noqa: BLE001 - recorded the ordinary way by the caller
        if batching.went_unanswered(error):
            writer.failed(ready.batch, error)  # the ordinary way answers it at once: Writer.process
        log.warning("could not send a batch, recording it the ordinary way: %s", error)
        return None
    cache.install(statement.committed)  # not yet committed: see the module's docstring
    writer.recent_keys.remember(ready.events, statement.pending, statement.positions, statement.work.entries)
    return InFlight(ready, sent)


def land(writer: Writer, flight: InFlight) -> bool:
    """Waits for a batch in flight and answers its callers; False when it failed and was recorded
    the ordinary way instead."""
    ready = flight.ready
    statement = ready.statement
    try:
        flight.sent.wait()
    except Exception as error:  # noqa: BLE001 - the ordinary way decides again from the database
        if writer.recorder.lost_optimistic_bet(error):
            writer.cache.withdraw(statement.committed, statement.head)
            writer.recent_keys.withdraw(ready.events, statement.pending)
            writer.lost_bet()
        elif batching.went_unanswered(error):
            # Asked again, the database would be waited for as long, for callers gone long since.
            writer.failed(ready.batch, error)
            batching.give_up(ready.batch, error)
            return False
        else:
            writer.forget()
            log.warning("a batch in flight failed, recording it the ordinary way: %s", error)
        writer.process(ready.batch)
        return False
    writer.optimistic_won += 1
    writer.succeeded()
    writer.published(statement.committed)
    writer.oversold.note(statement.work.entries)
    results = answers(
        ready.batch, ready.events, statement.pending, statement.positions, statement.work.entries
    )
    for submission, result in zip(ready.batch, results, strict=True):
        submission.done(result)
    return True


def begin(writer: Writer, batch: list[Submission]) -> InFlight | None:
    """Sends a batch decided from memory, or records it the ordinary way (then None)."""
    ready = prepare(writer, batch)
    flight = send(writer, ready) if ready is not None else None
    if flight is None:
        writer.process(batch)
    return flight
