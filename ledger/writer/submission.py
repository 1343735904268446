"""What a caller hands the writer, the writer's limits, and the two kinds of failure callers see
from it: unavailable (re-send later) and failed (re-sending the same will fail the same)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.storage.availability import database_unavailable

Done = Callable[[list[EventResult] | BaseException], None]


@dataclass(slots=True)
class Submission:
    """One caller's events, answered together through `done` once their batch has committed.
    `request_id`: the HTTP request that sent them, named in the writer's log lines for the batch.
    `trace_parent` (tracing on): the span the writer's work for them continues, as W3C traceparent
    text: the caller's when handed in, which the batch's span links to; then the batch's own
    (writer/batch_tracing.py), under which the batch's steps make their spans."""

    events: list[StockEvent]
    done: Done
    request_id: str | None = None
    trace_parent: str | None = None


class Sent(Protocol):
    """Events handed to the writer without waiting (a client's `send`): `wait` answers them as
    `submit_and_wait` would have."""

    def wait(self) -> list[EventResult]: ...

    def poll(self, wait_s: float) -> list[EventResult] | None:
        """As `wait`, but waits at most `wait_s`: None if no answer came meanwhile."""


@dataclass(frozen=True, slots=True)
class Answered:
    """Events already recorded when sent, or why they were not: a writer that records at once."""

    outcome: list[EventResult] | Exception

    @property
    def recorded(self) -> bool:
        return not isinstance(self.outcome, Exception)

    def wait(self) -> list[EventResult]:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def poll(self, wait_s: float) -> list[EventResult]:
        return self.wait()


def answered_now(
    submit_and_wait: Callable[[list[StockEvent]], list[EventResult]],
    events: list[StockEvent],
    after: Sent | None = None,
) -> Answered:
    """`send` for a writer that records before it answers; after events that were not recorded,
    nothing is tried (NotTried), as writer/chains.py has it."""
    assert after is None or isinstance(after, Answered), f"not sent here: {after!r}"
    if after is not None and not after.recorded:
        return Answered(NotTried("not tried: the events sent before them were not recorded"))
    try:
        return Answered(submit_and_wait(events))
    except Exception as error:  # noqa: BLE001 - raised again by wait(), as submit_and_wait would
        return Answered(error)


@dataclass(frozen=True, slots=True)
class WriterLimits:
    batch_events_max: int
    retries_max: int
    queue_submissions_max: int
    expiry_interval_s: float
    expiry_batch_max: int
    optimistic: bool = True
    slow_batch_s: float = 1.0  # a batch slower than this is logged (writer/stats.py)


class WriterUnavailable(Exception):
    """The writer cannot take or answer this work now (stopped, its queue full, its process gone,
    or its database failing); nothing the caller did was wrong, and re-sending is safe."""


class WrongDatabase(WriterUnavailable):
    """The writer process at the socket records into another database than the client's: nothing
    was sent to it (a service started on another ledger with the same LEDGER_WRITER_SOCKET)."""


class NotTried(WriterUnavailable):
    """A submission that follows another (writer/chains.py), which was not recorded: nothing of
    it was tried, and it is to be sent again once the one it follows is recorded. It says nothing
    of whether writes can be recorded."""


class SubmissionFailed(Exception):
    """The writer tried this submission, with its retries, and could not record it for a reason
    other than its database being unavailable (a bug, or an input it cannot store): nothing of it
    was recorded, and re-sending the same events will fail the same way. `reason` is readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def failure_kind(error: BaseException) -> WriterUnavailable | SubmissionFailed:
    """What a caller is told when its submission could not be recorded, whichever way it reaches
    the writer (thread or process): WriterUnavailable when the database is unavailable
    (storage.availability's one classification), else SubmissionFailed. Either is caused by
    `error`, so that the service still sees the database's error behind it."""
    if isinstance(error, WriterUnavailable | SubmissionFailed):
        return error  # NotTried among them
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    failure = WriterUnavailable(reason) if database_unavailable(error) else SubmissionFailed(reason)
    failure.__cause__ = error
    return failure
