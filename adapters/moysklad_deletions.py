"""Demands deleted in MoySklad while their notification was lost, read from its audit.

A deleted demand is no longer listed, so the catch-up by `updated` (moysklad_catchup.py) cannot
see it, and its shipment stayed recorded: the ledger's stock low by it for good. The audit
(md/audit/_audit.md) keeps every deletion: contexts filtered by `moment>=`, `moment<=` (to the
second, Moscow time), `entityType=demand` and `eventType=delete`, then each context's events (a
bulk deletion is one context of many), each naming its demand. Each demand found is synced as its
DELETE notification would be (DemandSync): it returns what it shipped, once however often it is
read, and nothing for a demand never recorded.

The audit is read in windows of at most WINDOW_S, oldest first; the cursor (`adapter_cursors`)
moves to a window's end once it is read in full, so a long outage is caught up a window at a
time and a window cut short (stopped, MoySklad or the ledger away) is read again whole. A window
ends SETTLE_S before now and starts OVERLAP_S before the last one's end: MoySklad's clock may run
behind ours, and an audit row may be written late. A window holding more than AUDIT_PAGES_MAX
pages (thousands of deletions in minutes) is read that far, given up with an ALERT in the journal
(`ledger reconcile --source moysklad` finds what it left), and passed. The token needs the right
to view the audit; without it MoySklad answers 403, said as such on every catch-up.

Not taken for deleted: a demand put in the recycle bin (`puttorecyclebin`): the pages do not say
whether it still moves stock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.cursors import load_cursor, save_cursor
from adapters.db import journal, transaction
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM, MoySkladClient, parse_moment, second_text
from adapters.moysklad_demands import DemandSync
from adapters.outbound import TargetUnavailable

log = secret_safe_logger("adapters.moysklad_deletions")

CURSOR = "moysklad.demand_deletions"
WINDOW_S = 600.0
SETTLE_S = 60.0
OVERLAP_S = 60.0
FIRST_LOOK_BACK_S = 3_600.0  # a restart's worth, as the catch-up by `updated`
# The audit's pages hold at most 100 rows (`limit` 1 to 100, default 25).
AUDIT_PAGE_ROWS = 100
AUDIT_PAGES_MAX = 50  # of contexts in one window, or of one context's events


class AuditOverflow(Exception):
    """More rows than AUDIT_PAGES_MAX pages: the rest of the window is not read."""


def deleted_demands(
    client: MoySkladClient, since: datetime, until: datetime, page_rows: int = AUDIT_PAGE_ROWS
) -> Iterator[tuple[str, datetime]]:
    """(href, moment) of every demand the audit records deleted from `since` to `until`."""
    window = f"moment>={second_text(since)};moment<={second_text(until)};entityType=demand;eventType=delete"
    for context in _rows(client, "audit", {"filter": window}, page_rows):
        events = ((context.get("events") or {}).get("meta") or {}).get("href")
        if not events:
            continue
        for event in _rows(client, events, {}, page_rows):  # the client refuses a foreign href
            href = ((event.get("entity") or {}).get("meta") or {}).get("href")
            if href and event.get("entityType") == "demand" and event.get("eventType") == "delete":
                yield href, parse_moment(event["moment"])


def _rows(
    client: MoySkladClient, path: str, params: dict[str, str], page_rows: int
) -> Iterator[dict[str, Any]]:
    for page in range(AUDIT_PAGES_MAX):
        offset = page * page_rows
        answer = client.request(
            "GET", path, params={**params, "limit": str(page_rows), "offset": str(offset)}
        )
        if answer.status == 403:
            raise TargetUnavailable(
                "moysklad audit: HTTP 403: the token may lack the right to view the audit"
            )
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad audit: HTTP {answer.status}")
        body = answer.json() or {}
        rows = body.get("rows") or []
        yield from rows
        size = (body.get("meta") or {}).get("size")
        if len(rows) < page_rows or (isinstance(size, int) and offset + len(rows) >= size):
            return
    raise AuditOverflow(f"more than {AUDIT_PAGES_MAX} pages of {page_rows} rows")


class DeletionCatchUp:
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

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Every window from the cursor to SETTLE_S before now, until done or `stopping()`;
        returns how many events it submitted."""
        end = self.clock() - timedelta(seconds=SETTLE_S)
        start = load_cursor(self.recorder, CURSOR) or end - timedelta(seconds=FIRST_LOOK_BACK_S)
        submitted = 0
        while start < end and not stopping():
            until = min(end, start + timedelta(seconds=WINDOW_S))
            try:
                for href, deleted_at in deleted_demands(
                    self.client, start - timedelta(seconds=OVERLAP_S), until
                ):
                    if stopping():
                        return submitted  # this window is read again whole
                    submitted += self.demands.sync(href, "DELETE", deleted_at.astimezone(UTC))
            except AuditOverflow as overflow:
                self._give_up(start, until, overflow)
            save_cursor(self.recorder, CURSOR, until)
            start = until
        return submitted

    def _give_up(self, start: datetime, until: datetime, overflow: AuditOverflow) -> None:
        window = f"{start.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}"
        detail = f"{overflow}: the deletions past them were not read; reconcile with --source moysklad"
        with transaction(self.recorder) as tx:
            journal(tx, SYSTEM, "alert", f"demand deletions {window}", detail)
        log.error("ALERT moysklad demand deletions %s: %s", window, detail)
