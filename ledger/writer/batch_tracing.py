"""The writer's batch as a span (tracing on): from the batch being taken to its last caller being
answered, linked to the span of every request it serves, with their request ids; the batch's
steps (batch_logging.batch_logged) run under it, so that their database spans are its children.

Why links and not a parent: a batch serves many requests, from many traces, and a span has one
parent. Each caller's span crossed the queue or the socket as W3C traceparent text
(Submission.trace_parent); once taken, each submission carries the batch's own instead."""

from __future__ import annotations

from ledger.results import EventResult
from ledger.telemetry import tracing
from ledger.writer.submission import Submission


def caller_trace_parent() -> str | None:
    """What a write carries to the writer: the current span, with tracing on; else None."""
    return None if tracing.active is None else tracing.active.current_trace_parent()


def traced(batch: list[Submission]) -> list[Submission]:
    """The batch, with its span started and ended once every caller is answered; as it is with
    tracing off, and for a readiness probe (no events)."""
    active = tracing.active
    if active is None:
        return batch
    events = sum(len(submission.events) for submission in batch)
    if not events:
        return batch
    from ledger.telemetry.spans import failed, trace_parent_of

    span = active.batch_started([(s.trace_parent, s.request_id) for s in batch], events)
    batch_parent = trace_parent_of(span)
    left = len(batch)

    def answered(submission: Submission) -> Submission:
        def ended(result: list[EventResult] | BaseException) -> None:
            nonlocal left
            left -= 1
            if isinstance(result, BaseException):
                failed(span, result)
            if left == 0:
                span.end()
            submission.done(result)

        return Submission(submission.events, ended, submission.request_id, batch_parent)

    return [answered(submission) for submission in batch]
