"""Customer orders cancelled or deleted in MoySklad release their reservation in the ledger (seed
001: order statuses mapped both ways; an order a person cancels there must free its units for sale).

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

A deleted order frees its reserve in MoySklad, so it is followed as a cancel is, with the same
row as the sign that MoySklad may release: a `customerorder` DELETE notification carries only the
order's href, and the order is gone, so the book of the orders the ledger made
(moysklad_order_book.py) says which reservations it carried; what those still hold is released,
each at its own store, by the same release id as a cancel's (an order cancelled and deleted is
released once). No rule of time is needed: each was pushed to the order while it existed, so
placed before the deletion, and a reservation of the order id placed later makes an order of its
own. An order deleted that the book does not hold (made by someone else, or before the book
existed and booked nothing since) is passed with a log line.

A cancel or a deletion whose notification MoySklad dropped is read back from its audit by the
catch-up (moysklad_order_ends_catchup.py), which calls `sync` or `sync_deleted` with the audit's moment
of the change.

Not followed: an order put in the recycle bin (the pages do not say whether its reserve still
holds), other states, changed positions (the reservation's lines are the site's). Without the row
nothing is released.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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
from adapters.moysklad_order_book import mark_deleted
from adapters.outbound import TargetUnavailable
from adapters.sink import EventSink
from ledger.domain.model import EventType, StockEvent

log = secret_safe_logger("adapters.moysklad_order_ends")

RELEASED = "released"  # the mapping row's local id: the ledger's state, and the order's
REFERENCE_CHARS_MAX = 256
SYNCED_REMEMBERED_MAX = 10_000  # changes synced, by their audit context and order: passed if seen again


class OrderEnds:
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
        """Every customer order of one delivery whose state changed, or that was deleted;
        returns how many releases were submitted."""
        submitted = 0
        context = delivery.get("auditContext") or {}
        moment = context.get("moment")
        change_id = (context.get("meta") or {}).get("href")
        for notice in delivery.get("events") or []:
            meta = notice.get("meta") or {}
            if meta.get("type") != "customerorder":
                continue
            if notice.get("action") == "DELETE":
                # The moment dates the release; the deletion's rule does not need it.
                deleted_at = _utc(moment) if moment else datetime.now(UTC)
                submitted += self.sync_deleted(str(meta["href"]), deleted_at, change_id)
                continue
            if notice.get("action") != "UPDATE":
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
        return self._once(change_id, href, lambda: self._sync(href, changed_at))

    def sync_deleted(self, href: str, deleted_at: datetime, change_id: str | None = None) -> int:
        """Releases what the reservations booked under the deleted order at `href` still hold
        (the releases dated `deleted_at`); `change_id` as for `sync`."""
        return self._once(change_id, href, lambda: self._sync_deleted(href, deleted_at))

    def _once(self, change_id: str | None, href: str, synced: Callable[[], int]) -> int:
        key = None if not change_id else (change_id, href)
        if key is not None:
            with self._memo_lock:
                if key in self._synced:
                    return 0
        submitted = synced()
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
            return 0  # deleted since: its deletion, notified or read back, releases what it carried
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
        store_ids = self._ledger_stores(entity_id(store_href)[1]) if store_href else []
        if state != rule.target_status or not order_id or not store_ids:
            return 0  # not cancelled, or not an order the ledger made (no code, or a store not mapped)
        name = str(order.get("name") or order.get("id"))
        submitted = 0
        for store_id in store_ids:
            ended = OrderEnd(str(order.get("id")), name, store_id, str(order_id), changed_at, "cancelled")
            # Every reservation the order carries that still holds, if the cancel came after it was
            # placed: a later reservation of the order id reuses the order, and the ledger keeps it
            # open while any of them holds (moysklad_orders.py).
            holding = order_holding_reservations(self.recorder, store_id, str(order_id))
            placed = [r for r in holding if self._placed_before(ended, r)]
            submitted += self._release(ended, placed, by_store=len(store_ids) > 1)
        return submitted

    def _ledger_stores(self, store_uuid: str) -> list[str]:
        """The ledger stores a MoySklad store stands for: one, or, mapped from several by an older
        release (a load refuses it since), each of them. The customer order of an order id at that
        store carried the reservations of every one of them (the push finds it by code and store,
        and reuses it), so a cancel releases each one's part: read back as one ledger store, the
        other's part was left to expire."""
        shared = self.mappings.shared(SYSTEM, "store").get(store_uuid)
        if shared:
            log.warning(
                "moysklad store %s is mapped from %d ledger stores (%s): a cancel there releases the "
                "order's part at each; map it from one (mappings load)",
                store_uuid,
                len(shared),
                ", ".join(shared),
            )
            return shared
        store_id = self.mappings.local(SYSTEM, "store", store_uuid)
        return [store_id] if store_id is not None else []

    def _sync_deleted(self, href: str, deleted_at: datetime) -> int:
        order_uuid = entity_id(href)[1]
        booked = mark_deleted(self.recorder, order_uuid)
        if not booked:
            log.info("customerorder %s deleted: not an order the ledger has in its book: left", order_uuid)
            return 0
        if self.mappings.status(SYSTEM, RELEASED) is None:
            log.info(
                "customerorder %s deleted: no moysklad released row: its reservations are left", order_uuid
            )
            return 0
        # Only the reservations booked under this order, each at its own store (a person may have
        # moved the order to another store, and the next reservation there found it): each was
        # pushed to the order while it existed, so placed before it was deleted
        # (moysklad_order_book.py); another order of the same order id carries its own.
        by_part: dict[tuple[str, str], list[str]] = {}
        for carried in booked:
            by_part.setdefault((carried.store_id, carried.order_id), []).append(carried.reservation_id)
        submitted = 0
        by_store = len({store_id for store_id, _order_id in by_part}) > 1
        for (store_id, order_id), reservation_ids in by_part.items():
            holding = set(order_holding_reservations(self.recorder, store_id, order_id))
            ended = OrderEnd(order_uuid, order_uuid, store_id, order_id, deleted_at, "deleted")
            submitted += self._release(ended, [r for r in reservation_ids if r in holding], by_store=by_store)
        return submitted

    def _placed_before(self, ended: OrderEnd, reservation_id: str) -> bool:
        """Whether the order ended after the reservation was placed (to the second)."""
        placed = _placed_at(self.recorder, ended.store_id, reservation_id)
        if placed is not None and ended.at >= placed.replace(microsecond=0):
            return True
        log.info(
            "customerorder %s: %s at %s, before reservation %s was placed (%s): left",
            ended.name,
            ended.how,
            ended.at.isoformat(),
            reservation_id,
            placed.isoformat() if placed else "unknown",
        )
        return False

    def _release(self, ended: OrderEnd, reservation_ids: list[str], *, by_store: bool = False) -> int:
        """Releases what each of the order's `reservation_ids` still holds at its store; returns how
        many releases were submitted. `by_store`: the order's releases span several ledger stores,
        whose parts may share a reservation id (a reservation across stores, an id that is the
        order's), so each release's id names its store: under one id, the second store's release
        was a duplicate of the first and released nothing. An order at one store keeps the id it
        always had, so that its cancel and its deletion still meet across an upgrade."""
        where = f"{ended.store_id}:" if by_store else ""
        events = [
            StockEvent(
                # A cancel and a deletion of one order release under one id: the second records
                # nothing more.
                event_id=f"customerorder:{ended.order_uuid}:{where}{reservation_id}:release",
                source=SOURCE,
                type=EventType.RESERVATION_RELEASE,
                time=ended.at,
                store_id=ended.store_id,
                lines=(),
                reservation_id=reservation_id,
                order_id=ended.order_id,
                reference=f"moysklad customerorder {ended.name}: {ended.what}"[:REFERENCE_CHARS_MAX],
                principal=PRINCIPAL,
            )
            for reservation_id in reservation_ids
        ]
        if events:
            self.sink.record(events)
            log.info(
                "customerorder %s (order %s) %s: reservation(s) %s released",
                ended.name,
                ended.order_id,
                ended.how,
                ", ".join(reservation_ids),
            )
        return len(events)


@dataclass(frozen=True, slots=True)
class OrderEnd:
    """A customer order cancelled or deleted in MoySklad, at `at`."""

    order_uuid: str
    name: str  # its name, or its uuid when it can no longer be read
    store_id: str
    order_id: str  # its externalCode: the ledger's order id
    at: datetime
    how: str  # "cancelled" | "deleted"

    @property
    def what(self) -> str:
        """What the release's reference says happened to the order."""
        return "moved to the released state" if self.how == "cancelled" else "deleted"


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
