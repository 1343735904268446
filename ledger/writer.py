"""The group-commit writer: one per instance decides and records batches of events (as a thread,
ledger/writer_thread.py, or in a process of its own, ledger/writer_process.py).

Callers hand in lists of events and wait. The writer takes whatever has queued up (up to
`batch_events_max`), opens one transaction that holds the log's write lock, decides every event
in arrival order against the current state, records the events and their projections, commits
once, and only then answers each caller. One fsync covers the whole batch, and no decision is
ever made from a state that another transaction could change before the commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ledger.clock import utc_now, utc_text
from ledger.domain.model import (
    Entry,
    EventType,
    Level,
    Outcome,
    RejectionReason,
    Reservation,
    StockEvent,
)
from ledger.domain.rules import LedgerState, apply, decide, expire
from ledger.results import EventResult, Original
from ledger.state_cache import CachedLevel, Commit, StateCache, reservation_from_row
from ledger.storage.codec import encode
from ledger.storage.recorders import LedgerRecorder, SentBatch
from ledger.storage.sql import Deferred, SqlTx
from projections.tables import ProjectionBatch, RecordedEntry, write_batch

log = logging.getLogger("ledger.writer")


Done = Callable[[list[EventResult] | BaseException], None]


@dataclass(slots=True)
class Submission:
    events: list[StockEvent]
    done: Done


@dataclass(frozen=True, slots=True)
class WriterLimits:
    batch_events_max: int
    retries_max: int
    queue_submissions_max: int
    expiry_interval_s: float
    expiry_batch_max: int
    optimistic: bool = True


class WriterUnavailable(Exception):
    """The writer cannot take more work (stopped, or its queue is full)."""


@dataclass(slots=True)
class _Pending:
    """A decided event whose position is known only after the insert."""

    entry_index: int | None = None  # index into the batch's entries, for accepted/rejected
    duplicate_of: Original | None = None
    duplicate_of_entry: int | None = None


@dataclass(slots=True)
class _Work:
    state: LedgerState
    head: int
    versions: Callable[[], dict[str, int]]  # the stores' versions, read with the rest, for the insert
    entries: list[Entry] = field(default_factory=list)
    levels_after: list[tuple[Level, ...]] = field(default_factory=list)


@dataclass(slots=True)
class _Prepared:
    """A batch decided from memory and encoded as one statement's arguments (see _prepare)."""

    work: _Work
    pending: list[_Pending]
    positions: list[int]
    committed: Commit
    collected: dict[str, str]

    @property
    def head(self) -> int:
        return self.work.head

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else self.work.head


@dataclass(slots=True)
class Ready:
    """A batch decided and encoded, not yet sent."""

    batch: list[Submission]
    events: list[StockEvent]
    prepared: _Prepared
    generation: int  # the cache's, when it was decided


@dataclass(slots=True)
class InFlight:
    ready: Ready
    sent: SentBatch


