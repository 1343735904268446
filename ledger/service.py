"""The ledger as the entry points see it: submit events, read levels, history and reservations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ledger.clock import utc_text
from ledger.domain.model import Level, Policy, Reservation, StockEvent
from ledger.domain.policy import effective_policy, limit_units, line_limit_units
from ledger.projections import queries
from ledger.projections.explain import Explanation, explain
from ledger.projections.queries import HistoryFilter
from ledger.projections.timeline import TimelineWindow, timeline_points
from ledger.results import EventResult
from ledger.sql import SqlTx
from ledger.state_cache import CachedLevel, StateCache, level_from_row, policy_from_text, reservation_from_row
from ledger.storage.availability import database_unavailable
from ledger.storage.pg_sessions import answers_awaited_at_most
from ledger.storage.recorders import LedgerRecorder
from ledger.writer.stats import WriterStatsSnapshot
from ledger.writer.submission import NotTried, Sent, SubmissionFailed

log = logging.getLogger("ledger.service")


@dataclass(frozen=True, slots=True)
class LevelView:
    store_id: str
    sku: str
    level: Level
    position: int
    updated_at: str | None
    policy: Policy | None = None  # the one that applies to the store and SKU (CONTRACT §6)


@dataclass(frozen=True, slots=True)
class ReservationView:
    reservation: Reservation
    position: int


def _occurred_views(
    tx: Any, store_id: str, skus: list[str], rows: dict[str, Any], occurred_at: str
) -> list[LevelView]:
    """The levels summed at an event time (queries.levels_occurred_at; a SKU without a row: nothing
    by then), each with the policy in force then and its channels' reserved units then (CONTRACT
    §6: every stock answer carries the policy figures)."""
    stored = queries.policies_occurred_at(tx, store_id, skus, occurred_at)
    policies = {key: policy_from_text(text) for key, text in stored.items()}
    channels = queries.channels_occurred_at(tx, store_id, [sku for sku in skus if sku in rows], occurred_at)
    views = []
    for sku in skus:
        policy = effective_policy(policies, sku)
        row = rows.get(sku)
        if row is None or row["position"] is None:
            views.append(LevelView(store_id, sku, Level(), 0, None, policy))
            continue
        level = Level(int(row["on_hand"]), int(row["reserved"]), int(row["incoming"]), channels.get(sku))
        views.append(LevelView(store_id, sku, level, int(row["position"]), row["updated_at"], policy))
    return views


class WriterPort(Protocol):
    """How the ledger reaches its writer: a thread here (ThreadWriterClient) or the writer
    process (RemoteWriter)."""

    @property
    def alive(self) -> bool: ...
    @property
    def commits_seen(self) -> int: ...
    @property
    def stats(self) -> WriterStatsSnapshot | None: ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    async def subscribe(self) -> None: ...
    async def submit(self, events: list[StockEvent]) -> list[EventResult]: ...
    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]: ...
    @property
    def sends_ahead(self) -> bool: ...
    def send(self, events: list[StockEvent], after: Sent | None = None) -> Sent: ...


@dataclass(frozen=True, slots=True)
class _Sent:
    """Ledger.send's handle: the writer's, its answer noted as submit_and_wait notes it."""

    ledger: Ledger
    inner: Sent

    def wait(self) -> list[EventResult]:
        results = self.poll(None)
        assert results is not None
        return results

    def poll(self, wait_s: float | None) -> list[EventResult] | None:
        try:
            results = self.inner.wait() if wait_s is None else self.inner.poll(wait_s)
        except Exception:
            with self.ledger._write_outcome():
                raise
        if results is not None:
            with self.ledger._write_outcome():
                pass  # an answer: writes are recorded
            self.ledger._count(results)
        return results


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or refuses the operation, for now (down, restarting, locked,
    read-only or full); nothing the caller sent was wrong, and a retry may succeed."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(f"{operation}: {type(cause).__name__}: {cause}")
        self.operation = operation
        self.cause_name = type(cause).__name__


# How long the outcome of the last write (or readiness probe) stands for whether writes can be
# recorded now; past it, /readyz asks the writer again (see Ledger.writes_unready).
WRITE_EVIDENCE_S = 1.0
# How long a real write's failure outranks a probe's success: a probe records nothing, and a
# database that grants the write lock but cannot store a row (a full disk) lets it through.
WRITE_FAILURE_HOLD_S = 5.0
# How long a readiness probe (an empty batch through the writer) may take before writes count as
# not recordable: a writer or database slower than this cannot serve its callers either.
READY_PROBE_TIMEOUT_S = 2.0


class WriteHealth:
    """Whether writes can be recorded now, as far as this process has seen: the outcome of the
    last write (HTTP or Kafka) or readiness probe. Real writes outrank probes: a probe records
    nothing, and a database that grants the write lock but cannot store a row (a full disk) lets
    it through. So a real write's failure stands for WRITE_FAILURE_HOLD_S without a probe, and a
    probe's outcome is dropped when a real write ended while it ran."""

    def __init__(self) -> None:
        self.failure: str | None = None  # why the last write failed; None if it was recorded
        self._noted_at = -WRITE_FAILURE_HOLD_S
        self._real_noted_at = -WRITE_FAILURE_HOLD_S
        self._real_failed = False
        self._lock = threading.Lock()  # the event loop and the Kafka consumer's thread both note

    def note(self, failure: str | None, *, probe_started_at: float | None = None) -> None:
        """The outcome of a write, or (with the time it started) of a probe. For
        WRITE_FAILURE_HOLD_S after a real write failed, nothing that succeeds clears it: a database
        that stores some rows and not others (a disk that is full but for a page here and there) is
        not one to send writes to."""
        with self._lock:
            now = time.monotonic()
            if probe_started_at is not None and self._real_noted_at >= probe_started_at:
                return
            if failure is None and self._real_failed and now - self._real_noted_at <= WRITE_FAILURE_HOLD_S:
                return
            if failure is not None and self.failure is None:
                log.warning("writes cannot be recorded: %s", failure)
            elif failure is None and self.failure is not None:
                log.warning("writes are recorded again")
            self.failure = failure
            self._noted_at = now
            if probe_started_at is None:
                self._real_noted_at = now
                self._real_failed = failure is not None

    def settled(self) -> bool:
        """Do recent outcomes answer the question, without a probe?"""
        with self._lock:
            now = time.monotonic()
            if now - self._noted_at <= WRITE_EVIDENCE_S:
                return True
            return self._real_failed and now - self._real_noted_at <= WRITE_FAILURE_HOLD_S


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# How long a periodic refresh lets this instance's own commits reach its cache before reading
# them back from the database (see Ledger.refresh). Other instances' writes wait as much longer.
REFRESH_GRACE_S = 0.02
# How long a head that this instance's own writer announced (a batch in flight) is waited for.
ANNOUNCED_WAIT_S = 1.0


