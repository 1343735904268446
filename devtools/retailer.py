"""A model omnichannel retailer that makes realistic stock event traffic for `ledger simulate`.

N shops, M SKUs. Each shop opens with a delivery; then goods arrive from the distribution centre
(receipts) and move between shops (transfers, received later at the other shop). Tills sell (POS
sales) and take returns. The web shop reserves for click & collect or delivery; reservations are
shipped, in full or in parts, released when a customer cancels, or left to expire. Marketplaces
sell without a reservation (sometimes more than is there: those sales are rejected). Shops count
and write off. Producers retry, so some events arrive twice; a few broken records arrive too.

The model keeps what it believes the levels are, so that most requests are plausible; the ledger
decides. Everything random comes from one seeded generator: the same seed gives the same traffic
(only `time` and `expires_at` follow the clock).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

MOSCOW = timezone(timedelta(hours=3))  # MoySklad and the tills stamp local time, +03:00
DUPLICATES_REMEMBERED_MAX = 1000
RESERVATION_LIFETIME = timedelta(days=2)
OPENING_LINES_MAX = 200

JUNK_KINDS = ("not_json", "not_an_object", "no_subject", "negative_qty", "unknown_type", "empty")

# Relative weights of what happens next (duplicates and junk are drawn first, by their shares).
WEIGHTS: dict[str, int] = {
    "stock.pos_sale": 30,
    "stock.receipt": 12,
    "stock.reservation": 14,
    "stock.shipment": 12,
    "stock.reservation_release": 5,
    "stock.sale": 4,
    "stock.return": 4,
    "stock.transfer": 3,
    "transfer_receipt": 3,
    "stock.count": 2,
    "stock.adjustment": 2,
}


@dataclass(frozen=True, slots=True)
class Traffic:
    """What to simulate."""

    stores: int = 10
    skus: int = 200
    events: int = 10_000
    duplicate_share: float = 0.02
    junk_share: float = 0.005
    expiring_share: float = 0.1  # of reservations: expire `expire_after_s` after they are placed
    expire_after_s: float = 5.0
    seed: int = 1
    run_id: str = "sim"  # part of every event id: runs with different ids never collide


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record to send: its key (the store), its value, and what it is."""

    key: str | None
    value: bytes | None
    kind: str  # an event type, "duplicate", or "junk:<why>"


@dataclass(slots=True)
class _Reservation:
    store: str
    reservation_id: str
    order_id: str
    remaining: dict[str, int]
    expires_at: datetime


@dataclass(slots=True)
class _Transfer:
    transfer_id: str
    to_store: str
    lines: dict[str, int]


@dataclass(slots=True)
class _Belief:
    """What the retailer's systems think the levels are."""

    on_hand: dict[tuple[str, str], int] = field(default_factory=dict)
    reserved: dict[tuple[str, str], int] = field(default_factory=dict)

    def available(self, store: str, sku: str) -> int:
        return self.on_hand.get((store, sku), 0) - self.reserved.get((store, sku), 0)

    def add(self, table: dict[tuple[str, str], int], store: str, sku: str, units: int) -> None:
        table[(store, sku)] = table.get((store, sku), 0) + units


