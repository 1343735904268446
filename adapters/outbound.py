"""The one outbound mechanism: every target is a projection of the ledger with its own position.

A cycle of `OutboundWorker`:

1. reads the log after the target's saved position (at most `read_events_max` entries);
2. asks the target which keys the accepted entries changed (a key is what one push sets: a
   product's level in Bitrix, a reservation's customer order in MoySklad), so that many changes to
   the same key become one push of its newest value (coalescing);
3. loads the newest value of each key from the projections (never from the events: only the newest
   level matters), adds the outbox items (pushes that are not derived from the log, such as an
   order status for Bitrix) and the parked items an operator asked to retry;
4. pushes them in batches of the target's size, through the target's own rate limiter;
5. retries what failed: a whole request that got no usable answer (timeout, 5xx, rate limit) is
   retried with backoff and, if it keeps failing, the cycle stops *without* saving the position, so
   the next cycle pushes the same changes again; an item the target refused is retried up to
   `retries_max` times and then parked with its reason, and the others go on;
6. saves the new position, the counters, the parked items and the target's own bookkeeping in one
   transaction.

So each change is pushed at least once: a crash between a push and step 6 only means the same
newest values are pushed again. Targets make that harmless with idempotency keys (a value set
rather than a delta added, an external code looked up before creating, an Idempotency-Key header).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from adapters.db import journal, now_text, transaction
from adapters.lease import LeaseLost, TargetLease
from adapters.limits import RETRY_JITTER, Stopper
from adapters.masking import mask, secret_safe_logger
from ledger.backoff import Backoff
from ledger.domain.model import Entry, Outcome
from ledger.sql import SqlTx, chunks
from ledger.storage.codec import decode

log = secret_safe_logger("adapters.outbound")

RETRY_AFTER_S_MAX = 120.0  # a target's own Retry-After is honoured up to this


@dataclass(frozen=True, slots=True)
class Item:
    """One value to push. `key` identifies what it sets; one pending value per key."""

    key: str
    payload: dict[str, Any]
    outbox_version: int | None = None  # set for items taken from the outbox


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the target refused one item. A permanent failure is parked without retrying."""

    reason: str
    permanent: bool = False


