"""MoySklad demands (shipments) into the ledger: created, corrected and deleted, each recorded once.

Every `demand` notification, whatever its action, means "bring the ledger in line with what this
demand holds now" (md/dictionaries/_webhook.md: a notification carries only the entity's type, its
href and the action; the data is read back with GET). What a demand holds: its store and, per SKU,
the quantity of its positions, in base units; nothing at all if it was deleted (DELETE, or a GET
answered 404) or is not conducted (`applicable` false: _demand.md, "Отметка о проведении").

What the ledger was told a demand holds is kept per demand in `adapter_moysklad_demands`: its
store, its lines and a revision number. A notification compares the demand now with that row
and records the difference:

- more of a SKU than recorded: a `stock.shipment` of the difference (under the order's
  reservation, as the first shipment);
- less, or the demand deleted: a `stock.return` of the difference (with the order id), so that
  the goods come back on hand; a reservation already consumed is not placed again;
- the store changed: a return of everything at the old store and a shipment at the new one.

The events' ids come from the demand and the revision: `demand:<id>` for the first (the id a
shipment had before corrections were followed), then `demand:<id>:r<N>:ship` and `...:return`.
The revision and the events are stored *before* they are submitted (as `pending`), and the
pending events are submitted again first thing by the next notification of that demand: a crash
between the two leaves nothing half done, and a redelivered CREATE, UPDATE or DELETE finds the
demand equal to its row and records nothing more. A revision is taken only if the row is still at
the one it was read at (compare and set, in the database): two adapters processes that read one
demand at once cannot both take its next revision, or the second's events (with the same ids)
would be taken for duplicates of the first's while its row kept what it read, and the next
correction would ship the difference again. The one that loses reads the row and the demand again.
A demand recorded before this table existed is read back once from the ledger's history by its
event id (`demand:<id>`).

Times: MoySklad's are Moscow time on the wire (`YYYY-MM-DD HH:MM:SS.fff`, md/_general.md "Формат
даты и времени"); the events carry them in UTC. A correction is dated by the demand's `updated`,
a deletion by the notification's `auditContext.moment`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.db import now_text, transaction
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
    errors_text,
    parse_moment,
)
from adapters.moysklad_order_status import mapped_states, queue_order_statuses
from adapters.moysklad_orders import carried_reservations
from adapters.outbound import TargetUnavailable
from adapters.sink import EventSink
from ledger.domain.model import EventType, Line, StockEvent

log = secret_safe_logger("adapters.moysklad_demands")

REFERENCE_CHARS_MAX = 256
# How many times in a row one notification may find its demand's next revision taken by another
# adapters process before it gives the delivery back to the inbox, to be tried again later.
REVISION_RACES_MAX = 5


class DemandsRefused(ValueError):
    """Demands that cannot be recorded as they are: the inbox tries again a few times, then gives
    the delivery up with an alert."""


@dataclass(frozen=True, slots=True)
class Holding:
    """What a demand holds: its ledger store and units per SKU (empty: nothing)."""

    store_id: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    order_id: str | None = None
    name: str | None = None

    def same_as(self, other: Holding) -> bool:
        return self.units() == other.units()

    def units(self) -> dict[tuple[str, str], int]:
        if self.store_id is None:
            return {}
        return {(self.store_id, sku): qty for sku, qty in self.lines.items() if qty}


@dataclass(frozen=True, slots=True)
class DemandRow:
    revision: int
    holding: Holding
    pending: list[StockEvent]


def demand_event_id(demand_id: str, revision: int, kind: str) -> str:
    if revision == 1 and kind == "ship":
        return f"demand:{demand_id}"
    return f"demand:{demand_id}:r{revision}:{kind}"


class DemandSync:
    """Processes stored `demand` notifications (see the module's docstring)."""

    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient, sink: EventSink) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self.sink = sink
        # The inbox's notifications and the catch-up (adapters/moysklad_catchup.py) sync demands
        # from two threads: one at a time, so that neither reads a demand only to lose its next
        # revision to the other (`_take_revision` keeps processes apart; this saves the work).
        self._syncing = threading.Lock()

    def handle(self, delivery: dict[str, Any]) -> int:
        """Every demand of one delivery (it may hold several: _webhook.md, "В массиве events может
        быть несколько объектов"); returns how many events were submitted. A demand that cannot be
        recorded (a SKU or store not mapped yet, a document the token may not read) does not hold
        the others back: they are recorded, and then it is raised, naming each such demand, for the
        inbox to try the delivery again and at last give it up with an alert (the demands recorded
        find their rows equal and record nothing more). MoySklad or the ledger unavailable stops
        the delivery at once: it is tried again whole (so does a demand whose next revision
        another process took REVISION_RACES_MAX times in a row)."""
        submitted = 0
        moment = _audit_moment(delivery)
        refused: list[str] = []
        for notice in delivery.get("events") or []:
            meta = notice.get("meta") or {}
            if meta.get("type") != "demand":
                continue
            try:
                submitted += self.sync(meta["href"], str(notice.get("action") or ""), moment)
            except ForeignUrl:
                raise  # forged, or the base URL is wrong: the inbox gives the delivery up at once
            except (ValueError, KeyError, TypeError) as error:
                refused.append(f"{meta.get('href')}: {type(error).__name__}: {error}")
        if refused:
            raise DemandsRefused(f"{len(refused)} demand(s) not recorded: " + "; ".join(refused))
        return submitted

    def sync(self, href: str, action: str, moment: datetime | None = None) -> int:
        """Brings the ledger in line with one demand as it is now; returns the events submitted."""
        with self._syncing:
            return self._sync(href, action, moment)

    def _sync(self, href: str, action: str, moment: datetime | None) -> int:
        url = self.client.http.url(href)
        if not under_base(self.client.http.base_url, url):
            raise ForeignUrl(url, self.client.http.base_url)  # not even its id is trusted
        _, demand_id = entity_id(href)
        for _ in range(REVISION_RACES_MAX):
            submitted = self._sync_once(demand_id, href, action, moment)
            if submitted is not None:
                return submitted
        raise TargetUnavailable(
            f"moysklad demand {demand_id}: another adapters process took its next revision "
            f"{REVISION_RACES_MAX} times in a row; the delivery is tried again later"
        )

    def _sync_once(self, demand_id: str, href: str, action: str, moment: datetime | None) -> int | None:
        """The events submitted; None when another process took the next revision first."""
        row = self._row(demand_id)
        if row.pending:  # stored before a crash, maybe not submitted: they go first, as they were
            self._submit(demand_id, row.revision, row.pending)
        if action == "DELETE":
            now_holds, when = Holding(), moment or datetime.now(UTC)
        else:
            now_holds, when = self._read(href)
        if now_holds.same_as(row.holding):
            return len(row.pending)
        revision = row.revision + 1
        events = list(self._difference(demand_id, revision, row.holding, now_holds, when))
        if not self._take_revision(demand_id, row.revision, now_holds, events):
            log.info("demand %s: revision %d taken by another process; reading it again", demand_id, revision)
            return None
        self._submit(demand_id, revision, events)
        log.info(
            "demand %s (%s): revision %d, %s",
            demand_id,
            action or "?",
            revision,
            ", ".join(f"{e.type.value} {e.event_id}" for e in events) or "no change",
        )
        return len(row.pending) + len(events)

    def _take_revision(self, demand_id: str, read_at: int, holds: Holding, events: list[StockEvent]) -> bool:
        """Stores the next revision and its events as pending, if the row is still at `read_at`
        (or still absent): False when another process stored one first."""
        with transaction(self.recorder) as tx:
            taken = tx.fetchall(
                "INSERT INTO adapter_moysklad_demands (demand_id, revision, holding, pending, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (demand_id) DO UPDATE SET "
                "revision = excluded.revision, holding = excluded.holding, pending = excluded.pending, "
                "updated_at = excluded.updated_at WHERE adapter_moysklad_demands.revision = %s "
                "RETURNING revision",
                (demand_id, read_at + 1, _holding_json(holds), _events_json(events), now_text(), read_at),
            )
        return bool(taken)

    # -- reading -------------------------------------------------------------------------------------

    def _read(self, href: str) -> tuple[Holding, datetime]:
        answer = self.client.request("GET", href, params={"expand": "positions,customerOrder"})
        if answer.status == 404:
            return Holding(), datetime.now(UTC)  # deleted since: it holds nothing
        if answer.status == 403 and DOCUMENT_NOT_VISIBLE in error_codes(answer):
            # This document is not the token's to read: no retry will change it, and taken for an
            # outage it held every later delivery back for good. Any other 403 (the account's
            # rights, the token) is an outage: the deliveries wait until it is put right.
            raise DemandsRefused(
                f"moysklad demand: HTTP 403, not readable with this token: {errors_text(answer)}"
            )
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad demand: HTTP {answer.status}")
        demand = answer.json()
        positions = demand.get("positions")
        if not _all_rows(positions):
            # More than the 1000 positions a document's answer expands, or none expanded: the rest
            # would read as shipped back (moysklad.MoySkladClient.document_positions).
            _, demand_id = entity_id(href)
            demand = {**demand, "positions": self.client.document_positions("demand", demand_id)}
        return self.holding(demand), _utc(demand.get("updated") or demand.get("moment"))

    def holding(self, demand: dict[str, Any]) -> Holding:
        name = demand.get("name") or demand.get("id")
        order = demand.get("customerOrder") or {}
        order_id = order.get("externalCode") or None
        if demand.get("applicable") is False:
            return Holding(None, {}, order_id, name)  # not conducted: moves no stock
        _, store_uuid = entity_id(demand["store"]["meta"]["href"])
        store_id = self.mappings.local(SYSTEM, "store", store_uuid)
        if store_id is None:
            raise ValueError(f"demand {name}: no ledger store mapped to moysklad store {store_uuid}")
        # A store or product mapped from two ledger ids (loaded by an older release) reads back as
        # one of them: held, naming it, as an unmapped one is, rather than shipped from the wrong one.
        shared_stores, shared_skus = (
            self.mappings.shared(SYSTEM, "store"),
            self.mappings.shared(SYSTEM, "sku"),
        )
        if store_uuid in shared_stores:
            error = self.mappings.shared_error(SYSTEM, "store", store_uuid, shared_stores[store_uuid])
            raise ValueError(f"demand {name}: {error}")
        totals: dict[str, int] = {}
        for position in _rows(demand.get("positions")):
            assortment = position["assortment"]["meta"]
            kind, assortment_uuid = entity_id(assortment["href"])
            if assortment_uuid in shared_skus:
                error = self.mappings.shared_error(
                    SYSTEM, "sku", assortment_uuid, shared_skus[assortment_uuid]
                )
                raise ValueError(f"demand {name}: {error}")
            sku = self.mappings.local(SYSTEM, "sku", assortment_uuid)
            if sku is None and (assortment.get("type") or kind) == "service":
                # A service (a delivery charge, say) keeps no stock (md/dictionaries/_service.md):
                # unmapped, it moves nothing. Taken for an unmapped product, it held the goods of
                # its demand back until the demand was given up, and they were never shipped.
                continue
            if sku is None:
                raise ValueError(f"demand {name}: no SKU mapped to moysklad {assortment_uuid}")
            totals[sku] = totals.get(sku, 0) + self.mappings.to_base_units(SYSTEM, sku, position["quantity"])
        return Holding(store_id, {sku: qty for sku, qty in totals.items() if qty > 0}, order_id, name)

    def _row(self, demand_id: str) -> DemandRow:
        with transaction(self.recorder) as tx:
            row = tx.fetchone(
                "SELECT revision, holding, pending FROM adapter_moysklad_demands WHERE demand_id = %s",
                (demand_id,),
            )
        if row is not None:
            return DemandRow(
                int(row["revision"]), _holding_from_json(row["holding"]), _events_from_json(row["pending"])
            )
        return DemandRow(*self._recorded_before(demand_id), [])

    def _recorded_before(self, demand_id: str) -> tuple[int, Holding]:
        """A demand whose shipment was recorded before this table kept it: read back from the
        ledger's history by its event id (revision 1), else nothing (revision 0)."""
        with self.recorder.read_transaction() as tx:
            rows = tx.fetchall(
                "SELECT h.store_id, h.sku, h.on_hand_delta, h.order_id FROM ledger_event_keys k "
                "JOIN ledger_history h ON h.position = k.position "
                "WHERE k.source = %s AND k.event_id = %s AND h.sku IS NOT NULL",
                (SOURCE, demand_event_id(demand_id, 1, "ship")),
            )
        if not rows:
            return 0, Holding()
        lines = {row["sku"]: -int(row["on_hand_delta"]) for row in rows}
        return 1, Holding(rows[0]["store_id"], lines, rows[0]["order_id"])

    # -- recording -----------------------------------------------------------------------------------

    def _difference(
        self, demand_id: str, revision: int, before: Holding, now: Holding, when: datetime
    ) -> Iterable[StockEvent]:
        shipped: dict[str, dict[str, int]] = {}
        returned: dict[str, dict[str, int]] = {}
        before_units, now_units = before.units(), now.units()
        for store_id, sku in sorted(before_units.keys() | now_units.keys()):
            change = now_units.get((store_id, sku), 0) - before_units.get((store_id, sku), 0)
            if change > 0:
                shipped.setdefault(store_id, {})[sku] = change
            elif change < 0:
                returned.setdefault(store_id, {})[sku] = -change
        name = now.name or before.name or demand_id
        for store_id, lines in returned.items():
            yield self._event(
                demand_event_id(demand_id, revision, "return"),
                EventType.RETURN,
                store_id,
                lines,
                when,
                order_id=before.order_id,
                reference=f"moysklad demand {name}: "
                + ("deleted" if not now_units else "corrected, revision " + str(revision)),
            )
        for store_id, lines in shipped.items():
            order_id = now.order_id
            yield self._event(
                demand_event_id(demand_id, revision, "ship"),
                EventType.SHIPMENT,
                store_id,
                lines,
                when,
                order_id=order_id,
                reservation_id=self._reservation_for(store_id, order_id) if order_id else None,
                reference=f"moysklad demand {name}"
                + ("" if revision == 1 else f": corrected, revision {revision}"),
            )

    @staticmethod
    def _event(
        event_id: str,
        kind: EventType,
        store_id: str,
        lines: dict[str, int],
        when: datetime,
        **fields: Any,
    ) -> StockEvent:
        fields["reference"] = fields["reference"][:REFERENCE_CHARS_MAX]
        return StockEvent(
            event_id=event_id,
            source=SOURCE,
            type=kind,
            time=when.astimezone(UTC),
            store_id=store_id,
            lines=tuple(Line(sku, qty) for sku, qty in sorted(lines.items())),
            principal=PRINCIPAL,
            **fields,
        )

    def _submit(self, demand_id: str, revision: int, events: list[StockEvent]) -> None:
        if events:
            self.sink.record(events)  # ids are the revision's: a second submission is a duplicate
        states = mapped_states(self.mappings)
        with transaction(self.recorder) as tx:  # not a later revision's, stored meanwhile by another
            tx.execute(
                "UPDATE adapter_moysklad_demands SET pending = %s WHERE demand_id = %s AND revision = %s",
                ("[]", demand_id, revision),
            )
            queue_order_statuses(tx, states, events)

    def _reservation_for(self, store_id: str, order_id: str) -> str | None:
        return order_reservation(self.recorder, store_id, order_id)


