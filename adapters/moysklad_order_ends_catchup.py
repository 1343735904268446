"""Customer orders cancelled or deleted in MoySklad while their notification was lost, read from
its audit.

A cancel releases its order's reservation when its `customerorder` notification arrives
(moysklad_order_ends.py). MoySklad drops a notification after a few tries in a row, so a cancel
made while `ledger adapters run` restarted, or while its host was unreachable, left the units
reserved until the reservation expired, or for good if it has no expiry. The audit keeps every
update of an order with the fields it changed (`entityType=customerorder`, `eventType=update`, its
`diff`), read in windows as moysklad_audit.py says. Each update that changed `state` is synced as
its notification would be (OrderEnds.sync, with the audit's moment as the change's): the order
is read, and if it is in the mapped released state now, what each reservation it carries still
holds is released if the change came after that reservation was placed, once however often it
is read (the release's id is the notification's). An update of other fields costs no read of the order; each
context costs one request for its events (the audit lists a context without them). An update
whose event has no `diff` is alerted and passed.

The ledger's own changes are passed: its move of an order to the released state is in the audit
too (the header that silences webhooks does not silence the audit), and read as a cancel dated in
the second a later reservation of the same order id reused the order, it would release that one.
So the contexts of the login the ledger's token acts as (`GET context/employee`, asked once a
process) are passed without their events, which also spares the requests; a person should not use
that login in MoySklad's app, or their cancels are left to their notifications.

A change synced already in this process (its notification came, or the overlap of two windows
reads it again) is passed without a request: OrderEnds remembers the changes it synced by their
audit context. A process started afresh reads the last window's overlap again: a cancel notified
and acted on, read again then, is checked against the reservation its order id names then, so a new
reservation of that order id placed within the same second as the cancel would be released (the
rule's second, as a late notification would).

A deletion is read the same way (`eventType=delete`, its own cursor) and synced as its DELETE
notification would be (OrderEnds.sync_deleted): the book of the orders the ledger made names
the reservations the order carried. Every author's deletion counts: the ledger deletes no order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from adapters.masking import secret_safe_logger
from adapters.moysklad import MoySkladClient
from adapters.moysklad_audit import AUDIT_PAGE_ROWS, AuditWindows, Change, Unreadable, audit_changes
from adapters.moysklad_order_ends import OrderEnds

log = secret_safe_logger("adapters.moysklad_order_ends_catchup")

CURSOR = "moysklad.order_states"
DELETIONS_CURSOR = "moysklad.order_deletions"
STATE_FIELD = "state"  # the order's field a cancel changes, as the audit's diff names it


def order_updates(
    client: MoySkladClient,
    since: datetime,
    until: datetime,
    not_by: str | None,
    page_rows: int = AUDIT_PAGE_ROWS,
) -> Iterator[Change | Unreadable]:
    """Every update of a customer order the audit records from `since` to `until`, but those made
    by the login `not_by`."""
    return audit_changes(client, since, until, "customerorder", "update", page_rows, not_by)


class CancelCatchUp(AuditWindows):
    """Syncs each customer order whose state an update changed, as its notification would."""

    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        order_ends: OrderEnds,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.order_ends = order_ends
        self.client = client
        self._own_login: str | None = None
        super().__init__(
            recorder,
            CURSOR,
            lambda since, until: order_updates(client, since, until, self.own_login()),
            self._take,
            kind="customer order states",
            item="customer order",
            remedy="if it was cancelled, release its reservation through the API",
            clock=clock,
        )

    def own_login(self) -> str:
        """The ledger's own MoySklad login, asked once a process."""
        if self._own_login is None:
            self._own_login = self.client.login()
            log.info(
                "moysklad catch-up: the orders' changes made as %s (the ledger's token) are passed",
                self._own_login,
            )
        return self._own_login

    def _take(self, change: Change) -> int:
        if STATE_FIELD not in change.fields or change.uid == self.own_login():
            return 0
        return self.order_ends.sync(change.href, change.moment.astimezone(UTC), change.context or None)


class OrderDeletionCatchUp(AuditWindows):
    """Syncs each customer order the audit records deleted, as its notification would."""

    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        order_ends: OrderEnds,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        def take(deleted: Change) -> int:
            return order_ends.sync_deleted(
                deleted.href, deleted.moment.astimezone(UTC), deleted.context or None
            )

        super().__init__(
            recorder,
            DELETIONS_CURSOR,
            lambda since, until: audit_changes(
                client, since, until, "customerorder", "delete", AUDIT_PAGE_ROWS
            ),
            take,
            kind="customer order deletions",
            item="deleted customer order",
            remedy="release its reservation through the API",
            clock=clock,
        )