class TargetUnavailable(Exception):
    """The whole request failed (no answer, 5xx, rate limited): retry later, park nothing."""

    def __init__(
        self, reason: str, retry_after_s: float | None = None, done_keys: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.done_keys = done_keys  # items of the batch that did get through: not pushed again


class Target(Protocol):
    name: str
    batch_items_max: int

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        """The keys an accepted entry changes (none if the target does not care)."""

    def load(self, keys: Sequence[str]) -> list[Item]:
        """The newest value of each key; keys with nothing to push are left out."""

    def all_keys(self) -> Iterable[str]:
        """Every key the target holds, for a full push."""

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        """Pushes one batch; returns the items that failed (by key). Raises TargetUnavailable."""

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        """Records the target's own bookkeeping in the transaction that saves the position."""


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    read_events_max: int = 5000
    outbox_items_max: int = 1000
    retries_max: int = 5  # attempts of one item before it is parked
    request_retries_max: int = 5  # attempts of one request before the cycle gives up
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    poll_interval_s: float = 1.0


@dataclass(slots=True)
class CycleReport:
    start: int = 0
    end: int = 0
    keys: int = 0
    pushed: int = 0
    parked: int = 0
    failures: int = 0
    aborted: str | None = None
    parked_keys: list[str] = field(default_factory=list)


class SimulatedCrash(Exception):
    """Raised by a test hook between the pushes and the position save."""


class OutboundWorker:
    def __init__(
        self, recorder: Any, target: Target, limits: WorkerLimits, *, owner: str | None = None
    ) -> None:
        self.recorder = recorder
        self.target = target
        self.limits = limits
        self.owner = owner or f"{socket.gethostname()}:{id(self):x}"
        self.lease = TargetLease(recorder, target.name, self.owner)
        self.backoff = Backoff(limits.backoff_initial_s, limits.backoff_max_s, jitter=RETRY_JITTER)
        self.stopper = Stopper()
        self.before_save_hook: Any = None  # tests: called between the pushes and the save
        ensure_position_row(recorder, target.name)

    # -- the loop -----------------------------------------------------------------------------------

    def run_forever(self) -> None:
        failures_in_a_row = 0
        while not self.stopper.stopped:
            try:
                report = self.run_once()
            except Exception as error:
                failures_in_a_row += 1
                log.exception("%s: cycle failed: %s", self.target.name, error)
                self.stopper.sleep(self.backoff.delay_s(failures_in_a_row))
                continue
            if report.aborted:
                failures_in_a_row += 1
                self.stopper.sleep(self.backoff.delay_s(failures_in_a_row))
                continue
            failures_in_a_row = 0
            if report.end == report.start and report.keys == 0:
                self.stopper.sleep(self.limits.poll_interval_s)

    def stop(self) -> None:
        self.stopper.stop()

    def run_until_idle(self, cycles_max: int = 100) -> list[CycleReport]:
        """Cycles until one finds nothing to do (for tests and `ledger adapters run --once`)."""
        reports = []
        for _ in range(cycles_max):
            report = self.run_once()
            reports.append(report)
            if report.aborted or (report.end == report.start and report.keys == 0):
                break
        return reports

    # -- one cycle ----------------------------------------------------------------------------------

    def run_once(self, *, full: bool = False) -> CycleReport:
        name = self.target.name
        if not self.lease.take():
            return CycleReport(aborted="another worker holds the lease")
        start = read_position(self.recorder, name)
        notes = self.recorder.select_notifications(
            start=start, limit=self.limits.read_events_max, inclusive_of_start=False
        )
        end = notes[-1].id if notes else start
        keys: dict[str, None] = {}
        for note in notes:
            entry = decode(str(note.originator_id), note.topic, note.state).entry
            if entry.outcome is Outcome.ACCEPTED:
                keys.update(dict.fromkeys(self.target.keys_for(entry, note.id)))
        if full:
            keys.update(dict.fromkeys(self.target.all_keys()))
        requeued = self._requeued()
        keys.update(dict.fromkeys(requeued))
        items = self.target.load(list(keys)) if keys else []
        loaded = {item.key for item in items}
        # A parked item the target cannot load afresh (an outbox item) is pushed as it was parked.
        items += [Item(key, payload) for key, payload in requeued.items() if key not in loaded]
        items += self._outbox_items()
        report = CycleReport(start=start, end=end, keys=len(items))
        try:
            parked, pushed = self._push_all(items, report)
            if self.before_save_hook is not None:
                self.before_save_hook()
            self._save(report, pushed, parked, requeued)
        except (TargetUnavailable, LeaseLost) as error:
            report.aborted = str(error)
            log.warning("%s: target unavailable, will retry from position %d: %s", name, start, error)
        return report

    def _push_all(
        self, items: list[Item], report: CycleReport
    ) -> tuple[dict[str, tuple[Item, Failure, int]], list[Item]]:
        pending = items
        parked: dict[str, tuple[Item, Failure, int]] = {}
        pushed: list[Item] = []
        attempt = 1
        while pending and not self.stopper.stopped:
            failed: dict[str, Failure] = {}
            for batch in chunks(pending, self.target.batch_items_max):
                failed.update(self._push_batch(list(batch), report))
            pushed += [item for item in pending if item.key not in failed]
            retry: list[Item] = []
            for item in pending:
                failure = failed.get(item.key)
                if failure is None:
                    continue
                report.failures += 1
                if failure.permanent or attempt >= self.limits.retries_max:
                    parked[item.key] = (item, failure, attempt)
                else:
                    retry.append(item)
            if retry:
                log.info(
                    "%s: %d item(s) failed, retry %d after backoff (first: %s: %s)",
                    self.target.name,
                    len(retry),
                    attempt,
                    retry[0].key,
                    mask(failed[retry[0].key].reason)[:300],
                )
                self.stopper.sleep(self.backoff.delay_s(attempt))
            pending = retry
            attempt += 1
        if pending:  # stopped while retrying: park nothing, the next run pushes them again
            raise TargetUnavailable(f"stopped with {len(pending)} item(s) still pending")
        report.pushed = len(pushed)
        report.parked = len(parked)
        report.parked_keys = sorted(parked)
        return parked, pushed

    def _push_batch(self, batch: list[Item], report: CycleReport) -> dict[str, Failure]:
        for attempt in range(1, self.limits.request_retries_max + 1):
            try:
                # Renewed while the batch is pushed, however long that takes. LeaseLost is not
                # retried: it ends the cycle.
                with self.lease.kept():
                    return self.target.push(batch)
            except TargetUnavailable as error:
                batch = [item for item in batch if item.key not in error.done_keys]
                self._record_failure(str(error))  # counted now: a cycle that gives up saves nothing else
                if attempt >= self.limits.request_retries_max or self.stopper.stopped:
                    raise
                delay_s = self.backoff.delay_s(attempt)
                if error.retry_after_s is not None:  # the target said when: wait at least that long
                    delay_s = max(delay_s, min(error.retry_after_s, RETRY_AFTER_S_MAX))
                log.info(
                    "%s: request failed (%s), retry %d in %.2fs", self.target.name, error, attempt, delay_s
                )
                self.stopper.sleep(delay_s)
        raise AssertionError("unreachable")

    # -- bookkeeping --------------------------------------------------------------------------------

    def release_lease(self) -> None:
        self.lease.release()

    def _requeued(self) -> dict[str, dict[str, Any]]:
        with transaction(self.recorder) as tx:
            rows = tx.fetchall(
                "SELECT item_key, payload FROM adapter_parked WHERE adapter = %s AND retry_requested = 1 "
                "ORDER BY parked_at LIMIT %s",
                (self.target.name, self.limits.outbox_items_max),
            )
        return {row["item_key"]: orjson.loads(row["payload"]) for row in rows}

    def _outbox_items(self) -> list[Item]:
        with transaction(self.recorder) as tx:
            rows = tx.fetchall(
                "SELECT item_key, payload, version FROM adapter_outbox WHERE adapter = %s "
                "ORDER BY created_at LIMIT %s",
                (self.target.name, self.limits.outbox_items_max),
            )
        return [Item(row["item_key"], orjson.loads(row["payload"]), int(row["version"])) for row in rows]

    def _record_failure(self, reason: str) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_positions SET failures_total = failures_total + 1, last_error = %s, "
                "updated_at = %s WHERE adapter = %s",
                (mask(reason)[:1000], now_text(), self.target.name),
            )

    def _save(
        self,
        report: CycleReport,
        pushed: list[Item],
        parked: dict[str, tuple[Item, Failure, int]],
        requeued: dict[str, dict[str, Any]],
    ) -> None:
        name = self.target.name
        stamp = now_text()
        item_failures = report.failures
        with transaction(self.recorder) as tx:
            self.lease.keep(tx)  # fenced: a worker whose lease was taken saves nothing
            self.target.after_push(tx, pushed)
            # A key pushed now supersedes its parked value, requeued or not: a retry of that one
            # (an outbox item is pushed as it was parked) would set the older value over this.
            parked_before = {
                str(row["item_key"])
                for row in tx.fetchall("SELECT item_key FROM adapter_parked WHERE adapter = %s", (name,))
            }
            for key in parked_before & ({item.key for item in pushed} | set(requeued)):
                tx.execute("DELETE FROM adapter_parked WHERE adapter = %s AND item_key = %s", (name, key))
            for key, (item, failure, attempts) in parked.items():
                tx.execute(
                    "INSERT INTO adapter_parked (adapter, item_key, position, reason, attempts, payload, "
                    "parked_at, retry_requested) VALUES (%s, %s, %s, %s, %s, %s, %s, 0) "
                    "ON CONFLICT (adapter, item_key) DO UPDATE SET position = excluded.position, "
                    "reason = excluded.reason, attempts = excluded.attempts, payload = excluded.payload, "
                    "parked_at = excluded.parked_at, retry_requested = 0",
                    (
                        name,
                        key,
                        report.end,
                        mask(failure.reason)[:2000],
                        attempts,
                        orjson.dumps(item.payload).decode(),
                        stamp,
                    ),
                )
                journal(tx, name, "parked", key, failure.reason)
                log.warning("%s: parked %s after %d attempt(s): %s", name, key, attempts, failure.reason)
            for item in [*pushed, *(entry[0] for entry in parked.values())]:
                if item.outbox_version is not None:
                    tx.execute(
                        "DELETE FROM adapter_outbox WHERE adapter = %s AND item_key = %s AND version = %s",
                        (name, item.key, item.outbox_version),
                    )
            # An item parked now is the adapter's last error: `ledger adapters status` showed "-"
            # beside failures that parked items, their reasons only in the list below.
            last_parked = None
            if parked:
                key, (_, failure, _) = next(reversed(parked.items()))
                last_parked = mask(f"parked {key}: {failure.reason}")[:1000]
            tx.execute(
                "UPDATE adapter_positions SET position = %s, pushed_total = pushed_total + %s, "
                "failures_total = failures_total + %s, parked_total = parked_total + %s, "
                "last_push_at = CASE WHEN %s > 0 THEN %s ELSE last_push_at END, updated_at = %s, "
                "last_error = COALESCE(%s, last_error) WHERE adapter = %s",
                (
                    report.end,
                    *(len(pushed), item_failures, len(parked)),
                    *(len(pushed), stamp, stamp),
                    last_parked,
                    name,
                ),
            )


