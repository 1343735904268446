"""What the writer tells the metrics endpoint: its batches' sizes, how long a batch takes from
being taken to its commit being answered, how many requests wait, and the requests it turned away.

The writer keeps them as plain values (telemetry.histogram). In its own process it sends a
snapshot to every subscribed HTTP worker at most every STATS_INTERVAL_S (wire.StatsReport), and
each worker's /metrics shows the last one it heard: the writer's totals, whichever worker answers
the scrape. As a thread, the ledger reads them directly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ledger.results import EventResult
from ledger.telemetry.histogram import SECONDS_BOUNDS, Histogram, Snapshot
from ledger.writer.submission import Submission, SubmissionFailed

log = logging.getLogger("ledger.writer")

STATS_INTERVAL_S = 1.0  # how often the writer process sends its figures to the HTTP workers
BATCH_EVENTS_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
COMMIT_SECONDS_BOUNDS = SECONDS_BOUNDS
# Why a request was turned away: the queue was full (never tried), it could not be recorded now
# (the database unavailable: safe to re-send), or it failed for good (SubmissionFailed).
QUEUE_FULL = "queue_full"
UNAVAILABLE = "unavailable"
REFUSED = "refused"
REJECT_REASONS = (QUEUE_FULL, UNAVAILABLE, REFUSED)


@dataclass(frozen=True, slots=True)
class WriterStatsSnapshot:
    batch_events: Snapshot
    commit_seconds: Snapshot
    rejects: tuple[int, ...]  # in REJECT_REASONS' order
    queued_requests: int
    # Batches sent as one statement that committed, and that lost their bet (rolled back whole and
    # recorded the ordinary way): many lost tell of another writer, or of what memory lacks.
    one_statement: tuple[int, int] = (0, 0)
    oversold_lines: int = 0  # lines recorded past what their store held (writer/oversold.py)

    def plain(self) -> tuple[Snapshot, Snapshot, tuple[int, ...], int, tuple[int, int], int]:
        return (
            self.batch_events,
            self.commit_seconds,
            self.rejects,
            self.queued_requests,
            self.one_statement,
            self.oversold_lines,
        )


class WriterStats:
    def __init__(self, slow_batch_s: float) -> None:
        self.slow_batch_s = slow_batch_s
        self.batch_events = Histogram(BATCH_EVENTS_BOUNDS)
        self.commit_seconds = Histogram(COMMIT_SECONDS_BOUNDS)
        self.rejects = dict.fromkeys(REJECT_REASONS, 0)

    def timed(self, batch: list[Submission]) -> list[Submission]:
        """The batch, its answers counted: once every caller of it is answered, its size and its
        time since now are observed, and logged when slow (the line names the batch's requests:
        see batch_logging.py); a readiness probe, with no events, is not a batch. A caller
        answered with an error is a reject."""
        events = sum(len(submission.events) for submission in batch)
        if not events:
            return batch
        started = time.perf_counter()
        left = len(batch)
        failed = False

        def answered(done: Submission) -> Submission:
            def counted(result: list[EventResult] | BaseException) -> None:
                nonlocal left, failed
                left -= 1
                if isinstance(result, BaseException):
                    failed = True
                    self.rejects[REFUSED if isinstance(result, SubmissionFailed) else UNAVAILABLE] += 1
                if left == 0 and not failed:
                    seconds = time.perf_counter() - started
                    self.commit_seconds.observe(seconds)
                    self.batch_events.observe(events)
                    if seconds >= self.slow_batch_s:
                        log.warning(
                            "a batch of %d events from %d requests took %.1f ms from taken to answered",
                            events,
                            len(batch),
                            seconds * 1000,
                        )
                done.done(result)

            return Submission(done.events, counted, done.request_id, done.trace_parent)

        return [answered(submission) for submission in batch]

    def queue_full(self) -> None:
        self.rejects[QUEUE_FULL] += 1

    def snapshot(
        self, queued_requests: int, one_statement: tuple[int, int] = (0, 0), oversold_lines: int = 0
    ) -> WriterStatsSnapshot:
        """`one_statement`: the writer's batches sent as one statement, (committed, lost)."""
        return WriterStatsSnapshot(
            self.batch_events.snapshot(),
            self.commit_seconds.snapshot(),
            tuple(self.rejects[reason] for reason in REJECT_REASONS),
            queued_requests,
            one_statement,
            oversold_lines,
        )
