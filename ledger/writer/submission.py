"""What a caller hands the writer, the writer's limits, and the two kinds of failure callers see
from it: unavailable (re-send later) and failed (re-sending the same will fail the same)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        return error
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    failure = WriterUnavailable(reason) if database_unavailable(error) else SubmissionFailed(reason)
    failure.__cause__ = error
    return failure
