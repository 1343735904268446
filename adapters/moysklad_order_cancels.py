"""Customer orders cancelled in MoySklad release their reservation in the ledger (seed 001: order
statuses mapped both ways; an order a person cancels there must free its units for sale).

A customer order is made from a ledger reservation (moysklad_orders.MoySkladOrdersTarget: `externalCode`
the order id, or the reservation id for a reservation placed without one; `store` the
reservation's store), and when the ledger releases the reservation it moves the order to the state
mapped by `moysklad,status,released,<state uuid>`. The same row is read the other way. A
`customerorder` UPDATE notification (md/dictionaries/_webhook.md) that names `state` among its
`updatedFields` (the subscription asks for `diffType` FIELDS) is read back; if the order is in that
state now, what every reservation its `externalCode` names at its store still holds is released
(a later reservation of the order id reuses the order, and the ledger keeps the order open while
any of them holds), each by a `stock.reservation_release` from source `moysklad` without lines
(CONTRACT §1: everything still reserved), id `customerorder:<order uuid>:<reservation id>:release`,
so a notification delivered again records nothing more.

Only a change made after the reservation was placed counts: the notification's
`auditContext.moment` (when the change was made, to the second, Moscow time) must not be before the
second the ledger recorded the reservation. A customer order is reused by a later reservation of
the same order id (moysklad_orders.py, `_create_order`) while it may still be in the cancelled state, and a
cancel's notification can come late (an outage, a backlog): neither releases the reservation placed
after it. MoySklad's clock and this host's are taken to agree to the second: a change dated in the
placement's second counts as after it, and a real cancel dated before the placement by a clock
behind ours is left (the reservation keeps its units until it expires or is released through the
API: the safe side). Every other
notification of an order is passed without a request (orders are edited often, and MoySklad's
request budget is shared with the demands): one that names other fields, or none (a change not
made by a user, or a subscription without FIELDS: `ledger adapters register-webhooks` sets it).
The ledger's own move of an order asks MoySklad for no notification (moysklad.py), and would
release nothing more if one came.

A cancel whose notification MoySklad dropped is read back from its audit by the catch-up
(moysklad_cancel_catchup.py), which calls `sync` with the audit's moment of the change.

Not followed: an order deleted in MoySklad (its notification carries only its href, and the order is
no longer there to say which reservation it was: reconcile, or release it through the API); other
states; changed positions (the reservation's lines are the site's). Without the row nothing is
released.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from adapters.http import ForeignUrl, under_base
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.moysklad import (
    DOCUMENT_NOT_VISIBLE,
    PRINCIPAL,
    SOURCE,
    SYSTEM,
    MoySkladClient,
    entity_id,
    error_codes,
    parse_moment,
)
from adapters.moysklad_demands import DemandsRefused, order_holding_reservations
from adapters.outbound import TargetUnavailable
from adapters.sink import EventSink
from ledger.domain.model import EventType, StockEvent

log = secret_safe_logger("adapters.moysklad_order_cancels")

RELEASED = "released"  # the mapping row's local id: the ledger's state, and the order's
REFERENCE_CHARS_MAX = 256
SYNCED_REMEMBERED_MAX = 10_000  # changes synced, by their audit context and order: passed if seen again


class OrderCancels:
    """Processes stored `customerorder` notifications (see the module's docstring)."""

    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient, sink: EventSink) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self.sink = sink
        # The inbox's thread and the catch-up's both sync: the memo is theirs together.
        self._synced: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._memo_lock = threading.Lock()

    def handle(self, delivery: dict[str, Any]) -> int:
        """Every customer order of one delivery whose state changed; returns how many releases
        were submitted."""
        submitted = 0
        context = delivery.get("auditContext") or {}
        moment = context.get("moment")
        change_id = (context.get("meta") or {}).get("href")
        for notice in delivery.get("events") or []:
            meta = notice.get("meta") or {}
            if meta.get("type") != "customerorder" or notice.get("action") != "UPDATE":
                continue
            fields = notice.get("updatedFields")
            if not isinstance(fields, list) or "state" not in fields or not moment:
                continue  # not a change of its state (the module's docstring): no request
            submitted += self.sync(str(meta["href"]), _utc(moment), change_id)
        return submitted

    def sync(self, href: str, changed_at: datetime, change_id: str | None = None) -> int:
        """Releases the reservation of the order at `href` if the order is in the released state
        now and the change at `changed_at` came after the reservation was placed. `change_id`, the
        address of the change's audit context (a notification's `auditContext`, the context the
        audit lists it in): a change synced already is passed without a request, so a cancel both
        notified and read back from the audit is read once."""
        key = None if not change_id else (change_id, href)
        if key is not None:
            with self._memo_lock:
                if key in self._synced:
                    return 0
        submitted = self._sync(href, changed_at)
        if key is not None:
            with self._memo_lock:
                self._synced[key] = None
                if len(self._synced) > SYNCED_REMEMBERED_MAX:
                    self._synced.popitem(last=False)
        return submitted

    def _sync(self, href: str, changed_at: datetime) -> int:
        rule = self.mappings.status(SYSTEM, RELEASED)
        if rule is None:
            return 0
        url = self.client.http.url(href)
        if not under_base(self.client.http.base_url, url):
            raise ForeignUrl(url, self.client.http.base_url)
        answer = self.client.request("GET", href)
        if answer.status == 404:
            return 0  # deleted since: not followed (the module's docstring)
        if answer.status == 403 and DOCUMENT_NOT_VISIBLE in error_codes(answer):
            # Not this token's to read: no retry changes it (given up with an alert). Any other 403
            # (the account's rights, the token) is an outage, waited out as the demands' are.
            raise DemandsRefused(f"moysklad customerorder: HTTP 403, not readable with this token: {href}")
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad customerorder: HTTP {answer.status}")
        order = answer.json() or {}
        state = str(((order.get("state") or {}).get("meta") or {}).get("href") or "").rsplit("/", 1)[-1]
        order_id = order.get("externalCode")
        store_href = ((order.get("store") or {}).get("meta") or {}).get("href")
        store_id = self.mappings.local(SYSTEM, "store", entity_id(store_href)[1]) if store_href else None
        if state != rule.target_status or not order_id or store_id is None:
            return 0  # not cancelled, or not an order the ledger made (no code, or a store not mapped)
        name = order.get("name") or order.get("id")
        events = []
        # Every reservation the order carries that still holds: a later reservation of the order id
        # reuses the order, and the ledger keeps it open while any of them holds (moysklad_orders.py).
        for reservation_id in order_holding_reservations(self.recorder, store_id, str(order_id)):
            placed = _placed_at(self.recorder, store_id, reservation_id)
            if placed is None or changed_at < placed.replace(microsecond=0):
                log.info(
                    "customerorder %s: cancelled at %s, before reservation %s was placed (%s): left",
                    name,
                    changed_at.isoformat(),
                    reservation_id,
                    placed.isoformat() if placed else "unknown",
                )
                continue
            events.append(
                StockEvent(
                    event_id=f"customerorder:{order.get('id')}:{reservation_id}:release",
                    source=SOURCE,
                    type=EventType.RESERVATION_RELEASE,
                    time=changed_at,
                    store_id=store_id,
                    lines=(),
                    reservation_id=reservation_id,
                    order_id=str(order_id),
                    reference=f"moysklad customerorder {name}: moved to the released state"[
                        :REFERENCE_CHARS_MAX
                    ],
                    principal=PRINCIPAL,
                )
            )
        if events:
            self.sink.record(events)
            released = ", ".join(str(event.reservation_id) for event in events)
            log.info("customerorder %s (order %s): reservation(s) %s released", name, order_id, released)
        return len(events)


def _placed_at(recorder: Any, store_id: str, reservation_id: str) -> datetime | None:
    """When the ledger recorded the reservation's placement (its entry's `recorded_at`)."""
    with recorder.read_transaction() as tx:
        row = tx.fetchone(
            "SELECT h.recorded_at FROM ledger_reservations r JOIN ledger_history h "
            "ON h.position = r.placed_at_position WHERE r.store_id = %s AND r.reservation_id = %s "
            "LIMIT 1",
            (store_id, reservation_id),
        )
    return datetime.fromisoformat(str(row["recorded_at"]).replace("Z", "+00:00")) if row else None


def _utc(moment: Any) -> datetime:
    return parse_moment(str(moment)).astimezone(UTC)