class Ledger:
    def __init__(
        self,
        recorder: LedgerRecorder,
        cache: StateCache,
        writer: WriterPort,
        *,
        refresh_interval_s: float,
        wait_for_position_s_max: float,
        read_answer_wait_s: float | None = None,
    ) -> None:
        self.recorder = recorder
        self.cache = cache
        self.writer = writer
        self.refresh_interval_s = refresh_interval_s
        self.wait_for_position_s_max = wait_for_position_s_max
        self.read_answer_wait_s = read_answer_wait_s
        self._refresher = threading.Thread(target=self._refresh_loop, name="ledger-refresh", daemon=True)
        self._stopping = threading.Event()
        self.database_ok = True
        self.outcome_counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()  # the event loop and the Kafka consumer both count
        self.write_health = WriteHealth()
        self._probe_lock = asyncio.Lock()
        self._ping: asyncio.Future[bool] | None = None  # the database probe under way, shared

    def start(self) -> None:
        self.writer.start()
        self._refresher.start()

    def stop(self) -> None:
        self._stopping.set()
        self.cache.wake.set()
        self.writer.stop()
        self._refresher.join(5)
        self.recorder.close()

    # -- writes -----------------------------------------------------------------------------------

    async def submit(self, events: list[StockEvent]) -> list[EventResult]:
        """Records the events (one batch with whatever else is queued); answers after the commit.
        Raises WriterUnavailable, TimeoutError or DatabaseUnavailable when they were not recorded
        (or, for a timeout, may have been: re-sending the same source and id is safe), and
        SubmissionFailed when they cannot be (re-sending the same fails the same)."""
        with self._write_outcome():
            results = await self.writer.submit(events)
        self._count(results)
        return results

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        """The same, for callers without an event loop (the Kafka consumer, the CLI, tests)."""
        with self._write_outcome():
            results = self.writer.submit_and_wait(events)
        self._count(results)
        return results

    @property
    def sends_ahead(self) -> bool:
        """Whether `send` leaves the events with the writer (its own process) rather than
        recording them before it returns (the writer thread)."""
        return self.writer.sends_ahead

    def send(self, events: list[StockEvent], after: Sent | None = None) -> Sent:
        """The same, without waiting: the answer is the returned handle's `wait()`. With `after`
        (sent here before), they are recorded only if those were, and answered NotTried if not
        (writer/chains.py): so a caller can keep two batches in the writer and still have its
        events recorded in the order it sent them."""
        inner = after.inner if isinstance(after, _Sent) else after
        # Sent is not recorded (the writer process answers later): only a failure to send is noted
        # here; the handle notes the answer.
        with self._write_outcome(sent_only=True):
            return _Sent(self, self.writer.send(events, inner))

    @property
    def write_failure(self) -> str | None:
        """Why the last write (or readiness probe) here could not be recorded; None if it was."""
        return self.write_health.failure

    @contextlib.contextmanager
    def _write_outcome(self, sent_only: bool = False) -> Iterator[None]:
        """Notes whether a write was recorded (for /readyz); a database error from the writer
        thread becomes DatabaseUnavailable (the writer process reports it as WriterUnavailable).
        A SubmissionFailed says nothing of whether writes can be recorded: it is not noted, and
        neither is a write only sent (`sent_only`) that did not fail."""
        try:
            yield
        except (SubmissionFailed, NotTried):
            raise
        except Exception as error:
            self.write_health.note(_why(error))
            if database_unavailable(error):
                raise DatabaseUnavailable("recording events", error) from error
            raise
        if not sent_only:
            self.write_health.note(None)

    async def writes_unready(self) -> str | None:
        """Why writes cannot be recorded now, or None when they can: from the outcome of recent
        writes (WriteHealth), else from an empty batch through the writer, which takes the
        database's write lock and lets it go. Concurrent callers share one probe."""
        async with self._probe_lock:
            if not self.write_health.settled():
                started = time.monotonic()
                try:
                    await asyncio.wait_for(self.writer.submit([]), READY_PROBE_TIMEOUT_S)
                except TimeoutError:
                    failure = f"the writer did not answer an empty batch within {READY_PROBE_TIMEOUT_S} s"
                    self.write_health.note(failure, probe_started_at=started)
                except Exception as error:  # noqa: BLE001 - any failure means not ready; it says why
                    self.write_health.note(_why(error), probe_started_at=started)
                else:
                    self.write_health.note(None, probe_started_at=started)
            return self.write_health.failure

    @contextlib.contextmanager
    def reading(self, operation: str, *, one_moment: bool = False) -> Iterator[SqlTx]:
        """A read that reaches the database, for a caller that waits: each wait for the server ends
        after `read_answer_wait_s` (a server that froze holds no thread of the readers' for good),
        and the database's unavailability becomes DatabaseUnavailable. Each statement sees the
        database as it is when it runs; `one_moment`: all of them see one snapshot, for an answer
        of several statements (a position, levels and policies read each at its own moment had a
        write committed between them in the levels of an answer whose position said it was not).
        On PostgreSQL that costs one round trip more (the COMMIT's)."""
        with (
            self._reading(operation),
            self.recorder.snapshot_transaction(answer_wait_s=self.read_answer_wait_s)
            if one_moment
            else self.recorder.read_transaction(answer_wait_s=self.read_answer_wait_s) as tx,
        ):
            yield tx

    def reads_bounded(self) -> contextlib.AbstractContextManager[None]:
        """For code that reads with connections of its own from the ledger's pool (the console's
        plug-ins): each wait for the server within it ends as `reading`'s do."""
        return answers_awaited_at_most(self.read_answer_wait_s)

    @contextlib.contextmanager
    def _reading(self, operation: str) -> Iterator[None]:
        """A read that reaches the database: its unavailability becomes DatabaseUnavailable."""
        try:
            yield
        except Exception as error:
            if database_unavailable(error):
                self.database_ok = False
                raise DatabaseUnavailable(operation, error) from error
            raise

    def _count(self, results: list[EventResult]) -> None:
        with self._counts_lock:
            self.outcome_counts.update(result.outcome.value for result in results)

    # -- keeping the read cache current with other instances' writes --------------------------------

    def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            woken = self.cache.wake.wait(self.refresh_interval_s)
            self.cache.wake.clear()
            # Woken: the cache saw a gap in the commits it was told of; catch up at once.
            self.refresh(grace_s=0.0 if woken else REFRESH_GRACE_S)

    def refresh(self, grace_s: float = 0.0) -> None:
        """Brings the cache to the log's head. With a grace, a head newer than the cache's is
        first given that long to arrive the cheap way: this instance's own writer tells the
        cache of every commit just after it, and a periodic refresh that catches up in between
        read back, from the database, whole batches the cache was about to be told of (seen:
        a sixth of the HTTP worker's time under 1,000-event batches)."""
        try:
            if grace_s > 0:
                with self.recorder.read_transaction(answer_wait_s=self.read_answer_wait_s) as tx:
                    head = self.recorder.head(tx)
                if head > self.cache.head:
                    self._wait_for_commit(head, grace_s)
                if self.cache.head >= head:  # what was committed by then has arrived
                    self.database_ok = True
                    return
            with self.recorder.read_transaction(answer_wait_s=self.read_answer_wait_s) as tx:
                self.cache.catch_up(tx, self.recorder.head(tx))
            self.database_ok = True
        except Exception as error:  # noqa: BLE001 - reported by /readyz, retried next interval
            if self.database_ok:
                log.warning("database unreachable: %s", error)
            self.database_ok = False

    def _wait_for_commit(self, head: int, grace_s: float) -> None:
        """Gives the commits up to `head` time to arrive from this instance's own writer: the
        grace, or, when the writer announced a batch reaching that far, up to ANNOUNCED_WAIT_S
        (a big batch can take longer than the grace; seen: the HTTP worker reading back whole
        1,000-event batches). A gap the cache noticed (another instance wrote) ends the wait."""
        cache = self.cache
        wait_s = ANNOUNCED_WAIT_S if head <= cache.announced else grace_s
        deadline = time.monotonic() + wait_s
        while cache.head < head and not cache.wake.is_set() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, grace_s))

    async def wait_for_position(self, position: int) -> bool:
        """Waits (bounded) until this instance's state includes `position`."""
        deadline = time.monotonic() + self.wait_for_position_s_max
        while self.cache.head < position:
            if time.monotonic() > deadline:
                return False
            await asyncio.to_thread(self.refresh)
            if self.cache.head < position:
                await asyncio.sleep(0.01)
        return True

    # -- reads --------------------------------------------------------------------------------------

    def levels(self, store_id: str, skus: list[str]) -> list[LevelView]:
        """Current levels: from memory when cached, else one database read."""
        generation = self.cache.generation
        head = self.cache.head
        views: dict[str, LevelView] = {}
        missing = []
        store_policies = self.cache.store_policies.get(store_id)
        if store_policies is None:
            missing = list(skus)  # read with the store's policies, at one snapshot
        else:
            for sku in skus:
                cached = self.cache.get_level((store_id, sku))
                if cached is None:
                    missing.append(sku)
                else:
                    policy = effective_policy(store_policies, sku)
                    views[sku] = LevelView(store_id, sku, cached.level, head, cached.updated_at, policy)
        if missing:
            with self.reading("reading levels", one_moment=True) as tx:
                # Sent together: on PostgreSQL one round trip (with the snapshot's BEGIN), and one
                # for its COMMIT.
                head_read = tx.defer(self.recorder.head_sql)
                levels_read = queries.current_levels_sent(tx, store_id, missing)
                policies_read = (
                    queries.store_policies_sent(tx, [store_id]) if store_policies is None else None
                )
                snapshot_head = int(head_read.rows()[0]["head"])
                rows = levels_read()
                if policies_read is not None:
                    stored = policies_read()[store_id]
                    store_policies = {sku: policy_from_text(text) for sku, text in stored.items()}
                    self.cache.offer_store_policies(store_id, store_policies, snapshot_head, generation)
            for sku in missing:
                row = rows.get(sku)
                cached = level_from_row(row) if row else CachedLevel(Level(), 0, None)
                self.cache.offer_level((store_id, sku), cached, snapshot_head, generation)
                policy = effective_policy(store_policies, sku)
                views[sku] = LevelView(store_id, sku, cached.level, snapshot_head, cached.updated_at, policy)
        return [views[sku] for sku in skus]

    def levels_at(
        self, store_id: str, skus: list[str], *, position: int | None, as_of: datetime | None
    ) -> list[LevelView]:
        """The levels, channels' reserved units and policies after `position` (or as of a time)."""
        with self.reading("reading past levels") as tx:
            head = self.recorder.head(tx)
            if as_of is not None:
                position = queries.position_at(tx, utc_text(as_of))
            assert position is not None
            position = min(position, head)
            rows = queries.levels_at(tx, store_id, skus, position)
            stored = queries.policies_at(tx, store_id, skus, position)
        policies = {sku: policy_from_text(text) for sku, text in stored.items()}
        views = []
        for sku in skus:
            row = rows.get(sku)
            level = level_from_row(row).level if row else Level()
            views.append(
                LevelView(
                    store_id,
                    sku,
                    level,
                    position,
                    row["updated_at"] if row else None,
                    effective_policy(policies, sku),
                )
            )
        return views

    def levels_occurred_at(self, store_id: str, skus: list[str], occurred_as_of: datetime) -> list[LevelView]:
        """CONTRACT §7: the levels at that event time, as recorded now. Each answer's position is
        that of the latest entry it sums (0: none)."""
        occurred_at = utc_text(occurred_as_of)
        with self.reading("reading levels at an event time", one_moment=True) as tx:
            rows = queries.levels_occurred_at(tx, store_id, skus, occurred_at)
            return _occurred_views(tx, store_id, skus, rows, occurred_at)

    def sku_totals(
        self, sku: str, occurred_as_of: datetime | None = None
    ) -> tuple[Level, int, list[LevelView]]:
        """Every store's level of the SKU and their total; with `occurred_as_of`, as of that event
        time (CONTRACT §7), the answer's position being the latest entry summed."""
        with self.reading("reading a SKU across stores", one_moment=True) as tx:
            if occurred_as_of is not None:
                occurred_at = utc_text(occurred_as_of)
                stores = [
                    view
                    for row in queries.sku_across_stores_occurred_at(tx, sku, occurred_at)
                    for view in _occurred_views(tx, row["store_id"], [sku], {sku: row}, occurred_at)
                ]
                head = max((view.position for view in stores), default=0)
            else:
                head_read = tx.defer(self.recorder.head_sql)  # sent together: one round trip
                rows_read = queries.sku_across_stores_sent(tx, sku)
                head = int(head_read.rows()[0]["head"])
                rows = queries.by_store_id(rows_read.rows())
                stored = queries.store_policies(tx, [row["store_id"] for row in rows])
                stores = [
                    LevelView(
                        row["store_id"],
                        sku,
                        level_from_row(row).level,
                        head,
                        row["updated_at"],
                        effective_policy(
                            {key: policy_from_text(text) for key, text in stored[row["store_id"]].items()},
                            sku,
                        ),
                    )
                    for row in rows
                ]
        total = Level(
            sum(s.level.on_hand_units for s in stores),
            sum(s.level.reserved_units for s in stores),
            sum(s.level.incoming_units for s in stores),
        )
        return total, head, stores

    def store_policies(self, store_id: str) -> dict[str, Policy]:
        """Every policy of a store as the database has it now (SKU or `*` -> policy)."""
        with self.reading("reading policies") as tx:
            stored = queries.store_policies(tx, [store_id])[store_id]
        return {sku: policy_from_text(text) for sku, text in stored.items()}

    def history(self, where: HistoryFilter, limit: int) -> list[dict[str, Any]]:
        with self.reading("reading history") as tx:
            return [dict(row) for row in queries.history_page(tx, where, limit)]

    def timeline(self, window: TimelineWindow, points_max: int) -> list[dict[str, Any]]:
        """The levels after each entry of a store and SKU in a window (CONTRACT §8), thinned."""
        with self.reading("reading a timeline") as tx:
            return [dict(row) for row in timeline_points(tx, window, points_max)]

    def explain(self, store_id: str, sku: str, items_max: int) -> Explanation:
        """The entries behind the current figures (CONTRACT §8), all read in one snapshot."""
        with (
            self._reading("explaining a level"),
            self.recorder.snapshot_transaction(answer_wait_s=self.read_answer_wait_s) as tx,
        ):
            return explain(tx, store_id, sku, self.recorder.head(tx), items_max)

    def reservations_by_id(self, reservation_id: str, stores_max: int) -> list[ReservationView]:
        """Every store's reservation under this id (a reservation across stores), by store."""
        with self.reading("reading a reservation across stores") as tx:
            rows = queries.reservations_by_id(tx, reservation_id, stores_max)
        return [ReservationView(reservation_from_row(row), int(row["position"])) for row in rows]

    def reservations_at(self, reservation_id: str, stores: list[str]) -> list[ReservationView]:
        """The reservations under this id at these stores (those that exist), by store."""
        with self.reading("reading a reservation across stores") as tx:
            rows = queries.reservations_at(tx, reservation_id, stores)
        return [ReservationView(reservation_from_row(row), int(row["position"])) for row in rows]

    def stores_placed_with(self, reservation_id: str, positions: list[int]) -> set[str]:
        """The stores where the events at these positions placed a reservation under this id: every
        part of the reservations across stores those events placed."""
        with self.reading("reading a reservation across stores") as tx:
            placed = [queries.stores_placed_at(tx, reservation_id, p) for p in dict.fromkeys(positions)]
        return {store for stores in placed for store in stores}

    def reservations_placed_at(self, reservation_id: str, position: int) -> list[ReservationView]:
        """The parts the event at `position` placed under this id, by store."""
        with self.reading("reading a reservation across stores") as tx:
            rows = queries.reservations_at(
                tx, reservation_id, queries.stores_placed_at(tx, reservation_id, position)
            )
        return [
            ReservationView(reservation_from_row(row), int(row["position"]))
            for row in rows
            if int(row["placed_at_position"]) == position
        ]

    def accepted_at(self, source: str, event_id: str) -> int | None:
        with self.reading("reading an event's key") as tx:
            return queries.accepted_at(tx, source, event_id)

    def stores_with_available(self, skus: list[str], stores_max: int) -> list[str]:
        """By id as Python compares ids (code points, as SQLite does): PostgreSQL orders text by its
        database's collation, which need not (en_US puts `s-B` after `sa`). Beyond `stores_max`
        the caller refuses, so which stores the database's order cut off does not matter."""
        with self.reading("reading stores for sourcing") as tx:
            return sorted(queries.stores_with_available(tx, skus, stores_max))

    def limits_for(
        self, stores: tuple[str, ...], skus: list[str], channel: str | None
    ) -> dict[tuple[str, str], int]:
        """What a reservation of `channel` could take of each SKU at each store now (the figure
        sourcing uses, CONTRACT §6): from memory without building a view of each level (a 50-line
        order over 100 stores reads 5,000), else as `levels` reads them."""
        figures: dict[tuple[str, str], int] = {}
        cache = self.cache
        for store in stores:
            store_policies = cache.store_policies.get(store)
            cached = [cache.get_level((store, sku)) for sku in skus] if store_policies is not None else []
            if store_policies is None or any(level is None for level in cached):
                for view in self.levels(store, skus):
                    figures[(store, view.sku)] = limit_units(view.level, view.policy, channel)
                continue
            for sku, held in zip(skus, cached, strict=True):
                assert held is not None
                figures[(store, sku)] = line_limit_units(held.level, store_policies, sku, channel)
        return figures

    def reservation(self, store_id: str, reservation_id: str) -> ReservationView | None:
        with self.reading("reading a reservation") as tx:
            row = queries.reservation(tx, store_id, reservation_id)
        if row is None:
            return None
        return ReservationView(reservation_from_row(row), int(row["position"]))

    def ping(self) -> bool:
        """Can the database be read? (Brings the cache to the log's head on the way.)"""
        self.refresh()
        return self.database_ok

    async def database_answers(self) -> str | None:
        """Why the database cannot be read now (a readiness probe's), or None when it can. It is
        waited for READY_PROBE_TIMEOUT_S at most: a database that holds a read (a lock, a stall)
        is not ready, and says so at once rather than with a probe's timeout. Concurrent callers
        share one probe, so that a stalled database holds one thread, not one per probe."""
        ping = self._ping
        if ping is None or ping.done() or ping.get_loop() is not asyncio.get_running_loop():
            self._ping = ping = asyncio.ensure_future(asyncio.to_thread(self.ping))
        try:
            answered = await asyncio.wait_for(asyncio.shield(ping), READY_PROBE_TIMEOUT_S)
        except TimeoutError:
            return f"the database did not answer a read within {READY_PROBE_TIMEOUT_S:g} s"
        return None if answered else "database unreachable"
