"""MoySklad read back by time, so that a change whose notification was lost is recorded: demands
updated (their shipments), demands deleted, customer orders cancelled.

MoySklad tries a webhook a few times in a row and then drops it (md/dictionaries/_webhook.md): a
notification sent while `ledger adapters run` restarted, or while its host was unreachable, was
lost, and with it the shipment. So every LEDGER_MOYSKLAD_CATCH_UP_S the demands updated since the
last catch-up are listed, oldest change first (`filter=updated>=`, less OVERLAP_S for changes saved
with the same moment or committed late), and each is brought in line as a notification would
(DemandSync.sync): a demand recorded already records nothing again, one changed since records its
difference.

The cursor (the newest `updated` read) is kept in `adapter_cursors`, saved every SAVE_EVERY
demands and at the end, and moves only over demands that were recorded: one that cannot be (a
SKU or store not mapped yet) holds it at its own time, so that it is read again at the next
catch-up, but only while it was updated within REFUSED_HOLD_S. An older one is given up with an
ALERT in the journal: a store or product that is never mapped (a service, a store the ledger does
not keep) would otherwise hold the cursor for good, and every catch-up read everything after it
again. MoySklad or the ledger unavailable ends the catch-up where it got to. A first catch-up
reads back FIRST_LOOK_BACK_S (a restart's worth, not history an operator may have put right by
hand).

A deleted demand is no longer listed: each catch-up then reads the deletions from MoySklad's
audit (moysklad_deletions.py), and the customer orders' state changes and deletions from the audit
too (moysklad_order_ends_catchup.py). Each part is read even when one before it failed; the first error is
raised after the last part, the others logged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.cursors import load_cursor, save_cursor
from adapters.db import journal, transaction
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM, MoySkladClient, parse_moment
from adapters.moysklad_deletions import DeletionCatchUp
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_order_ends_catchup import CancelCatchUp, OrderDeletionCatchUp

log = secret_safe_logger("adapters.moysklad_catchup")

CURSOR = "moysklad.demands"
OVERLAP_S = 60.0
FIRST_LOOK_BACK_S = 3_600.0
REFUSED_HOLD_S = 3_600.0
SAVE_EVERY = 1_000


class MoySkladCatchUp:
    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        demands: DemandSync,
        order_ends: OrderEnds | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.recorder = recorder
        self.client = client
        self.demands = demands
        self.clock = clock
        self.deletions = DeletionCatchUp(recorder, client, demands, self._now)
        self.cancels = None if order_ends is None else CancelCatchUp(recorder, client, order_ends, self._now)
        self.order_deletions = (
            None if order_ends is None else OrderDeletionCatchUp(recorder, client, order_ends, self._now)
        )

    def _now(self) -> datetime:
        """The clock as it is set when asked (a test sets another after making this)."""
        return self.clock()

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """One catch-up, until done or `stopping()`: the demands updated, the deletions, then the
        orders' states and deletions, each read even when a part before it failed (the first error is raised
        after them); returns how many events it submitted."""
        parts: list[tuple[str, Callable[[Callable[[], bool]], int]]] = [
            ("the demands updated", self._updated),
            ("the deletions", self.deletions.run_once),
        ]
        if self.cancels is not None:
            parts.append(("the orders' states", self.cancels.run_once))
        if self.order_deletions is not None:
            parts.append(("the orders deleted", self.order_deletions.run_once))
        submitted, failed = 0, None
        for index, (name, part) in enumerate(parts):
            if index and stopping():
                break
            try:
                submitted += part(stopping)
            except Exception as error:  # noqa: BLE001 - the first is raised once every part is read
                if failed is None:
                    failed = error
                else:  # the first error is raised, this one said, so that neither is lost
                    log.warning("moysklad catch-up: %s could not be read either: %s", name, error)
        if submitted:
            log.info("moysklad catch-up: %d event(s) recorded that no notification had brought", submitted)
        if failed is not None:
            raise failed
        return submitted

    def _updated(self, stopping: Callable[[], bool]) -> int:
        """The demands updated since the cursor, each synced; returns the events submitted."""
        now = self.clock()
        since = self.cursor() or now - timedelta(seconds=FIRST_LOOK_BACK_S)
        held_after = now - timedelta(seconds=REFUSED_HOLD_S)
        newest, held = since, None
        submitted = read = 0
        try:
            for row in self.client.demands_updated_since(since - timedelta(seconds=OVERLAP_S)):
                if stopping():
                    break
                updated = parse_moment(row["updated"]).astimezone(UTC)
                try:
                    submitted += self.demands.sync(row["meta"]["href"], "UPDATE")
                except (ValueError, KeyError, TypeError) as error:
                    if updated >= held_after:
                        name = row.get("name")
                        log.warning("moysklad catch-up: demand %s not recorded yet: %s", name, error)
                        held = updated if held is None else min(held, updated)
                        continue
                    self._give_up(row, error)
                newest = max(newest, updated)
                read += 1
                if read % SAVE_EVERY == 0:
                    self._save(newest if held is None else min(newest, held))
        finally:
            self._save(newest if held is None else min(newest, held))
        return submitted

    def _give_up(self, row: dict[str, Any], error: Exception) -> None:
        name = row.get("name") or row.get("id")
        detail = f"not recorded since {REFUSED_HOLD_S:.0f} s, given up by the catch-up: {error}"
        with transaction(self.recorder) as tx:
            journal(tx, SYSTEM, "alert", f"demand {name}", detail)
        log.error("ALERT moysklad demand %s %s", name, detail)

    def cursor(self) -> datetime | None:
        return load_cursor(self.recorder, CURSOR)

    def _save(self, cursor: datetime) -> None:
        save_cursor(self.recorder, CURSOR, cursor)
