"""The writer: runs one batch through deciding and recording, and answers its callers.

Callers hand in lists of events and wait. A batch (see batching) is decided in arrival order
against the current state and recorded as one transaction that holds the log's write lock; only
after the commit is each caller answered. One fsync covers the whole batch, and no decision is
ever made from a state that another transaction could change before the commit.

How it reaches the callers is someone else's: a thread of this process (thread.py) or a process
of its own (process.py and server.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from ledger.clock import utc_now, utc_text
from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.state_cache import Commit, StateCache
from ledger.storage.availability import database_unavailable
from ledger.storage.recorders import LedgerRecorder
from ledger.writer import batching, deciding, expiry
from ledger.writer.answers import answers
from ledger.writer.oversold import OversoldWatch
from ledger.writer.recent_keys import RecentKeys
from ledger.writer.recording import OneStatement, encode_one_statement, insert
from ledger.writer.submission import Submission, WriterLimits, WriterUnavailable

log = logging.getLogger("ledger.writer")

# How long after a lost bet the writer records the ordinary way, under the lock, instead of betting:
# with a second writer on the database, most bets are lost (each costs deciding twice). Long enough
# to cover a steady second writer, short enough that a lone writer soon bets again.
CONTENDED_S = 1.0
# How long a failed batch makes readiness probes fail: a probe after it asks the database again, so
# that an instance nobody sends writes to can become ready.
FAILURE_HOLD_S = 5.0


class Writer:
    def __init__(
        self,
        recorder: LedgerRecorder,
        cache: StateCache,
        limits: WriterLimits,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.cache = cache
        self.limits = limits
        self.on_commit = on_commit
        self.expiry = expiry.ExpirySchedule(limits.expiry_interval_s)
        self.stuck_expiries = expiry.StuckExpiries()
        self.recent_keys = RecentKeys()  # filled only where batches are decided from memory
        self.batches_committed = 0
        # The last failure of a batch with events, and when (see _refused_as_probe).
        self.failure: str | None = None
        self.failed_at = 0.0
        # When the database last did not answer within the answer wait (NoAnswer): for
        # FAILURE_HOLD_S after it, batches are answered unavailable at once (unanswered_lately).
        self.unanswered_at: float | None = None
        # Until then (monotonic), another writer was seen recording: memory is brought to the
        # database's head before each batch is decided from it (see decide_from_memory).
        self._contended_until = 0.0
        self.optimistic_won = 0
        self.optimistic_lost = 0
        self.oversold = OversoldWatch()
        # The database it records into (storage.database_urls.database_identity), told to each client
        # of the writer process that asks (wire.Identify); set by whoever built the recorder.
        self.database: str | None = None

    @property
    def one_statement_batches(self) -> bool:
        return bool(self.recorder.one_statement_batches) and self.limits.optimistic

    def process(self, batch: list[Submission]) -> None:
        """Records a batch and answers every submission in it (retrying as batching says).
        Readiness probes (empty submissions) that queued up with writes are answered after them,
        as probes: a write that failed and was then tried alone must not let a probe through
        that commits nothing (a full disk grants an empty transaction)."""
        if self.unanswered_lately():
            # It did not answer a moment ago, after a whole answer wait: asked again now, it
            # would be waited for as long, for callers that gave up long since.
            failure = f"the database did not answer a moment ago: {self.failure}"
            for submission in batch:
                submission.done(WriterUnavailable(failure))
            return
        writes = [submission for submission in batch if submission.events]
        probes = [submission for submission in batch if not submission.events]
        if writes:
            batching.record_with_retries(writes, self.record, self.limits.retries_max, self.failed)
        if probes and not self._refused_as_probe(probes):
            batching.record_with_retries(probes, self.record, self.limits.retries_max, self.failed)

    def _refused_as_probe(self, probes: list[Submission]) -> bool:
        """An empty batch is how readiness asks whether writes can be recorded. It takes the write
        lock and commits nothing, which a full disk lets through: for FAILURE_HOLD_S after a batch
        with events failed, whatever committed since, it is answered "no" at once, without
        asking the database (and without counting as a failure of its own). After the hold a
        probe asks the database again, so that an instance nobody sends writes to can recover."""
        if self.failure is None:
            return False
        if time.monotonic() - self.failed_at >= FAILURE_HOLD_S:
            return False
        for probe in probes:
            probe.done(WriterUnavailable(f"the last batch failed: {self.failure}"))
        return True

    def failed(self, batch: list[Submission], error: BaseException) -> None:
        """A batch failed: forget what memory holds; if it had events, tell probes for a while."""
        self.forget()
        unanswered = batching.went_unanswered(error)
        if unanswered or any(submission.events for submission in batch):
            self.failure = f"{type(error).__name__}: {error}"
            self.failed_at = time.monotonic()
        if unanswered:
            self.unanswered_at = self.failed_at

    def unanswered_lately(self) -> bool:
        """Whether the database did not answer within the last FAILURE_HOLD_S."""
        return self.unanswered_at is not None and time.monotonic() - self.unanswered_at < FAILURE_HOLD_S

    def succeeded(self) -> None:
        """A batch committed. It does not end the probes' hold: a database that stores some rows
        and not others (a disk full but for a page here and there) is not one to send writes to;
        the hold ends FAILURE_HOLD_S after the last failure."""
        self.batches_committed += 1

    def forget(self) -> None:
        """Empties the writer's memory: after a failure it may hold what never committed."""
        self.cache.clear(0)
        self.recent_keys.clear()

    def record(self, batch: list[Submission]) -> list[list[EventResult]]:
        """One attempt: from memory in one statement when it can, else under the write lock."""
        recorded_at = utc_text(utc_now())
        events = [event for submission in batch for event in submission.events]
        statement = self._record_in_one_statement(events, recorded_at)
        if statement is not None:
            work, pending, positions, committed = (
                statement.work,
                statement.pending,
                statement.positions,
                statement.committed,
            )
        else:
            with self.recorder.write_transaction(bounded=True) as tx:
                work, known = deciding.work_from_database(self.recorder, self.cache, tx, events)
                pending = [deciding.decide_event(event, work, known) for event in events]
                positions, committed = insert(self.recorder, tx, work, recorded_at)
        self.committed(committed)
        self.oversold.note(work.entries)
        if self.one_statement_batches:
            self.recent_keys.remember(events, pending, positions, work.entries)
        self.succeeded()
        return answers(batch, events, pending, positions, work.entries)

    def _record_in_one_statement(self, events: list[StockEvent], recorded_at: str) -> OneStatement | None:
        """One statement instead of a transaction of some fifteen, when this writer's memory
        holds everything the batch reads: it decides first and bets that nobody else wrote since
        (the log's head is the cache's) and that every event id and new reservation id is new.
        The statement checks all three (the head after taking the lock; the primary keys of the
        dedupe keys and reservations), so a lost bet fails it whole and the batch is recorded the
        ordinary way. None: not tried, or lost."""
        if not self.one_statement_batches:
            return None
        statement = self.decide_from_memory(events, recorded_at)
        if statement is None:
            return None
        try:
            self.recorder.write_collected(statement.collected, statement.head, statement.last_position)
        except Exception as error:
            if not self.recorder.lost_optimistic_bet(error):
                raise
            self.lost_bet()
            return None
        self.optimistic_won += 1
        return statement

    def lost_bet(self) -> None:
        """Another writer recorded since memory's head (or took an id first): for a while, record
        the ordinary way, where nothing is lost, instead of losing a bet on most batches."""
        self.optimistic_lost += 1
        self._contended_until = time.monotonic() + CONTENDED_S

    def decide_from_memory(
        self, events: list[StockEvent], recorded_at: str, *, fetch: bool = True
    ) -> OneStatement | None:
        """Decides a batch from memory alone and encodes it as one statement's arguments. With
        `fetch`, memory is first brought to the database's head and given the keys it lacks
        (outside the lock) when it lacks some; None when that cannot be done, or when another
        writer was seen lately."""
        if time.monotonic() < self._contended_until:
            return None
        head = self.cache.head  # read before the values: a newer value then fails the check
        work = deciding.work_from_memory(self.cache, events, head)
        known = self.recent_keys.known(events)
        pending: list[deciding.Pending] = []
        if work is not None:
            try:
                pending = [deciding.decide_event(event, work, known) for event in events]
            except deciding.NotInMemory:
                work = None  # a sourcing candidate's level: fetched with the rest of the keys
        fetched = work is None and fetch
        if fetched and deciding.catch_up_and_fetch(self.recorder, self.cache, events):
            return self.decide_from_memory(events, recorded_at, fetch=False)
        if (
            work is None
            and not fetch
            and deciding.read_absent_reservations(self.recorder, self.cache, events)
        ):
            # A batch in flight (no fetch), and all this one lacked was ids it now knows absent.
            return self.decide_from_memory(events, recorded_at, fetch=False)
        if work is None:
            return None
        if any(answer.refusal is not None for answer in pending):
            # A command refused whole records nothing, so the statement would never check the bet
            # that its id is new: the same request again (a duplicate) would be refused instead.
            # The ordinary way reads its key first.
            return None
        return encode_one_statement(self.recorder, work, pending, recorded_at)

    # -- expiry, between batches ---------------------------------------------------------------

    def maybe_expire(self) -> None:
        if not self.expiry.due() or self.unanswered_lately():
            return
        now = utc_now()
        try:
            self.expire_due(now)
        except Exception as error:  # noqa: BLE001 - retried at the next interval
            self.forget()
            if database_unavailable(error):  # no reservation's fault: every one would wait for it alone
                log.warning("reservation expiry failed, will retry: %s", error)
                return
            log.warning("reservation expiry failed, will record the due ones one at a time: %s", error)
            self.expire_one_at_a_time(now)

    def expire_due(self, now: datetime | None = None) -> int:
        """Records `stock.reservation_expired` for every open reservation due by `now`."""
        count, committed = expiry.expire_due(
            self.recorder,
            self.cache,
            now or utc_now(),
            self.limits.expiry_batch_max,
            self.stuck_expiries.left_out(),
        )
        if committed is not None:
            self.committed(committed)
        return count

    def expire_one_at_a_time(self, now: datetime) -> None:
        """After a failed turn: each due reservation alone, so that one that cannot be recorded
        holds back no other (see expiry.py)."""
        failed: list[tuple[expiry.Key, Exception]] = []
        succeeded = 0
        try:
            keys = expiry.due_keys(
                self.recorder, now, expiry.ALONE_PER_TURN_MAX, self.stuck_expiries.left_out()
            )
        except Exception as error:  # noqa: BLE001 - retried at the next interval
            log.warning("reservation expiry failed again: %s", error)
            return
        for key in keys:
            try:
                _, committed = expiry.expire_due(self.recorder, self.cache, now, 1, only=key)
            except Exception as error:  # noqa: BLE001 - judged below
                self.forget()
                if database_unavailable(error):
                    log.warning("reservation expiry failed again: %s", error)
                    return  # the database went away: no reservation is to blame, each waits
                failed.append((key, error))
                continue
            if committed is not None:  # (none: released or expired meanwhile, which proves nothing)
                self.committed(committed)
                succeeded += 1
        if not succeeded:
            return  # every one failed: the database, not a reservation, is the cause
        for (store_id, reservation_id), cause in failed:
            self.stuck_expiries.add((store_id, reservation_id))
            log.warning(
                "the expiry of reservation %s at store %s cannot be recorded; the others go on, and it "
                "is tried again in %.0f s: %s",
                reservation_id,
                store_id,
                self.stuck_expiries.retry_s,
                cause,
            )

    # -- after a commit --------------------------------------------------------------------------

    def committed(self, commit: Commit) -> None:
        self.cache.install(commit)
        self.published(commit)

    def published(self, commit: Commit) -> None:
        if self.on_commit is not None and commit.head >= commit.first_position:
            self.on_commit(commit)