class Writer:
    def __init__(
        self,
        recorder: LedgerRecorder,
        cache: StateCache,
        limits: WriterLimits,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.on_commit = on_commit
        self.cache = cache
        self.limits = limits
        self._queue: queue.Queue[Submission | None] = queue.Queue(limits.queue_submissions_max)
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._running = False
        self._next_expiry_check = 0.0
        self.batches_committed = 0
        self.optimistic_won = 0
        self.optimistic_lost = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finishes what is queued, then stops."""
        if not self._running:
            return
        self._running = False
        self._queue.put(None)
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, events: list[StockEvent], done: Done) -> None:
        if not self._running:
            raise WriterUnavailable("the writer is stopped")
        try:
            self._queue.put_nowait(Submission(events, done))
        except queue.Full:
            raise WriterUnavailable("the writer's queue is full") from None

    def submit_and_wait(self, events: list[StockEvent], timeout_s: float = 60.0) -> list[EventResult]:
        """For callers without an event loop (CLI, tests, the Kafka consumer)."""
        finished = threading.Event()
        outcome: list[list[EventResult] | BaseException] = []

        def done(result: list[EventResult] | BaseException) -> None:
            outcome.append(result)
            finished.set()

        self.submit(events, done)
        if not finished.wait(timeout_s):
            raise TimeoutError("the writer did not answer in time")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.limits.expiry_interval_s)
            except queue.Empty:
                first = None
                if not self._running:
                    break
            batch: list[Submission] = []
            stopping = first is None and not self._running
            if first is not None:
                batch.append(first)
                count = len(first.events)
                while count < self.limits.batch_events_max:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch.append(more)
                    count += len(more.events)
            if batch:
                self._process(batch)
            self._maybe_expire()
            if stopping and self._queue.empty():
                break

    def _process(self, batch: list[Submission]) -> None:
        for attempt in range(self.limits.retries_max + 1):
            try:
                results = self._record(batch)
            except Exception as error:  # noqa: BLE001 - retried: a failed transaction changed nothing,
                # and one that did commit (its acknowledgement lost) answers its events as duplicates
                self.cache.clear(0)
                if attempt < self.limits.retries_max:
                    log.warning("batch failed (attempt %d), retrying: %s", attempt + 1, error)
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    continue
                if len(batch) > 1:
                    # Do not let one submission fail the others: record them one by one.
                    for submission in batch:
                        self._process([submission])
                    return
                log.error("batch failed, giving up: %r", error)
                batch[0].done(error)
                return
            for submission, result in zip(batch, results, strict=True):
                submission.done(result)
            return

    def _record(self, batch: list[Submission]) -> list[list[EventResult]]:
        recorded_at = utc_text(utc_now())
        events = [event for submission in batch for event in submission.events]
        outcome = self._record_optimistically(events, recorded_at)
        if outcome is None:
            with self.recorder.write_transaction() as tx:
                work, known = self._load(tx, events)
                pending = [self._decide(event, work, known) for event in events]
                positions, committed = self._insert(tx, work, recorded_at)
        else:
            work, pending, positions, committed = outcome
        self._committed(committed)
        self.batches_committed += 1
        return _answers(batch, events, pending, positions, work.entries)

    def _record_optimistically(
        self, events: list[StockEvent], recorded_at: str
    ) -> tuple[_Work, list[_Pending], list[int], Commit] | None:
        """One statement instead of a transaction of some fifteen, when this writer's memory
        already holds everything the batch reads: it decides first and bets that nobody else
        wrote since (the log's head is the cache's) and that every event id and new reservation
        id is new. The statement checks all three (the head after taking the lock; the primary
        keys of the dedupe keys and reservations), so a lost bet fails it whole and the batch is
        recorded the ordinary way. None: not tried, or lost."""
        if not self.recorder.one_statement_batches or not self.limits.optimistic:
            return None
        prepared = self._prepare(events, recorded_at)
        if prepared is None:
            return None
        try:
            self.recorder.write_collected(prepared.collected, prepared.head, prepared.last_position)
        except Exception as error:
            if not self.recorder.lost_optimistic_bet(error):
                raise
            self.optimistic_lost += 1
            return None
        self.optimistic_won += 1
        return prepared.work, prepared.pending, prepared.positions, prepared.committed

    # -- one batch in flight (the writer process: ledger/writer_process.py) ----------------------
    #
    # The optimistic batch, split in three so that the next batch is decided while PostgreSQL
    # records this one: `prepare` decides (from memory, on top of a batch still in flight),
    # `send` sends the statement without waiting and puts the batch's effects in this writer's
    # cache at once, `land` waits and answers. The next batch is sent only after `land` said the
    # one before committed: its head check would not catch a failed predecessor otherwise (another
    # writer could have recorded just as many entries). A batch in flight that fails (a lost bet,
    # or anything else) empties the cache, which held its effects, and is recorded the ordinary way;
    # what was decided on top of it is decided again. Only a cache nobody else reads may hold
    # effects not yet committed: the writer process's own (the HTTP workers hear of a batch only
    # once it has committed, through on_commit).

    def prepare(self, batch: list[Submission]) -> Ready | None:
        """Decides a batch from memory; None when it must be recorded the ordinary way."""
        if not self.recorder.one_statement_batches or not self.limits.optimistic:
            return None
        events = [event for submission in batch for event in submission.events]
        generation = self.cache.generation
        try:
            prepared = self._prepare(events, utc_text(utc_now()))
        except Exception as error:  # noqa: BLE001 - the ordinary way decides again, and answers errors
            log.warning("could not decide a batch from memory, recording it the ordinary way: %s", error)
            return None
        return None if prepared is None else Ready(batch, events, prepared, generation)

    def send(self, ready: Ready) -> InFlight | None:
        """Sends a prepared batch; None when it could not be sent (nothing was recorded)."""
        prepared = ready.prepared
        if ready.generation != self.cache.generation or prepared.head != self.cache.head:
            return None  # decided on top of something the cache no longer holds
        try:
            sent = self.recorder.send_collected(prepared.collected, prepared.head, prepared.last_position)
        except Exception as error:  # noqa: BLE001 - recorded the ordinary way by the caller
            log.warning("could not send a batch, recording it the ordinary way: %s", error)
            return None
        self.cache.install(prepared.committed)  # not yet committed: see above
        return InFlight(ready, sent)

    def land(self, flight: InFlight) -> bool:
        """Waits for a batch in flight and answers its callers; False when it failed and was
        recorded the ordinary way instead."""
        ready = flight.ready
        prepared = ready.prepared
        try:
            flight.sent.wait()
        except Exception as error:  # noqa: BLE001 - the ordinary way decides again from the database
            self.cache.clear(0)
            if self.recorder.lost_optimistic_bet(error):
                self.optimistic_lost += 1
            else:
                log.warning("a batch in flight failed, recording it the ordinary way: %s", error)
            self._process(ready.batch)
            return False
        self.optimistic_won += 1
        self.batches_committed += 1
        self._published(prepared.committed)
        answers = _answers(
            ready.batch, ready.events, prepared.pending, prepared.positions, prepared.work.entries
        )
        for submission, result in zip(ready.batch, answers, strict=True):
            submission.done(result)
        return True

    def _prepare(self, events: list[StockEvent], recorded_at: str) -> _Prepared | None:
        """Decides a batch from memory alone and encodes it as one statement's arguments; None
        when memory lacks anything it reads."""
        head = self.cache.head  # read before the values: a newer value then fails the check
        work = self._work_from_memory(events, head)
        if work is None:
            return None
        tx = SqlTx(None, qmark=False, collected={})
        known: dict[tuple[str, str], Original | int] = {}
        pending = [self._decide(event, work, known) for event in events]
        positions, committed = self._insert(tx, work, recorded_at)
        assert tx.collected is not None
        return _Prepared(work, pending, positions, committed, tx.collected)

    def _work_from_memory(self, events: list[StockEvent], head: int) -> _Work | None:
        """The batch's state from the cache alone, or None when the cache lacks any of it."""
        cache = self.cache
        levels: dict[tuple[str, str], Level] = {}
        reservations: dict[tuple[str, str], Reservation] = {}
        versions: dict[str, int] = {}
        for event in events:
            stores = (event.store_id, event.to_store) if event.to_store else (event.store_id,)
            skus = [line.sku for line in event.lines]
            if event.reservation_id:
                held = cache.reservations.get((event.store_id, event.reservation_id))
                if held is not None:
                    reservations[(event.store_id, event.reservation_id)] = held[0].copy()
                    skus += list(held[0].lines)
                elif event.type is not EventType.RESERVATION:
                    return None  # a release or shipment needs the reservation as it is
            for store in stores:
                version = cache.store_versions.get(store)
                if version is None:
                    return None
                versions[store] = version
                for sku in skus:
                    cached = cache.levels.get((store, sku))
                    if cached is None:
                        return None
                    levels[(store, sku)] = cached.level.copy()
        return _Work(LedgerState(levels=levels, reservations=reservations), head, lambda: dict(versions))

    def _load(
        self, tx: SqlTx, events: list[StockEvent]
    ) -> tuple[_Work, dict[tuple[str, str], Original | int]]:
        """Everything the batch reads, asked for at once (one round trip on PostgreSQL), then the
        cache brought up to the log's head before any of it is used."""
        level_keys: set[tuple[str, str]] = set()
        reservation_keys: set[tuple[str, str]] = set()
        stores: set[str] = set()
        for event in events:
            stores.add(event.store_id)
            for line in event.lines:
                level_keys.add((event.store_id, line.sku))
            if event.to_store:
                stores.add(event.to_store)
                level_keys.update((event.to_store, line.sku) for line in event.lines)
            if event.reservation_id:
                reservation_keys.add((event.store_id, event.reservation_id))
        head_read = tx.defer(self.recorder.head_sql)
        keys_read = _read_event_keys(tx, [event.key for event in events])
        reservations_read = self.cache.read_reservations(tx, reservation_keys)
        levels_read = self.cache.read_levels(tx, level_keys)
        versions_read = self.cache.read_store_versions(tx, stores)
        head = int(head_read.rows()[0]["head"])
        self.cache.catch_up(tx, head)
        known = _finish_event_keys(keys_read)
        reservations = reservations_read.finish()
        # A release without lines touches the reservation's SKUs.
        released_keys = {
            (store_id, sku) for (store_id, _), (held, _) in reservations.items() for sku in held.lines
        }
        levels = levels_read.finish(released_keys)
        state = LedgerState(
            levels={key: cached.level.copy() for key, cached in levels.items()},
            reservations={key: held.copy() for key, (held, _) in reservations.items()},
        )
        return _Work(state, head, versions_read.finish), known

    def _decide(
        self, event: StockEvent, work: _Work, known: dict[tuple[str, str], Original | int]
    ) -> _Pending:
        seen = known.get(event.key)
        if isinstance(seen, Original):
            return _Pending(duplicate_of=seen)
        if isinstance(seen, int):
            return _Pending(duplicate_of_entry=seen)
        decision = decide(event, work.state)
        if decision.duplicate_of_position is not None:
            position = decision.duplicate_of_position
            if position < 0:  # placed earlier in this same batch
                return _Pending(duplicate_of_entry=-position - 1)
            return _Pending(duplicate_of=Original(Outcome.ACCEPTED, None, position))
        for entry in decision.entries:
            self._apply(entry, work)
        # The event's own entry comes last (a transfer records the receiving store's entry first),
        # so the position answered includes every entry the event made.
        primary_index = len(work.entries) - 1
        known[event.key] = primary_index
        return _Pending(entry_index=primary_index)

    def _apply(self, entry: Entry, work: _Work) -> None:
        index = len(work.entries)
        apply(entry, work.state, -(index + 1))  # a placeholder position until the insert
        work.entries.append(entry)
        work.levels_after.append(tuple(work.state.level(entry.store_id, e.sku).copy() for e in entry.effects))

    def _insert(self, tx: SqlTx, work: _Work, recorded_at: str) -> tuple[list[int], Commit]:
        """Records the batch's entries and projections; returns their positions and what the
        cache takes once the transaction has committed."""
        if not work.entries:
            return [], Commit({}, {}, {}, work.head + 1, work.head)
        versions = work.versions()
        stored = []
        for entry in work.entries:
            versions[entry.store_id] += 1
            stored.append(encode(entry, versions[entry.store_id], recorded_at))
        positions = self.recorder.insert_entries(tx, stored, work.head)
        assert positions == sorted(positions), "positions must grow in insert order"
        batch = ProjectionBatch()
        for index, entry in enumerate(work.entries):
            batch.add(
                RecordedEntry(positions[index], entry, work.levels_after[index], recorded_at), work.state
            )
        for held, _ in batch.reservations.values():
            if held.placed_at_position < 0:  # placed in this batch: now its position is known
                held.placed_at_position = positions[-held.placed_at_position - 1]
        write_batch(tx, batch)
        # The batch's own objects go to the cache, not copies: this batch's state is not used
        # again once it is recorded (every batch starts from copies of the cache's values).
        installed_levels = {
            key: CachedLevel(level, position, updated_at)
            for key, (level, position, updated_at) in batch.levels.items()
        }
        installed_reservations = dict(batch.reservations)
        return positions, Commit(
            installed_levels, installed_reservations, versions, positions[0], positions[-1]
        )

    # -- expiry -------------------------------------------------------------------------------------

    def _maybe_expire(self) -> None:
        now_monotonic = time.monotonic()
        if now_monotonic < self._next_expiry_check:
            return
        self._next_expiry_check = now_monotonic + self.limits.expiry_interval_s
        try:
            self.expire_due(utc_now())
        except Exception as error:  # noqa: BLE001 - retried at the next interval
            self.cache.clear(0)
            log.warning("reservation expiry failed, will retry: %s", error)

    def expire_due(self, now: datetime) -> int:
        """Records `stock.reservation_expired` for every open reservation due by `now`."""
        due_sql = (
            "SELECT * FROM ledger_reservations WHERE remaining > 0 AND expires_at IS NOT NULL "
            "AND expires_at <= %s ORDER BY expires_at LIMIT %s"
        )
        with self.recorder.read_transaction() as tx:
            if not tx.fetchall(due_sql, (utc_text(now), 1)):
                return 0
        recorded_at = utc_text(utc_now())
        with self.recorder.write_transaction() as tx:
            head = int(tx.defer(self.recorder.head_sql).rows()[0]["head"])
            self.cache.catch_up(tx, head)
            rows = tx.fetchall(due_sql, (utc_text(now), self.limits.expiry_batch_max))
            due = {(row["store_id"], row["reservation_id"]): reservation_from_row(row) for row in rows}
            work = _Work(LedgerState(reservations=due), head, dict)
            keys = set(due)
            level_keys = {
                (store, sku) for (store, _), held in work.state.reservations.items() for sku in held.lines
            }
            levels = self.cache.read_levels(tx, level_keys).finish()
            work.state.levels.update({key: cached.level.copy() for key, cached in levels.items()})
            work.versions = self.cache.read_store_versions(tx, {store for store, _ in keys}).finish
            for key in sorted(keys):
                held = work.state.reservations[key]
                if held.is_open:
                    self._apply(expire(held, now, f"expire:{key[0]}:{key[1]}"), work)
            _, committed = self._insert(tx, work, recorded_at)
        self._committed(committed)
        return len(work.entries)

    def _committed(self, committed: Commit) -> None:
        self.cache.install(committed)
        self._published(committed)

    def _published(self, committed: Commit) -> None:
        if self.on_commit is not None and committed.head >= committed.first_position:
            self.on_commit(committed)


def _read_event_keys(tx: SqlTx, keys: list[tuple[str, str]]) -> list[Deferred]:
    return [
        tx.defer(
            f"SELECT source, event_id, position, outcome, reason FROM ledger_event_keys WHERE {condition}",
            params,
        )
        for condition, params in tx.pairs_in(("source", "event_id"), list(dict.fromkeys(keys)))
    ]


def _finish_event_keys(reads: list[Deferred]) -> dict[tuple[str, str], Original | int]:
    """Keys already recorded, with their first outcome. Keys recorded earlier in the same batch
    are added as the batch is decided (as entry indexes)."""
    found: dict[tuple[str, str], Original | int] = {}
    for read in reads:
        for row in read.rows():
            reason = row["reason"]
            found[(row["source"], row["event_id"])] = Original(
                Outcome(row["outcome"]),
                RejectionReason(reason) if reason else None,
                int(row["position"]),
            )
    return found


def _answers(
    batch: list[Submission],
    events: list[StockEvent],
    pending: list[_Pending],
    positions: list[int],
    entries: list[Entry],
) -> list[list[EventResult]]:
    """Each submission's results, in the order of its events."""
    results = [_result(event, p, positions, entries) for event, p in zip(events, pending, strict=True)]
    answers: list[list[EventResult]] = []
    start = 0
    for submission in batch:
        answers.append(results[start : start + len(submission.events)])
        start += len(submission.events)
    return answers


def _result(event: StockEvent, pending: _Pending, positions: list[int], entries: list[Entry]) -> EventResult:
    if pending.duplicate_of is not None:
        return EventResult(
            event.event_id, event.source, event.store_id, Outcome.DUPLICATE, original=pending.duplicate_of
        )
    if pending.duplicate_of_entry is not None:
        first = entries[pending.duplicate_of_entry]
        original = Original(first.outcome, first.reason, positions[pending.duplicate_of_entry])
        return EventResult(event.event_id, event.source, event.store_id, Outcome.DUPLICATE, original=original)
    assert pending.entry_index is not None
    entry = entries[pending.entry_index]
    return EventResult(
        event.event_id,
        event.source,
        event.store_id,
        entry.outcome,
        entry.reason,
        entry.shortfall,
        positions[pending.entry_index],
    )