# -- positions, outbox and parked items, shared with the CLI -----------------------------------------


def ensure_position_row(recorder: Any, adapter: str) -> None:
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, parked_total, "
            "updated_at) VALUES (%s, 0, 0, 0, 0, %s) ON CONFLICT (adapter) DO NOTHING",
            (adapter, now_text()),
        )


def read_position(recorder: Any, adapter: str) -> int:
    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT position FROM adapter_positions WHERE adapter = %s", (adapter,))
    return int(row["position"]) if row else 0


def set_position(recorder: Any, adapter: str, position: int) -> None:
    ensure_position_row(recorder, adapter)
    with transaction(recorder) as tx:
        tx.execute(
            "UPDATE adapter_positions SET position = %s, updated_at = %s WHERE adapter = %s",
            (position, now_text(), adapter),
        )


def enqueue(tx: SqlTx, adapter: str, key: str, payload: dict[str, Any]) -> None:
    """Puts a value in a target's outbox; a newer value for the same key replaces an unsent one."""
    version = time.time_ns()
    tx.execute(
        "INSERT INTO adapter_outbox (adapter, item_key, payload, version, created_at) VALUES (%s, "
        "%s, %s, %s, %s) "
        "ON CONFLICT (adapter, item_key) DO UPDATE SET payload = excluded.payload, version = "
        "excluded.version",
        (adapter, key, orjson.dumps(payload).decode(), version, now_text()),
    )


def request_parked_retry(recorder: Any, adapter: str, key: str | None = None) -> int:
    """Marks parked items (one, or all of the adapter's) to be pushed again by the next cycle."""
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT item_key FROM adapter_parked WHERE adapter = %s" + (" AND item_key = %s" if key else ""),
            (adapter, key) if key else (adapter,),
        )
        tx.execute(
            "UPDATE adapter_parked SET retry_requested = 1 WHERE adapter = %s"
            + (" AND item_key = %s" if key else ""),
            (adapter, key) if key else (adapter,),
        )
    return len(rows)