class Retailer:
    def __init__(self, traffic: Traffic, clock: Callable[[], datetime] | None = None) -> None:
        self.traffic = traffic
        self.random = random.Random(traffic.seed)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stores = [f"store-{n:03d}" for n in range(1, traffic.stores + 1)]
        self.skus = [f"SKU-{n:05d}" for n in range(1, traffic.skus + 1)]
        self.belief = _Belief()
        self.reservations: list[_Reservation] = []
        self.transfers: deque[_Transfer] = deque()
        self.sent: deque[SimRecord] = deque(maxlen=DUPLICATES_REMEMBERED_MAX)
        self.numbers = 0
        self.opened = 0  # shops given their opening stock so far

    def records(self) -> Iterator[SimRecord]:
        """Exactly `traffic.events` records."""
        for _ in range(self.traffic.events):
            yield self.next_record()

    def next_record(self) -> SimRecord:
        if self.opened < len(self.stores):
            envelope = self._opening_stock(self.stores[self.opened])
            self.opened += 1
            return self._remember(envelope)
        draw = self.random.random()
        if draw < self.traffic.junk_share:
            return self._junk()
        if draw < self.traffic.junk_share + self.traffic.duplicate_share and self.sent:
            again = self.random.choice(self.sent)
            return SimRecord(again.key, again.value, "duplicate")
        kind = self.random.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        return self._remember(getattr(self, "_" + kind.removeprefix("stock."))())

    def _remember(self, envelope: dict[str, Any]) -> SimRecord:
        record = SimRecord(envelope["subject"], orjson.dumps(envelope), envelope["type"])
        self.sent.append(record)
        return record

    # -- helpers --------------------------------------------------------------------------------------

    def _envelope(self, event_type: str, store: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
        self.numbers += 1
        local = source.startswith("pos/")
        moment = self.clock().astimezone(MOSCOW if local else UTC)
        return {
            "specversion": "1.0",
            "id": f"{self.traffic.run_id}-{self.numbers:09d}",
            "source": source,
            "type": event_type,
            "time": moment.isoformat(timespec="milliseconds"),
            "subject": store,
            "datacontenttype": "application/json",
            "data": data,
        }

    def _store(self) -> str:
        return self.random.choice(self.stores)

    def _pick_skus(self, count_max: int) -> list[str]:
        return self.random.sample(self.skus, self.random.randint(1, min(count_max, len(self.skus))))

    def _in_stock(self, store: str, count_max: int, units_max: int) -> dict[str, int]:
        """Lines the systems believe can be served; now and then anything (to be refused)."""
        if self.random.random() < 0.05:
            return {sku: self.random.randint(1, units_max) for sku in self._pick_skus(count_max)}
        lines: dict[str, int] = {}
        for sku in self._pick_skus(count_max * 3):
            available = self.belief.available(store, sku)
            if available > 0 and len(lines) < count_max:
                lines[sku] = self.random.randint(1, min(units_max, available))
        return lines or {self.random.choice(self.skus): 1}

    @staticmethod
    def _lines(lines: dict[str, int]) -> list[dict[str, Any]]:
        return [{"sku": sku, "qty": qty} for sku, qty in lines.items()]

    def _open_reservation(self) -> _Reservation | None:
        now = self.clock()
        open_ones = [held for held in self.reservations if held.expires_at > now]
        self.reservations = open_ones
        return self.random.choice(open_ones) if open_ones else None

    def _close(self, held: _Reservation) -> None:
        for sku, units in held.remaining.items():
            self.belief.add(self.belief.reserved, held.store, sku, -units)
        self.reservations.remove(held)

    # -- what happens ---------------------------------------------------------------------------------

    def _receipt(self) -> dict[str, Any]:
        store = self._store()
        lines = {sku: self.random.randint(10, 100) for sku in self._pick_skus(8)}
        for sku, units in lines.items():
            self.belief.add(self.belief.on_hand, store, sku, units)
        data = {"lines": self._lines(lines), "reference": f"PO-{self.numbers + 1}"}
        return self._envelope("stock.receipt", store, "wms/dc-1", data)

    def _opening_stock(self, store: str) -> dict[str, Any]:
        """A shop's first delivery: a few units of many SKUs, so that the day can start."""
        lines = {sku: self.random.randint(5, 30) for sku in self._pick_skus(OPENING_LINES_MAX)}
        for sku, units in lines.items():
            self.belief.add(self.belief.on_hand, store, sku, units)
        data = {"lines": self._lines(lines), "reference": f"opening {store}"}
        return self._envelope("stock.receipt", store, "wms/dc-1", data)

    def _transfer_receipt(self) -> dict[str, Any]:
        if not self.transfers:
            return self._receipt()
        moved = self.transfers.popleft()
        for sku, units in moved.lines.items():
            self.belief.add(self.belief.on_hand, moved.to_store, sku, units)
        data = {"lines": self._lines(moved.lines), "transfer_id": moved.transfer_id}
        return self._envelope("stock.receipt", moved.to_store, f"pos/{moved.to_store}", data)

    def _pos_sale(self) -> dict[str, Any]:
        store = self._store()
        lines = self._in_stock(store, 3, 3)
        for sku, units in lines.items():
            self.belief.add(self.belief.on_hand, store, sku, -units)
        data = {"lines": self._lines(lines), "reference": f"receipt {self.numbers + 1:06d}"}
        return self._envelope("stock.pos_sale", store, f"pos/{store}", data)

    def _sale(self) -> dict[str, Any]:
        store = self._store()
        lines = self._in_stock(store, 2, 4)
        for sku, units in lines.items():
            if self.belief.available(store, sku) >= units:
                self.belief.add(self.belief.on_hand, store, sku, -units)
        data = {"lines": self._lines(lines), "order_id": f"MP-{self.numbers + 1}"}
        return self._envelope("stock.sale", store, "marketplace/ozon", data)

    def _return(self) -> dict[str, Any]:
        store = self._store()
        sku = self.random.choice(self.skus)
        self.belief.add(self.belief.on_hand, store, sku, 1)
        data = {
            "lines": [{"sku": sku, "qty": 1}],
            "order_id": f"WEB-{self.random.randint(1, self.numbers + 1)}",
        }
        return self._envelope("stock.return", store, f"pos/{store}", data)

    def _reservation(self) -> dict[str, Any]:
        store = self._store()
        lines = self._in_stock(store, 3, 2)
        number = self.numbers + 1
        reservation_id, order_id = f"R-{self.traffic.run_id}-{number}", f"WEB-{number}"
        now = self.clock()
        expiring = self.random.random() < self.traffic.expiring_share
        lifetime = timedelta(seconds=self.traffic.expire_after_s) if expiring else RESERVATION_LIFETIME
        expires_at = now + lifetime
        if all(self.belief.available(store, sku) >= units for sku, units in lines.items()):
            for sku, units in lines.items():
                self.belief.add(self.belief.reserved, store, sku, units)
            self.reservations.append(_Reservation(store, reservation_id, order_id, dict(lines), expires_at))
        data = {
            "lines": self._lines(lines),
            "reservation_id": reservation_id,
            "order_id": order_id,
            "expires_at": expires_at.isoformat(timespec="seconds"),
        }
        return self._envelope("stock.reservation", store, "web/shop", data)

    def _shipment(self) -> dict[str, Any]:
        held = self._open_reservation()
        if held is None:
            return self._pos_sale()
        partial = self.random.random() < 0.3
        shipped: dict[str, int] = {}
        for sku, units in held.remaining.items():
            take = self.random.randint(1, units) if partial else units
            if take:
                shipped[sku] = take
        for sku, units in shipped.items():
            held.remaining[sku] -= units
            self.belief.add(self.belief.on_hand, held.store, sku, -units)
            self.belief.add(self.belief.reserved, held.store, sku, -units)
        held.remaining = {sku: units for sku, units in held.remaining.items() if units > 0}
        if not held.remaining:
            self.reservations.remove(held)
        data = {
            "lines": self._lines(shipped),
            "reservation_id": held.reservation_id,
            "order_id": held.order_id,
        }
        return self._envelope("stock.shipment", held.store, "oms/shop", data)

    def _reservation_release(self) -> dict[str, Any]:
        held = self._open_reservation()
        if held is None:
            return self._reservation()
        data = {"reservation_id": held.reservation_id, "order_id": held.order_id}
        self._close(held)
        return self._envelope("stock.reservation_release", held.store, "web/shop", data)

    def _transfer(self) -> dict[str, Any]:
        store = self._store()
        to_store = self.random.choice([other for other in self.stores if other != store] or [store])
        if to_store == store:
            return self._receipt()
        lines = self._in_stock(store, 3, 5)
        for sku, units in lines.items():
            self.belief.add(self.belief.on_hand, store, sku, -units)
        transfer_id = f"T-{self.traffic.run_id}-{self.numbers + 1}"
        self.transfers.append(_Transfer(transfer_id, to_store, lines))
        data = {"lines": self._lines(lines), "to_store": to_store, "transfer_id": transfer_id}
        return self._envelope("stock.transfer", store, "erp/1c", data)

    def _count(self) -> dict[str, Any]:
        store = self._store()
        counted: dict[str, int] = {}
        for sku in self._pick_skus(5):
            believed = self.belief.on_hand.get((store, sku), 0)
            counted[sku] = max(believed + self.random.randint(-2, 1), 0)
            self.belief.on_hand[(store, sku)] = counted[sku]
        data = {"lines": self._lines(counted), "reference": f"count {self.numbers + 1}"}
        return self._envelope("stock.count", store, f"pos/{store}", data)

    def _adjustment(self) -> dict[str, Any]:
        store = self._store()
        sku = self.random.choice(self.skus)
        units = self.random.choice([-3, -2, -1, 1, 2])
        self.belief.add(self.belief.on_hand, store, sku, units)
        reason = "damaged" if units < 0 else "found"
        return self._envelope(
            "stock.adjustment",
            store,
            f"pos/{store}",
            {"lines": [{"sku": sku, "qty": units}], "reason": reason},
        )

    def _junk(self) -> SimRecord:
        why = self.random.choice(JUNK_KINDS)
        store = self._store()
        self.numbers += 1
        line: dict[str, Any] = {"sku": self.random.choice(self.skus), "qty": 1}
        good: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"{self.traffic.run_id}-{self.numbers:09d}",
            "source": f"pos/{store}",
            "type": "stock.pos_sale",
            "time": self.clock().isoformat(timespec="seconds"),
            "subject": store,
            "data": {"lines": [line]},
        }
        value: bytes | None
        if why == "not_json":
            value = b"\xff\xfeSALE;" + store.encode() + b";SKU;1"
        elif why == "not_an_object":
            value = b"[1, 2, 3]"
        elif why == "no_subject":
            del good["subject"]
            value = orjson.dumps(good)
        elif why == "negative_qty":
            line["qty"] = -1
            value = orjson.dumps(good)
        elif why == "unknown_type":
            good["type"] = "stock.teleport"
            value = orjson.dumps(good)
        else:
            value = None
        return SimRecord(store, value, f"junk:{why}")
