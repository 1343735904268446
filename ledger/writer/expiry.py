"""Expiring reservations: when to look (every `expiry_interval_s`, between batches), which are
due (open, with `expires_at` at or before now), and what is recorded for each
(`stock.reservation_expired`, oldest first, at most `expiry_batch_max` a turn).

A turn is one transaction, so one expiry that cannot be recorded fails every other due with it,
at any store, at every turn. After a failed turn the writer records them one at a time
(`expire_due(only=...)`); one that fails alone while another succeeds is left out of the turns for
STUCK_RETRY_S (`StuckExpiries`), so that the others expire. (When every one fails alone, the
database is the cause, not a reservation: none is left out.)"""

from __future__ import annotations

import time
from datetime import datetime

from ledger.clock import utc_now, utc_text
from ledger.domain.rules import LedgerState, expire
from ledger.state_cache import Commit, StateCache, reservation_from_row
from ledger.storage.recorders import LedgerRecorder
from ledger.writer.deciding import Work, apply_entry
from ledger.writer.recording import insert

DUE_SQL = (
    "SELECT * FROM ledger_reservations WHERE remaining > 0 AND expires_at IS NOT NULL "
    "AND expires_at <= %s ORDER BY expires_at LIMIT %s"
)
ONE_DUE_SQL = (
    "SELECT * FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s "
    "AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= %s"
)
STUCK_RETRY_S = 300.0  # how long an expiry that failed alone is left out of the turns
STUCK_MAX = 1_000  # expiries left out at once; the oldest is tried again first beyond it
ALONE_PER_TURN_MAX = 50  # expiries recorded one at a time after a failed turn, at most

Key = tuple[str, str]  # (store, reservation)


def expiry_event_id(store_id: str, reservation_id: str) -> str:
    """The key of a reservation's expiry (with the source `ledger/expiry`): one per reservation,
    and no two alike. Both ids may hold `:`, so `expire:S:a:b` was the key of reservation `a:b` at
    store S and of `b` at store `S:a`: the second expiry failed on the key at every turn, and every
    reservation due with it. Neither id holds `/` (CONTRACT §1)."""
    return f"expire:{store_id}/{reservation_id}"


class ExpirySchedule:
    """Says when the next look for due reservations is due."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next_check = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval_s
        return True


class StuckExpiries:
    """The expiries that failed alone, each left out of the turns until its time (monotonic)."""

    def __init__(self, retry_s: float = STUCK_RETRY_S, keys_max: int = STUCK_MAX) -> None:
        self.retry_s = retry_s
        self.keys_max = keys_max
        self._until: dict[Key, float] = {}

    def add(self, key: Key) -> None:
        self._until[key] = time.monotonic() + self.retry_s
        while len(self._until) > self.keys_max:
            del self._until[next(iter(self._until))]

    def left_out(self) -> frozenset[Key]:
        now = time.monotonic()
        for key in [key for key, until in self._until.items() if until <= now]:
            del self._until[key]
        return frozenset(self._until)


def due_keys(recorder: LedgerRecorder, now: datetime, count_max: int, left_out: frozenset[Key]) -> list[Key]:
    """The oldest due reservations, at most `count_max`, but those left out."""
    with recorder.read_transaction(bounded=True) as tx:
        rows = tx.fetchall(DUE_SQL, (utc_text(now), count_max + len(left_out)))
    keys = [(row["store_id"], row["reservation_id"]) for row in rows]
    return [key for key in keys if key not in left_out][:count_max]


def expire_due(
    recorder: LedgerRecorder,
    cache: StateCache,
    now: datetime,
    batch_max: int,
    left_out: frozenset[Key] = frozenset(),
    only: Key | None = None,
) -> tuple[int, Commit | None]:
    """Records `stock.reservation_expired` for the open reservations due by `now` (but those left
    out; or `only` that one); returns how many, and what the cache takes (None when none was due)."""
    if only is None and not due_keys(recorder, now, 1, left_out):
        return 0, None  # the common case, without the write lock
    recorded_at = utc_text(utc_now())
    with recorder.write_transaction(bounded=True) as tx:
        head = int(tx.defer(recorder.head_sql).rows()[0]["head"])
        cache.catch_up(tx, head)
        if only is not None:
            rows = tx.fetchall(ONE_DUE_SQL, (*only, utc_text(now)))
        else:
            rows = tx.fetchall(DUE_SQL, (utc_text(now), batch_max + len(left_out)))
        due = {
            key: reservation_from_row(row)
            for row in rows
            if (key := (row["store_id"], row["reservation_id"])) not in left_out
        }
        due = dict(list(due.items())[:batch_max])
        if not due:
            return 0, None
        work = Work(LedgerState(reservations=due), head, dict)
        level_keys = {(store, sku) for (store, _), held in due.items() for sku in held.lines}
        levels = cache.read_levels(tx, level_keys).finish()
        work.state.levels.update({key: cached.level.copy() for key, cached in levels.items()})
        work.versions = cache.read_store_versions(tx, {store for store, _ in due}).finish
        for key in sorted(due):
            held = work.state.reservations[key]
            if held.is_open:
                apply_entry(expire(held, now, expiry_event_id(*key)), work)
        _, committed = insert(recorder, tx, work, recorded_at)
    return len(work.entries), committed
