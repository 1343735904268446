"""This instance's in-memory copy of current levels and reservations, valid as of a log position.

Invariant: every cached value reflects every event up to `head`. The writer checks that under
the write lock (the log's head must equal `head`, or the cache catches up from the projection
tables first), so a decision made from the cache is a decision made from the database.
Readers use it to answer GET stock without a database round trip. Values only ever move
forward: an update with an older position than the cached one is ignored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from ledger.domain.model import Level, Reservation, ReservationLine, ReservationStatus
from ledger.storage.sql import Row, SqlTx, chunks, placeholders

LOAD_CHUNK_KEYS = 500  # keys per IN (...) list: well inside both databases' parameter limits


@dataclass(slots=True)
class CachedLevel:
    level: Level
    position: int
    updated_at: str | None


def reservation_from_row(row: Row) -> Reservation:
    from datetime import datetime

    expires_at = row["expires_at"]
    closed_as = row["closed_as"]
    return Reservation(
        store_id=row["store_id"],
        reservation_id=row["reservation_id"],
        order_id=row["order_id"],
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
        lines={
            sku: ReservationLine(qty, shipped, released)
            for sku, qty, shipped, released in orjson.loads(row["lines"])
        },
        closed_as=ReservationStatus(closed_as) if closed_as else None,
        placed_at_position=int(row["placed_at_position"]),
    )


def level_from_row(row: Row) -> CachedLevel:
    return CachedLevel(
        Level(int(row["on_hand"]), int(row["reserved"]), int(row["incoming"])),
        int(row["position"]),
        row["updated_at"],
    )


class StateCache:
    def __init__(self, levels_max: int, reservations_max: int, catch_up_events_max: int) -> None:
        self.levels_max = levels_max
        self.reservations_max = reservations_max
        self.catch_up_events_max = catch_up_events_max
        self.lock = threading.Lock()
        self.head = 0
        self.levels: OrderedDict[tuple[str, str], CachedLevel] = OrderedDict()
        self.reservations: OrderedDict[tuple[str, str], tuple[Reservation, int]] = OrderedDict()
        self.store_versions: dict[str, int] = {}

    # -- keeping up with the log ---------------------------------------------------------------

    def catch_up(self, tx: SqlTx, log_head: int) -> None:
        """Bring the cache to `log_head`, the head read in this transaction's snapshot or lock."""
        with self.lock:
            if log_head == self.head:
                return
            if log_head < self.head or log_head - self.head > self.catch_up_events_max:
                self._clear(log_head)
                return
            since = self.head
            level_rows = tx.fetchall(
                "SELECT * FROM ledger_levels WHERE position > %s AND position <= %s",
                (since, log_head),
            )
            reservation_rows = tx.fetchall(
                "SELECT * FROM ledger_reservations WHERE position > %s AND position <= %s",
                (since, log_head),
            )
            for row in level_rows:
                self._put_level((row["store_id"], row["sku"]), level_from_row(row))
            for row in reservation_rows:
                key = (row["store_id"], row["reservation_id"])
                self._put_reservation(key, reservation_from_row(row), int(row["position"]))
            # Store versions are cheap to reload on demand; forget them rather than track them.
            self.store_versions.clear()
            self.head = log_head

    def clear(self, head: int) -> None:
        with self.lock:
            self._clear(head)

    def _clear(self, head: int) -> None:
        self.levels.clear()
        self.reservations.clear()
        self.store_versions.clear()
        self.head = head

    # -- reads and writes -----------------------------------------------------------------------

    def get_level(self, key: tuple[str, str]) -> CachedLevel | None:
        return self.levels.get(key)

    def offer_level(self, key: tuple[str, str], value: CachedLevel, snapshot_head: int) -> None:
        """A reader's value from the database; kept only if it is at least as new as the cache."""
        with self.lock:
            if snapshot_head >= self.head:
                self._put_level(key, value)

    def _put_level(self, key: tuple[str, str], value: CachedLevel) -> None:
        held = self.levels.get(key)
        if held is not None and held.position > value.position:
            return
        self.levels[key] = value
        self.levels.move_to_end(key)
        while len(self.levels) > self.levels_max:
            self.levels.popitem(last=False)

    def _put_reservation(self, key: tuple[str, str], value: Reservation, position: int) -> None:
        held = self.reservations.get(key)
        if held is not None and held[1] > position:
            return
        self.reservations[key] = (value, position)
        self.reservations.move_to_end(key)
        while len(self.reservations) > self.reservations_max:
            self.reservations.popitem(last=False)

    def install(
        self,
        levels: dict[tuple[str, str], CachedLevel],
        reservations: dict[tuple[str, str], tuple[Reservation, int]],
        store_versions: dict[str, int],
        head: int,
    ) -> None:
        """After a commit: the committed values and the new head."""
        with self.lock:
            for key, value in levels.items():
                self._put_level(key, value)
            for key, (reservation, position) in reservations.items():
                self._put_reservation(key, reservation, position)
            self.store_versions.update(store_versions)
            self.head = max(self.head, head)

    # -- loading what a batch needs, under the write lock ---------------------------------------

    def load_levels(self, tx: SqlTx, keys: set[tuple[str, str]]) -> dict[tuple[str, str], CachedLevel]:
        """Current levels for the keys: from the cache, the rest from the database (zero if never seen)."""
        found: dict[tuple[str, str], CachedLevel] = {}
        missing = []
        for key in keys:
            cached = self.levels.get(key)
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached
        for part in chunks(missing, LOAD_CHUNK_KEYS):
            rows = tx.fetchall(
                "SELECT * FROM ledger_levels WHERE (store_id, sku) IN (VALUES "
                + placeholders(len(part), 2) + ")",
                [value for key in part for value in key],
            )
            for row in rows:
                found[(row["store_id"], row["sku"])] = level_from_row(row)
        for key in missing:
            found.setdefault(key, CachedLevel(Level(), 0, None))
        with self.lock:
            for key in missing:
                self._put_level(key, found[key])
        return found

    def load_reservations(
        self, tx: SqlTx, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Reservation, int]]:
        found: dict[tuple[str, str], tuple[Reservation, int]] = {}
        missing = []
        for key in keys:
            cached = self.reservations.get(key)
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached
        for part in chunks(missing, LOAD_CHUNK_KEYS):
            rows = tx.fetchall(
                "SELECT * FROM ledger_reservations WHERE (store_id, reservation_id) IN (VALUES "
                + placeholders(len(part), 2) + ")",
                [value for key in part for value in key],
            )
            for row in rows:
                key = (row["store_id"], row["reservation_id"])
                found[key] = (reservation_from_row(row), int(row["position"]))
        with self.lock:
            for key in missing:
                if key in found:
                    self._put_reservation(key, *found[key])
        return found

    def load_store_versions(self, tx: SqlTx, stores: set[str]) -> dict[str, int]:
        versions = {store: self.store_versions[store] for store in stores if store in self.store_versions}
        missing = [store for store in stores if store not in versions]
        for part in chunks(missing, LOAD_CHUNK_KEYS):
            rows = tx.fetchall(
                "SELECT originator_id, MAX(originator_version) AS version FROM ledger_events "
                "WHERE originator_id IN (" + placeholders(len(part)) + ") GROUP BY originator_id",
                list(part),
            )
            for row in rows:
                versions[row["originator_id"]] = int(row["version"])
        for store in missing:
            versions.setdefault(store, 0)
        return versions
