"""Customer orders cancelled in MoySklad release their reservation in the ledger (seed 001: order
statuses mapped both ways; an order a person cancels there must free its units for sale).

A customer order is made from a ledger reservation (moysklad.MoySkladOrdersTarget: `externalCode`
the order id, `store` the reservation's store), and when the ledger releases the reservation it
moves the order to the state mapped by `moysklad,status,released,<state uuid>`. The same row is read
the other way: a `customerorder` UPDATE notification (md/dictionaries/_webhook.md) whose order, read
back, has moved into that state (`state.meta.href` ends with the state's uuid:
md/documents/_customerOrder.md; moysklad_order_states.py keeps the state each order was last seen
in, the ledger's own moves included, so that an order found there again releases nothing) releases
what the reservation at the order's store still holds: a `stock.reservation_release` from
source `moysklad` without lines (CONTRACT §1: everything still reserved), id
`customerorder:<order uuid>:<reservation id>:release`, so a notification delivered again is a
duplicate, and a later reservation of the same order (which reuses its customer order) is not.
The reservation is the one the order's `externalCode` names (moysklad_demands.order_reservation:
the order id's own, else one placed without an order id under that id). A
reservation that holds nothing any more (shipped, released, expired) is left as it is. The ledger's
own move of an order to that state asks MoySklad for no notification (moysklad.py), and would
release nothing more if one came.

The subscription asks for `diffType` FIELDS, so that each notification lists the fields changed
(`updatedFields`: md/dictionaries/_webhook.md, "changed by the user"): one naming other fields and
not `state` is passed without a request (orders are edited often, and MoySklad's request budget is
shared with the demands); one naming none, or without the list (a subscription made before), is
read back.

Not followed: an order deleted in MoySklad (its notification carries only its href, and the order is
no longer there to say which reservation it was: reconcile, or release it through the API); other
states; changed positions (the reservation's lines are the site's). Without the row nothing is
released.
"""

from __future__ import annotations

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
from adapters.moysklad_demands import DemandsRefused, order_reservation
from adapters.moysklad_order_states import remember_state, seen_state
from adapters.outbound import TargetUnavailable
from adapters.sink import EventSink
from ledger.domain.model import EventType, ReservationStatus, StockEvent

log = secret_safe_logger("adapters.moysklad_order_cancels")

RELEASED = "released"  # the mapping row's local id: the ledger's state, and the order's
REFERENCE_CHARS_MAX = 256
_HOLDING = frozenset({ReservationStatus.ACTIVE.value, ReservationStatus.PARTIALLY_SHIPPED.value})


class OrderCancels:
    """Processes stored `customerorder` notifications (see the module's docstring)."""

    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient, sink: EventSink) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self.sink = sink

    def handle(self, delivery: dict[str, Any]) -> int:
        """Every customer order of one delivery; returns how many releases were submitted."""
        submitted = 0
        for notice in delivery.get("events") or []:
            meta = notice.get("meta") or {}
            if meta.get("type") != "customerorder" or notice.get("action") != "UPDATE":
                continue
            fields = notice.get("updatedFields")
            if isinstance(fields, list) and fields and "state" not in fields:
                continue  # other fields (diffType FIELDS): not read back, the budget is shared
            submitted += self.sync(str(meta["href"]))
        return submitted

    def sync(self, href: str) -> int:
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
        order_id = order.get("externalCode")
        store_href = ((order.get("store") or {}).get("meta") or {}).get("href")
        store_id = self.mappings.local(SYSTEM, "store", entity_id(store_href)[1]) if store_href else None
        if not order_id or store_id is None or not order.get("id"):
            return 0  # not an order the ledger made (no externalCode, or a store it does not map)
        order_uuid = str(order["id"])
        state = str(((order.get("state") or {}).get("meta") or {}).get("href") or "").rsplit("/", 1)[-1]
        if state != rule.target_status:
            remember_state(self.recorder, order_uuid, state)  # a later move into it is a cancel
            return 0
        if seen_state(self.recorder, order_uuid) == state:
            return 0  # found there, not moved there: its own cancel, or a later reservation's order
        submitted = self._release(order, str(order_id), store_id)
        remember_state(self.recorder, order_uuid, state)  # after: a crash before it releases again
        return submitted

    def _release(self, order: dict[str, Any], order_id: str, store_id: str) -> int:
        found = order_reservation(self.recorder, store_id, order_id)
        if found is None or found[1] not in _HOLDING:
            return 0
        reservation_id = found[0]
        name = order.get("name") or order.get("id")
        event = StockEvent(
            event_id=f"customerorder:{order.get('id')}:{reservation_id}:release",
            source=SOURCE,
            type=EventType.RESERVATION_RELEASE,
            time=_utc(order.get("updated")),
            store_id=store_id,
            lines=(),
            reservation_id=reservation_id,
            order_id=order_id,
            reference=f"moysklad customerorder {name}: moved to the released state"[:REFERENCE_CHARS_MAX],
            principal=PRINCIPAL,
        )
        self.sink.record([event])
        log.info("customerorder %s (order %s): reservation %s released", name, order_id, reservation_id)
        return 1


def _utc(moment: Any) -> datetime:
    return parse_moment(str(moment)).astimezone(UTC) if moment else datetime.now(UTC)
