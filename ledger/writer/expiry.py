"""Expiring reservations: when to look (every `expiry_interval_s`, between batches), which are
due (open, with `expires_at` at or before now), and what is recorded for each
(`stock.reservation_expired`, oldest first, at most `expiry_batch_max` a turn)."""

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


def expire_due(
    recorder: LedgerRecorder, cache: StateCache, now: datetime, batch_max: int
) -> tuple[int, Commit | None]:
    """Records `stock.reservation_expired` for the open reservations due by `now`; returns how
    many, and what the cache takes (None when nothing was due)."""
    with recorder.read_transaction(bounded=True) as tx:
        if not tx.fetchall(DUE_SQL, (utc_text(now), 1)):
            return 0, None  # the common case, without the write lock
    recorded_at = utc_text(utc_now())
    with recorder.write_transaction(bounded=True) as tx:
        head = int(tx.defer(recorder.head_sql).rows()[0]["head"])
        cache.catch_up(tx, head)
        rows = tx.fetchall(DUE_SQL, (utc_text(now), batch_max))
        due = {(row["store_id"], row["reservation_id"]): reservation_from_row(row) for row in rows}
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
