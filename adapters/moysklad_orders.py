"""MoySklad customer orders out: a reservation placed in the ledger for an order becomes a
customer order; when it ends, the order's reserve is cleared and it takes the mapped state.
(The client and what the documentation says of the wire: moysklad.py.)

Idempotency: a customer order's `externalCode` is the ledger order id; before creating one we look
it up (`filter=externalCode=...;store=...`: a reservation across stores is an order at each of its
stores under one order id), so a retried push never creates a duplicate. Only one worker
pushes at a time (a lease in adapter_positions), and within a push one order's items go one after
another, so the lookup and the create do not race. Each order made or found for a reservation is
written in the book of the orders the ledger made, with that reservation (moysklad_order_book.py),
so that its deletion can be traced to what it carried.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from adapters import moysklad_order_book
from adapters.db import journal, transaction
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM, MoySkladClient, errors_text
from adapters.moysklad_order_book import BookedReservation, remember_order
from adapters.outbound import Failure, Item, TargetUnavailable
from ledger.clock import utc_now, utc_text
from ledger.domain.model import Entry, EventType, ReservationStatus
from ledger.sql import SqlTx

log = secret_safe_logger("adapters.moysklad_orders")

ORDER_KEY = "order:"
# A reservation shipped: its order, kept open for it by an earlier one that ended, is cleared then.
SHIPPED_KEY = "order-shipped:"
CLOSED_STATUSES = frozenset({"released", "expired"})  # a reservation that holds nothing any more
HOLDING_STATUSES = frozenset({ReservationStatus.ACTIVE.value, ReservationStatus.PARTIALLY_SHIPPED.value})

# A reservation placed creates the order; released or expired, the order's reserve is cleared.
ORDER_EVENT_TYPES = frozenset(
    {EventType.RESERVATION, EventType.RESERVATION_RELEASE, EventType.RESERVATION_EXPIRED}
)


class MoySkladOrdersTarget:
    """A reservation placed in the ledger for an order becomes a MoySklad customerorder; when the
    reservation is released or expires, the order's positions are reserved no more (`reserve` 0)
    and, with a `moysklad,status,released|expired,<state uuid>` mapping, the order takes that state,
    unless another reservation of its order id at that store still holds it (a later one reuses
    the order): then the last of them to end closes it (shipped, it clears the reserve and leaves
    the state)."""

    name = "moysklad"
    batch_items_max = 20

    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self.config = client.config
        self._pruned_at = float("-inf")  # when the book of orders was last pruned (monotonic)

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        event = entry.event
        if not event.reservation_id or self.mappings.external(SYSTEM, "store", event.store_id) is None:
            return ()
        if event.type in ORDER_EVENT_TYPES:
            return [f"{ORDER_KEY}{event.store_id}|{event.reservation_id}"]
        if event.type is EventType.SHIPMENT:
            return [f"{SHIPPED_KEY}{event.store_id}|{event.reservation_id}"]
        return ()

    def all_keys(self) -> Iterable[str]:
        return ()  # orders are created from their reservations as they happen, never in bulk

    def load(self, keys: Sequence[str]) -> list[Item]:
        items = []
        with self.recorder.read_transaction() as tx:
            for key in keys:
                shipped = key.startswith(SHIPPED_KEY)
                if not (shipped or key.startswith(ORDER_KEY)):
                    continue
                store_id, reservation_id = key.split(":", 1)[1].split("|", 1)
                row = tx.fetchone(
                    "SELECT * FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s",
                    (store_id, reservation_id),
                )
                if row is None:
                    continue
                if shipped and not (
                    row["status"] == ReservationStatus.SHIPPED.value
                    and _kept_open(tx, store_id, row["order_id"] or reservation_id, reservation_id)
                ):
                    continue  # the order's own shipment: MoySklad's demand says what it shipped
                lines = [[sku, int(qty)] for sku, qty, *_ in orjson.loads(row["lines"])]
                items.append(
                    Item(
                        key,
                        {
                            "store_id": store_id,
                            "reservation_id": reservation_id,
                            "order_id": row["order_id"] or reservation_id,
                            "lines": lines,
                            "status": row["status"],
                        },
                    )
                )
        return items

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        self._prune_book()
        failures: dict[str, Failure] = {}
        unavailable: list[TargetUnavailable] = []
        # One customer order's items one after another, in the order given: two threads that each
        # looked an order up and found none would both create it. Different orders in parallel.
        by_order: dict[tuple[str, str], list[Item]] = {}
        for item in items:
            by_order.setdefault((item.payload["store_id"], item.payload["order_id"]), []).append(item)
        groups = list(by_order.values())
        with ThreadPoolExecutor(max_workers=self.config.parallel_max) as pool:
            results = list(pool.map(self._push_in_turn, groups))
        outcome_of: dict[str, Failure | TargetUnavailable | None] = {}
        for group, group_outcomes in zip(groups, results, strict=True):
            for item, outcome in zip(group, group_outcomes, strict=True):
                outcome_of[item.key] = outcome
        outcomes = [outcome_of[item.key] for item in items]
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, TargetUnavailable):
                unavailable.append(outcome)
            elif outcome is not None:
                failures[item.key] = outcome
        if unavailable:
            done = frozenset(
                item.key for item, outcome in zip(items, outcomes, strict=True) if outcome is None
            )
            raise TargetUnavailable(str(unavailable[0]), unavailable[0].retry_after_s, done)
        return failures

    def _prune_book(self) -> None:
        """Lets the book of orders go of the orders whose reservations all ended, past the
        retention (moysklad_order_book.prune), at most every PRUNE_INTERVAL_S: the book grew by
        every order made, for ever. A prune that fails is logged and tried at the next interval;
        the push goes on (the book only grows meanwhile)."""
        if time.monotonic() - self._pruned_at < moysklad_order_book.PRUNE_INTERVAL_S:
            return
        self._pruned_at = time.monotonic()
        before = utc_text(utc_now() - timedelta(days=moysklad_order_book.RETENTION_DAYS))
        try:
            pruned = moysklad_order_book.prune(self.recorder, before)
        except Exception:
            log.exception("moysklad: the book of orders could not be pruned")
            return
        if pruned:
            log.info("moysklad: %d order(s) whose reservations all ended left the book of orders", pruned)

    def _push_in_turn(self, items: list[Item]) -> list[Failure | TargetUnavailable | None]:
        return [self._push_one(item) for item in items]

    def _push_one(self, item: Item) -> Failure | TargetUnavailable | None:
        try:
            if item.key.startswith(SHIPPED_KEY):
                return self._close_order(item, with_state=False)
            if item.payload.get("status") in CLOSED_STATUSES:
                return self._close_order(item)
            return self._create_order(item)
        except TargetUnavailable as error:
            return error

    def _close_order(self, item: Item, *, with_state: bool = True) -> Failure | None:
        """The reservation holds nothing any more: every position's `reserve` goes to 0 (PUT
        .../positions/{id}: md/documents/_customerOrder.md, positions have resources of their
        own), and the order takes the state mapped to the reservation's status, if one is (not
        `with_state`: the last reservation an order was kept open for was shipped; its reserve is
        cleared, its state left). Setting values, not moving them: a push retried after a crash
        finds them set and changes nothing."""
        payload = item.payload
        store = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if store is None:
            # Its mapping removed since: the order, if any, cannot be found to clear its reserve.
            return Failure(f"no moysklad store mapped to {payload['store_id']}", permanent=True)
        if self._held_by_another(payload["store_id"], payload["order_id"], payload["reservation_id"]):
            # A later reservation of the same order id reuses this customer order: it stays open
            # (its reserve and state), closed when the last reservation holding it ends. Moved to
            # the released state now, it would read as a person's cancel of the order
            # (moysklad_order_ends.py) and release the reservation that still holds.
            return None
        order = self.client.find_order(payload["order_id"], store.external_id)
        if order is None:
            return None  # never created (placed and closed between two pushes): nothing reserved there
        for position in self.client.order_positions(order):
            if position.get("reserve"):
                answer = self.client.request(
                    "PUT",
                    f"entity/customerorder/{order['id']}/positions/{position['id']}",
                    json_body={"reserve": 0},
                )
                if answer.status != 200:
                    return Failure(
                        f"customerorder {payload['order_id']} position {position['id']}: "
                        f"HTTP {answer.status}: {errors_text(answer)}"
                    )
        rule = self.mappings.status(SYSTEM, payload["status"]) if with_state else None
        if rule is None:
            return None
        if self._held_by_another(payload["store_id"], payload["order_id"], payload["reservation_id"]):
            return None  # placed while the reserve was cleared: as above, the state waits for it
        state_href = f"{self.client.http.base_url}entity/customerorder/metadata/states/{rule.target_status}"
        if ((order.get("state") or {}).get("meta") or {}).get("href") == state_href:
            return None
        answer = self.client.request(
            "PUT",
            f"entity/customerorder/{order['id']}",
            json_body={
                "state": {"meta": {"href": state_href, "type": "state", "mediaType": "application/json"}}
            },
        )
        if answer.status == 200:
            return None
        return Failure(
            f"customerorder {payload['order_id']} state: HTTP {answer.status}: {errors_text(answer)}"
        )

    def _held_by_another(self, store_id: str, external_code: str, reservation_id: str) -> bool:
        """Whether a reservation other than `reservation_id` at `store_id`, of the customer order
        whose `externalCode` is `external_code`, still holds units; or one at another ledger store
        mapped to the same MoySklad store (an older release let two share one: the push finds the
        order by code and store, so the one order carries both stores' reservations)."""
        ref = self.mappings.external(SYSTEM, "store", store_id)
        stores = (self.mappings.shared(SYSTEM, "store").get(ref.external_id) if ref else None) or [store_id]
        with self.recorder.read_transaction() as tx:
            carried = {store: carried_reservations(tx, store, external_code) for store in stores}
        return any(
            r.holds and (store != store_id or r.reservation_id != reservation_id)
            for store, reservations in carried.items()
            for r in reservations
        )

    def _reused_closed(self, order: dict[str, Any], payload: dict[str, Any]) -> bool:
        """Whether the order found for the payload's reservation is an earlier reservation's that
        the ledger (or a person) closed. It is reused as it is, so MoySklad shows it closed (in the
        state mapped as released or expired, or, without such a row, reserving nothing) for an
        order the ledger holds units for; staff would pass it by: said in the journal once, for a
        person to reopen it there."""
        if order.get("description") == _description(payload["reservation_id"]):
            return False  # this reservation's own order, looked up again
        state = str(((order.get("state") or {}).get("meta") or {}).get("href") or "").rsplit("/", 1)[-1]
        closed_states = {
            rule.target_status
            for status in CLOSED_STATUSES
            if (rule := self.mappings.status(SYSTEM, status)) is not None
        }
        if state in closed_states:
            how = "in the state mapped as released or expired"
        else:
            positions = self.client.order_positions(order)  # a reuse is rare: one read
            if not positions or any(position.get("reserve") for position in positions):
                return False  # open: kept open for another reservation, or reopened by a person
            how = "reserving nothing"
        subject = f"customer order {payload['order_id']} at {payload['store_id']}"
        detail = (
            f"reused by reservation {payload['reservation_id']} while closed in MoySklad ({how}): "
            "reopen it there (state, positions and reserve), or release the reservation"
        )
        try:
            with transaction(self.recorder) as tx:
                said = tx.fetchone(  # a push of the same key again (a cycle that did not save)
                    "SELECT 1 AS said FROM adapter_journal WHERE adapter = %s AND kind = 'alert' "
                    "AND subject = %s AND detail = %s LIMIT 1",
                    (SYSTEM, subject, detail),
                )
                if said is None:
                    journal(tx, SYSTEM, "alert", subject, detail)
        except Exception:  # the alert is the operator's to read; the push goes on
            log.exception("moysklad: the journal could not take the alert on %s", subject)
        log.error("ALERT moysklad %s: %s", subject, detail)
        return True

    def _create_order(self, item: Item) -> Failure | None:
        payload = item.payload
        store = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if store is None:
            return Failure(f"no moysklad store mapped to {payload['store_id']}", permanent=True)
        positions = []
        for sku, qty in payload["lines"]:
            ref = self.mappings.external(SYSTEM, "sku", sku)
            if ref is None:
                return Failure(f"no moysklad product or variant mapped to {sku}", permanent=True)
            quantity = self.mappings.to_external_units(SYSTEM, sku, qty)
            positions.append(
                {
                    "quantity": quantity,
                    "reserve": quantity,
                    "assortment": self.client.meta(ref.external_type or "product", ref.external_id),
                }
            )
        found = self.client.find_order(payload["order_id"], store.external_id)
        if found is not None:
            # Created before (a retry after a crash or a timeout), or an earlier reservation's order
            # reused by this one as it is. One found closed reserves nothing for it: not booked, so
            # its deletion releases nothing (moysklad_order_book.py).
            if self._reused_closed(found, payload):
                return None
            return self._book(str(found["id"]), payload)
        body: dict[str, Any] = {
            "externalCode": payload["order_id"],
            "store": self.client.meta("store", store.external_id),
            "positions": positions,
            "description": _description(payload["reservation_id"]),
        }
        if self.config.organization_id:
            body["organization"] = self.client.meta("organization", self.config.organization_id)
        if self.config.agent_id:
            body["agent"] = self.client.meta("counterparty", self.config.agent_id)
        answer = self.client.request("POST", "entity/customerorder", json_body=body)
        if answer.status in (200, 201):
            # The answer is the order made (md/documents/_customerOrder.md). One without its id
            # fails the cycle: the retry finds the order by its code and writes it then.
            made = str((answer.json() or {})["id"])
            return self._book(made, payload)
        return Failure(f"customerorder {payload['order_id']}: HTTP {answer.status}: {errors_text(answer)}")

    def _book(self, order_uuid: str, payload: dict[str, Any]) -> Failure | None:
        """Books the reservation under its order; the order deleted meanwhile (a person, between
        MoySklad's answer and now), the push is tried again, finds no order and makes a new one."""
        if remember_order(self.recorder, order_uuid, _carried(payload)):
            return None
        return Failure(f"customerorder {payload['order_id']}: deleted in MoySklad while it was pushed")

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        return None


def _kept_open(tx: SqlTx, store_id: str, external_code: str, reservation_id: str) -> bool:
    """Whether another reservation of the customer order whose `externalCode` is `external_code`
    ended at `store_id` by a release or an expiry: its close may have left the order open for
    this one. Whether it did depends on what the orders' worker saw when it pushed that close, not
    on the ledger's order of the two (the worker runs behind the ledger), so an order closed
    before this reservation reused it is looked at too: two reads, and nothing written."""
    return any(
        r.status in CLOSED_STATUSES and r.reservation_id != reservation_id
        for r in carried_reservations(tx, store_id, external_code)
    )


@dataclass(frozen=True, slots=True)
class CarriedReservation:
    """A reservation a customer order carries at its store."""

    reservation_id: str
    status: str
    placed_at_position: int
    own: bool  # placed with the order id (else without one, under that id)

    @property
    def holds(self) -> bool:
        return self.status in HOLDING_STATUSES


def carried_reservations(tx: SqlTx, store_id: str, external_code: str) -> list[CarriedReservation]:
    """The reservations at `store_id` that the customer order whose `externalCode` is
    `external_code` carries, oldest first: those placed with that order id (a later one reuses the
    order), and one placed without an order id under that id (its code is its id); never another
    order's reservation whose id happens to be this order's id. A few rows: an order id's
    reservations at one store."""
    rows = tx.fetchall(
        "SELECT reservation_id, order_id, status, placed_at_position FROM ledger_reservations "
        "WHERE store_id = %s AND (order_id = %s OR (order_id IS NULL AND reservation_id = %s)) "
        "ORDER BY placed_at_position, reservation_id",
        (store_id, external_code, external_code),
    )
    return [
        CarriedReservation(
            str(row["reservation_id"]),
            str(row["status"]),
            int(row["placed_at_position"]),
            row["order_id"] == external_code,
        )
        for row in rows
    ]


def _carried(payload: dict[str, Any]) -> BookedReservation:
    """The reservation a push's payload is for, as the book of orders holds it."""
    return BookedReservation(payload["store_id"], payload["order_id"], payload["reservation_id"])


def _description(reservation_id: str) -> str:
    """A customer order's description: the reservation it was made for."""
    return f"stock ledger reservation {reservation_id}"