def order_reservation(recorder: Any, store_id: str, external_code: str) -> str | None:
    """The reservation at `store_id` a demand of the customer order whose `externalCode` is
    `external_code` ships under (moysklad_orders.carried_reservations): of the order id's own, else
    the one placed without an order id under that id, the oldest that still holds units, else the
    newest. (A later reservation of the order id reuses the order as it is, so the order's
    positions are its oldest reservation's, and the order stays open while any of them holds: a
    shipment under one that ended would leave the other's units reserved.)"""
    with recorder.read_transaction() as tx:
        carried = carried_reservations(tx, store_id, external_code)
    candidates = [r for r in carried if r.own] or carried
    holding = [r for r in candidates if r.holds]
    if holding:
        return holding[0].reservation_id
    return candidates[-1].reservation_id if candidates else None


def order_holding_reservations(recorder: Any, store_id: str, external_code: str) -> list[str]:
    """The ids of the reservations at `store_id` that the customer order whose `externalCode` is
    `external_code` carries and that still hold units, oldest first."""
    with recorder.read_transaction() as tx:
        carried = carried_reservations(tx, store_id, external_code)
    return [r.reservation_id for r in carried if r.holds]


def _audit_moment(delivery: dict[str, Any]) -> datetime | None:
    moment = (delivery.get("auditContext") or {}).get("moment")
    return _utc(moment) if moment else None


