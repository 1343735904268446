"""Customer orders cancelled in MoySklad while their notification was lost, read from its audit.

A cancel releases its order's reservation when its `customerorder` notification arrives
(moysklad_order_cancels.py). MoySklad drops a notification after a few tries in a row, so a cancel
made while `ledger adapters run` restarted, or while its host was unreachable, left the units
reserved until the reservation expired, or for good if it has no expiry. The audit keeps every
update of an order with the fields it changed (`entityType=customerorder`, `eventType=update`, its
`diff`), read in windows as moysklad_audit.py says. Each update that changed `state` is synced as
its notification would be (OrderCancels.sync, with the audit's moment as the change's): the order
is read, and if it is in the mapped released state now, and the change came after the reservation
was placed, what the reservation still holds is released, once however often it is read (the
release's id is the notification's). An update of other fields costs no request.

An update read again in the overlap of two windows is passed without a request while this process
remembers it (TAKEN_REMEMBERED_MAX).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from adapters.moysklad import MoySkladClient
from adapters.moysklad_audit import AUDIT_PAGE_ROWS, AuditWindows, Change, Unreadable, audit_changes
from adapters.moysklad_order_cancels import OrderCancels

CURSOR = "moysklad.order_states"
STATE_FIELD = "state"  # the order's field a cancel changes, as the audit's diff names it
TAKEN_REMEMBERED_MAX = 10_000


def order_updates(
    client: MoySkladClient, since: datetime, until: datetime, page_rows: int = AUDIT_PAGE_ROWS
) -> Iterator[Change | Unreadable]:
    """Every update of a customer order the audit records from `since` to `until`."""
    return audit_changes(client, since, until, "customerorder", "update", page_rows)


class CancelCatchUp(AuditWindows):
    """Syncs each customer order whose state an update changed, as its notification would."""

    def __init__(
        self,
        recorder: Any,
        client: MoySkladClient,
        cancels: OrderCancels,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cancels = cancels
        self._taken: OrderedDict[Change, None] = OrderedDict()
        super().__init__(
            recorder,
            CURSOR,
            lambda since, until: order_updates(client, since, until),
            self._take,
            kind="customer order states",
            item="customer order",
            remedy="if it was cancelled, release its reservation through the API",
            clock=clock,
        )

    def _take(self, change: Change) -> int:
        if STATE_FIELD not in change.fields or change in self._taken:
            return 0
        submitted = self.cancels.sync(change.href, change.moment.astimezone(UTC))
        self._taken[change] = None
        if len(self._taken) > TAKEN_REMEMBERED_MAX:
            self._taken.popitem(last=False)
        return submitted
