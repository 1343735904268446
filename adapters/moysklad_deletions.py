"""Demands deleted in MoySklad while their notification was lost, read from its audit.

A deleted demand is no longer listed, so the catch-up by `updated` (moysklad_catchup.py) cannot
see it, and its shipment stayed recorded: the ledger's stock low by it for good. The audit keeps
every deletion (`entityType=demand`, `eventType=delete`), read in windows as moysklad_audit.py
says. Each demand found is synced as its DELETE notification would be (DemandSync): it returns
what it shipped, once however often it is read, and nothing for a demand never recorded. What
cannot be read or recorded is alerted and passed (`ledger reconcile --source moysklad` finds what
it left).

Not taken for deleted: a demand put in the recycle bin (`puttorecyclebin`): the pages do not say
whether it still moves stock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from adapters.moysklad import MoySkladClient
from adapters.moysklad_audit import AUDIT_PAGE_ROWS, AuditWindows, Change, Unreadable, audit_changes
from adapters.moysklad_demands import DemandSync

CURSOR = "moysklad.demand_deletions"


def deleted_demands(
    client: MoySkladClient, since: datetime, until: datetime, page_rows: int = AUDIT_PAGE_ROWS
) -> Iterator[Change | Unreadable]:
    """Every demand the audit records deleted from `since` to `until`, and what could not be read."""
    return audit_changes(client, since, until, "demand", "delete", page_rows)


class DeletionCatchUp(AuditWindows):
    """Syncs each demand the audit records deleted as its DELETE notification would."""

    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        demands: DemandSync,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        def take(deleted: Change) -> int:
            return demands.sync(deleted.href, "DELETE", deleted.moment.astimezone(UTC))

        super().__init__(
            recorder,
            CURSOR,
            lambda since, until: deleted_demands(client, since, until),
            take,
            kind="demand deletions",
            item="deleted demand",
            remedy="reconcile with --source moysklad",
            clock=clock,
        )
