"""MoySklad's demands read back by time, so that a shipment whose notification was lost is recorded.

MoySklad tries a webhook a few times in a row and then drops it (md/dictionaries/_webhook.md): a
notification sent while `ledger adapters run` restarted, or while its host was unreachable, was
lost, and with it the shipment. So every LEDGER_MOYSKLAD_CATCH_UP_S the demands updated since the
last catch-up are listed, oldest change first (`filter=updated>=`, less OVERLAP_S for changes saved
with the same moment or committed late), and each is brought in line as a notification would
(DemandSync.sync): a demand recorded already records nothing again, one changed since records its
difference.

The cursor (the newest `updated` read) is kept in `adapter_cursors`, and moves only over demands
that were recorded: one that cannot be (a SKU or store not mapped yet) holds it at its own time,
so that it is read again at the next catch-up. MoySklad or the ledger unavailable ends the
catch-up without moving the cursor. A first catch-up reads back FIRST_LOOK_BACK_S.

Not caught up: a deletion whose notification was lost (a deleted demand is no longer listed);
the webhook's own retries and `ledger reconcile --source moysklad` remain for that.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.db import now_text, transaction
from adapters.masking import secret_safe_logger
from adapters.moysklad import MoySkladClient, parse_moment
from adapters.moysklad_demands import DemandSync

log = secret_safe_logger("adapters.moysklad_catchup")

CURSOR = "moysklad.demands"
OVERLAP_S = 60.0
FIRST_LOOK_BACK_S = 86_400.0


class DemandCatchUp:
    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        demands: DemandSync,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.recorder = recorder
        self.client = client
        self.demands = demands
        self.clock = clock

    def run_once(self) -> int:
        """One catch-up; returns how many events it submitted."""
        since = self.cursor() or self.clock() - timedelta(seconds=FIRST_LOOK_BACK_S)
        newest, held = since, None
        submitted = 0
        for row in self.client.demands_updated_since(since - timedelta(seconds=OVERLAP_S)):
            updated = parse_moment(row["updated"]).astimezone(UTC)
            try:
                submitted += self.demands.sync(row["meta"]["href"], "UPDATE")
            except (ValueError, KeyError, TypeError) as error:
                log.warning("moysklad catch-up: demand %s not recorded yet: %s", row.get("name"), error)
                held = updated if held is None else min(held, updated)
                continue
            newest = max(newest, updated)
        self._save(newest if held is None else min(newest, held))
        if submitted:
            log.info("moysklad catch-up: %d event(s) recorded that no notification had brought", submitted)
        return submitted

    def cursor(self) -> datetime | None:
        with transaction(self.recorder) as tx:
            row = tx.fetchone("SELECT value FROM adapter_cursors WHERE name = %s", (CURSOR,))
        return None if row is None else datetime.fromisoformat(row["value"])

    def _save(self, cursor: datetime) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "INSERT INTO adapter_cursors (name, value, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (CURSOR, cursor.isoformat(), now_text()),
            )
