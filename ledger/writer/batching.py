"""How queued submissions become batches, and what happens when a batch fails.

A batch is whatever has queued up, up to `batch_events_max` events (one submission larger than
that is a batch of its own). A failed batch changed nothing (its transaction rolled back) or
committed with its acknowledgement lost (its events then answer as duplicates), so it is tried
again `retries_max` times with a doubling wait; then, unless the database is unavailable (then
every submission is answered so at once), its submissions are tried one by one, so that one bad
submission fails only itself. A submission that fails alone is answered with the database's
unavailability as it is, or else with SubmissionFailed (a retry will not change it).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import TypeVar

from ledger.results import EventResult
from ledger.storage.pg_sessions import NoAnswer
from ledger.writer.submission import Submission, WriterUnavailable, failure_kind

log = logging.getLogger("ledger.writer")

RETRY_WAIT_S_FIRST = 0.05
RETRY_WAIT_S_MAX = 1.0

Item = TypeVar("Item")


def take_batch(items: list[Item], sizes: Callable[[Item], int], batch_events_max: int) -> int:
    """How many of `items`, from the front, make the next batch: at least one, then as many as fit."""
    taken = 0
    count = 0
    for item in items:
        size = sizes(item)
        if taken and count + size > batch_events_max:
            break
        count += size
        taken += 1
    return taken


def drain_queue(
    waiting: queue.Queue[Submission | None], first: Submission, batch_events_max: int
) -> tuple[list[Submission], bool]:
    """`first` and whatever else has queued up that fits; and whether a stop was asked for."""
    batch = [first]
    count = len(first.events)
    while count < batch_events_max:
        try:
            more = waiting.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
        count += len(more.events)
    return batch, False


def give_up(batch: list[Submission], error: BaseException) -> None:
    """Answers every submission of the batch with the failure `error` is."""
    log.error("batch of %d submissions failed, giving up: %r", len(batch), error)
    for submission in batch:  # an exception of its own each: a caller raises it
        submission.done(failure_kind(error))


def went_unanswered(error: BaseException) -> bool:
    """The database did not answer within the writer's answer wait (NoAnswer, maybe wrapped by the
    library's datastore): another try would wait as long again, for callers gone long since."""
    return isinstance(error, NoAnswer) or isinstance(error.__cause__, NoAnswer)


def record_with_retries(
    batch: list[Submission],
    record: Callable[[list[Submission]], list[list[EventResult]]],
    retries_max: int,
    failed: Callable[[list[Submission], BaseException], None],
) -> None:
    """Records a batch and answers every submission in it, whatever happens. `failed` is told of
    every failed attempt (the writer empties its memory, which may hold effects that were never
    committed, and remembers that writes are failing)."""
    for attempt in range(retries_max + 1):
        try:
            results = record(batch)
        except Exception as error:  # noqa: BLE001 - retried: see the module's docstring
            failed(batch, error)
            if attempt < retries_max and not went_unanswered(error):
                log.warning("batch failed (attempt %d), retrying: %s", attempt + 1, error)
                time.sleep(min(RETRY_WAIT_S_FIRST * 2**attempt, RETRY_WAIT_S_MAX))
                continue
            failure = failure_kind(error)
            if len(batch) > 1 and not isinstance(failure, WriterUnavailable):
                for submission in batch:
                    record_with_retries([submission], record, retries_max, failed)
                return
            # The database is unavailable: no submission of the batch would fare better alone, and
            # trying each with its own retries kept the writer from answering anyone meanwhile.
            give_up(batch, error)
            return
        for submission, result in zip(batch, results, strict=True):
            submission.done(result)
        return