def _utc(moysklad_moment: str | None) -> datetime:
    """A MoySklad time (Moscow, on the wire) in UTC, as the ledger keeps it; now if there is none."""
    if not moysklad_moment:
        return datetime.now(UTC)
    return parse_moment(moysklad_moment).astimezone(UTC)


def _all_rows(collection: Any) -> bool:
    """Whether an expanded collection (a MetaArray) holds every row its `meta.size` counts."""
    if isinstance(collection, list):
        return True
    if not isinstance(collection, dict) or not isinstance(collection.get("rows"), list):
        return False
    size = (collection.get("meta") or {}).get("size")
    return not isinstance(size, int) or len(collection["rows"]) >= size


def _rows(collection: Any) -> list[dict[str, Any]]:
    if isinstance(collection, dict):
        return list(collection.get("rows") or [])
    return list(collection or [])


def _holding_json(holding: Holding) -> str:
    return orjson.dumps(
        {
            "store_id": holding.store_id,
            "lines": holding.lines,
            "order_id": holding.order_id,
            "name": holding.name,
        }
    ).decode()


def _holding_from_json(text: str) -> Holding:
    data = orjson.loads(text)
    return Holding(
        data.get("store_id"), dict(data.get("lines") or {}), data.get("order_id"), data.get("name")
    )


def _events_json(events: list[StockEvent]) -> str:
    return orjson.dumps(
        [
            {
                "event_id": e.event_id,
                "type": e.type.value,
                "time": e.time.isoformat(),
                "store_id": e.store_id,
                "lines": [[line.sku, line.qty_units] for line in e.lines],
                "order_id": e.order_id,
                "reservation_id": e.reservation_id,
                "reference": e.reference,
            }
            for e in events
        ]
    ).decode()


def _events_from_json(text: str | None) -> list[StockEvent]:
    return [
        StockEvent(
            event_id=item["event_id"],
            source=SOURCE,
            type=EventType(item["type"]),
            time=datetime.fromisoformat(item["time"]),
            store_id=item["store_id"],
            lines=tuple(Line(sku, int(qty)) for sku, qty in item["lines"]),
            order_id=item.get("order_id"),
            reservation_id=item.get("reservation_id"),
            reference=item.get("reference"),
            principal=PRINCIPAL,
        )
        for item in orjson.loads(text or "[]")
    ]
