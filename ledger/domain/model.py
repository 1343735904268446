"""The ledger's vocabulary: stock events as received, entries as recorded, levels and reservations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledger.domain.frozen_values import frozen_value


def _reduce(self: Any) -> tuple[Any, tuple[Any, ...]]:
    """Pickles a slotted dataclass as its constructor arguments. The default for slotted
    dataclasses calls dataclasses.fields() on every object, which showed in the writer's profile
    (events cross a process boundary on every write)."""
    return (type(self), tuple(getattr(self, name) for name in self.__slots__))


class EventType(StrEnum):
    """Event types. The values are stored names: they never change."""

    RECEIPT = "stock.receipt"
    SALE = "stock.sale"
    POS_SALE = "stock.pos_sale"
    RESERVATION = "stock.reservation"
    RESERVATION_RELEASE = "stock.reservation_release"
    SHIPMENT = "stock.shipment"
    RETURN = "stock.return"
    ADJUSTMENT = "stock.adjustment"
    COUNT = "stock.count"
    TRANSFER = "stock.transfer"
    # Recorded by the ledger itself, never sent by a producer.
    RESERVATION_EXPIRED = "stock.reservation_expired"
    TRANSFER_INCOMING = "stock.transfer_incoming"
    POLICY_CHANGED = "stock.policy_changed"  # recorded by PUT /v1/stores/{store}/policies/{sku}


# The principals the ledger names itself in the history (CONTRACT §5); no token may take them.
KAFKA_PRINCIPAL = "kafka"  # what came from Kafka
LEDGER_PRINCIPAL = "ledger"  # what the ledger recorded by itself (expiry)
IMPORT_PRINCIPAL = "import"  # what `ledger import` recorded from a file

# The sources of the events the ledger makes itself: ledger/http (the REST reservations),
# ledger/sourcing, ledger/policies, ledger/expiry. A producer may not send under them (refused as
# the envelope is read): its event would take one of the ledger's own keys, and a reservation whose
# expiry key was taken never expired, nor did any due with it; and the history's word that the ledger
# made an entry would not hold.
LEDGER_SOURCE_PREFIX = "ledger/"

PRODUCER_EVENT_TYPES = frozenset(EventType) - {
    EventType.RESERVATION_EXPIRED,
    EventType.TRANSFER_INCOMING,
    EventType.POLICY_CHANGED,
}

# The event types a policy limits (CONTRACT §6); the others are never refused for a policy.
POLICY_LIMITED_EVENT_TYPES = frozenset({EventType.RESERVATION, EventType.SALE, EventType.TRANSFER})
# The event types whose `channel` a stock answer counts or a policy reads; on any other type the
# channel is kept in the history only.
CHANNEL_EVENT_TYPES = frozenset({EventType.RESERVATION, EventType.SALE})


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    INVALID = "invalid"


class RejectionReason(StrEnum):
    INSUFFICIENT_STOCK = "insufficient_stock"
    UNKNOWN_RESERVATION = "unknown_reservation"
    RESERVATION_CONFLICT = "reservation_conflict"


# Members by their stored names through a dict's lookup: an Enum's call by value costs several
# times as much (0.35 µs), and every event and every answer crosses a process boundary as names.
# Callers fall back to the call for a name not found, for its error.
EVENT_TYPE_BY_VALUE = {member.value: member for member in EventType}
OUTCOME_BY_VALUE = {member.value: member for member in Outcome}
REASON_BY_VALUE = {member.value: member for member in RejectionReason}


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    RELEASED = "released"
    EXPIRED = "expired"


@frozen_value
class Line:
    """One line of a stock event, its quantity already in the SKU's base unit."""

    sku: str
    qty_units: int
    # CONTRACT §10: the marking codes or SSCCs of the units the line moved. They change no level;
    # they are kept with the entry and shown on its history rows.
    codes: tuple[str, ...] = ()

    __reduce__ = _reduce


# The event types whose lines may carry marking codes: CONTRACT §10's four, and a reservation's
# (an addition: the codes an order asks for, which the WMS's picking order carries).
CODE_EVENT_TYPES = frozenset(
    {EventType.SHIPMENT, EventType.SALE, EventType.POS_SALE, EventType.RETURN, EventType.RESERVATION}
)
CODE_CHARS_MAX = 200  # CONTRACT §10: each code is 1 to 200 printable ASCII characters


# Availability policy (CONTRACT §6); its figures are in ledger/domain/policy.py.
DEFAULT_SKU = "*"  # the key of a store's default policy (no SKU may be named so)
QUOTA_PCT_MAX = 100


@dataclass(frozen=True, slots=True)
class ChannelQuota:
    """A channel's quota: a percentage of on_hand, or a number of units (exactly one is set)."""

    channel: str
    pct: int | None = None
    units: int | None = None

    def __post_init__(self) -> None:
        assert (self.pct is None) != (self.units is None), self

    def quota_units(self, on_hand_units: int) -> int:
        if self.units is not None:
            return self.units
        assert self.pct is not None
        return max(0, on_hand_units * self.pct // 100)  # floor, as the contract says


@dataclass(frozen=True, slots=True)
class Policy:
    safety_stock_units: int = 0
    quotas: tuple[ChannelQuota, ...] = ()  # ordered by channel

    def quota(self, channel: str) -> ChannelQuota | None:
        for quota in self.quotas:
            if quota.channel == channel:
                return quota
        return None

    def as_json(self) -> dict[str, Any]:
        """The public form, which is also the stored one (entries, history, projections)."""
        return {
            "safety_stock": self.safety_stock_units,
            "channels": {
                q.channel: ({"quota_pct": q.pct} if q.pct is not None else {"quota_units": q.units})
                for q in self.quotas
            },
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Policy:
        """Reads what `as_json` wrote (already validated when it was first accepted)."""
        quotas = tuple(
            ChannelQuota(name, quota.get("quota_pct"), quota.get("quota_units"))
            for name, quota in sorted(stored.get("channels", {}).items())
        )
        return cls(int(stored.get("safety_stock", 0)), quotas)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as plain values (it crosses to the writer process on its event)."""
        return (
            _policy_from_values,
            (self.safety_stock_units, tuple((q.channel, q.pct, q.units) for q in self.quotas)),
        )


def _policy_from_values(
    safety_stock_units: int, quotas: tuple[tuple[str, int | None, int | None], ...]
) -> Policy:
    return Policy(safety_stock_units, tuple(ChannelQuota(*quota) for quota in quotas))


@frozen_value
class StockEvent:
    """A validated event as a producer sent it (the CloudEvents envelope, flattened)."""

    event_id: str
    source: str
    type: EventType
    time: datetime
    store_id: str
    lines: tuple[Line, ...]
    order_id: str | None = None
    reservation_id: str | None = None
    reference: str | None = None
    transfer_id: str | None = None
    to_store: str | None = None
    reason: str | None = None
    expires_at: datetime | None = None
    # Who sent it (CONTRACT §5): a token's name, "kafka", "ledger" (expiry), "import" (`ledger
    # import`), or None (HTTP, open).
    principal: str | None = None
    channel: str | None = None  # CONTRACT §6: `online`, `marketplace`, ...
    # A `stock.policy_changed` event's new policy for its one line's SKU (None: cleared).
    policy: Policy | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as plain values (every event crosses to the writer process): the generic form
        pickled each Line and the enum by reference, 17 µs an event against 4 µs for this.
        Times travel as ISO 8601 text: an aware datetime pickles its tzinfo the slow way, and
        the text keeps the producer's offset exactly."""
        return (
            _event_from_values,
            (
                self.event_id,
                self.source,
                self.type.value,
                self.time.isoformat(),
                self.store_id,
                # A line's codes (CONTRACT §10) travel only when it has some.
                tuple(
                    (line.sku, line.qty_units, line.codes) if line.codes else (line.sku, line.qty_units)
                    for line in self.lines
                ),
                self.order_id,
                self.reservation_id,
                self.reference,
                self.transfer_id,
                self.to_store,
                self.reason,
                self.expires_at.isoformat() if self.expires_at else None,
                self.principal,
                self.channel,
                self.policy,
            ),
        )

    @property
    def key(self) -> tuple[str, str]:
        """(source, id) identifies an event, as CloudEvents defines."""
        return (self.source, self.event_id)


def _event_from_values(*values: Any) -> StockEvent:
    return StockEvent(*event_fields_from_values(*values))


def event_fields_from_values(
    event_id: str,
    source: str,
    type_: str,
    time: str,
    store_id: str,
    lines: tuple[tuple[Any, ...], ...],
    *optional: Any,
) -> tuple[Any, ...]:
    """A StockEvent's fields, in order, from the plain values it is pickled as (a command across
    stores adds its own after them)."""
    (
        order_id,
        reservation_id,
        reference,
        transfer_id,
        to_store,
        reason,
        expires_at,
        principal,
        channel,
        policy,
    ) = optional
    return (
        event_id,
        source,
        EVENT_TYPE_BY_VALUE.get(type_) or EventType(type_),
        datetime.fromisoformat(time),
        store_id,
        tuple(Line(*line) for line in lines),
        order_id,
        reservation_id,
        reference,
        transfer_id,
        to_store,
        reason,
        datetime.fromisoformat(expires_at) if expires_at else None,
        principal,
        channel,
        policy,
    )


@frozen_value
class Shortfall:
    sku: str
    requested_units: int
    available_units: int
    # The store it is short at, for refusals that span stores (a reservation across stores,
    # CONTRACT §6); None for a store's own events, whose store is the event's.
    store_id: str | None = None

    __reduce__ = _reduce


@frozen_value
class LineEffect:
    """What one line did to one store's SKU level. Rejected events have all deltas zero."""

    sku: str
    qty_units: int
    on_hand_delta: int = 0
    reserved_delta: int = 0
    incoming_delta: int = 0
    oversold: bool = False
    unknown_reservation: bool = False


@frozen_value
class Entry:
    """One recorded event in one store's ledger: the producer's event and the ledger's decision.

    Replaying entries in position order reproduces every level and reservation exactly,
    because the decided deltas are part of the entry.
    """

    event: StockEvent
    outcome: Outcome
    effects: tuple[LineEffect, ...]
    reason: RejectionReason | None = None
    shortfall: tuple[Shortfall, ...] = ()

    @property
    def store_id(self) -> str:
        return self.event.store_id


@dataclass(slots=True)
class Level:
    """A store's level of one SKU, in base units. `channel_reserved`: of `reserved_units`, what
    open reservations of each channel hold (CONTRACT §6); None when no channel holds any, which
    is what a level costs a store that uses no channels."""

    on_hand_units: int = 0
    reserved_units: int = 0
    incoming_units: int = 0
    channel_reserved: dict[str, int] | None = None

    @property
    def available_units(self) -> int:
        return self.on_hand_units - self.reserved_units

    def channel_reserved_units(self, channel: str) -> int:
        return self.channel_reserved.get(channel, 0) if self.channel_reserved else 0

    def add_channel_reserved(self, channel: str, delta_units: int) -> None:
        held = dict(self.channel_reserved) if self.channel_reserved else {}
        units = held.get(channel, 0) + delta_units
        assert units >= 0, (channel, units)
        if units:
            held[channel] = units
        else:
            held.pop(channel, None)
        self.channel_reserved = held or None

    def copy(self) -> Level:
        # The dict is never changed in place (add_channel_reserved makes a new one): shared.
        return Level(self.on_hand_units, self.reserved_units, self.incoming_units, self.channel_reserved)


@dataclass(slots=True)
class ReservationLine:
    qty_units: int
    shipped_units: int = 0
    released_units: int = 0

    @property
    def remaining_units(self) -> int:
        return self.qty_units - self.shipped_units - self.released_units


@dataclass(slots=True)
class Reservation:
    store_id: str
    reservation_id: str
    order_id: str | None
    expires_at: datetime | None
    lines: dict[str, ReservationLine]
    closed_as: ReservationStatus | None = None
    placed_at_position: int = 0
    channel: str | None = None

    @property
    def remaining_units(self) -> int:
        remaining = 0
        for line in self.lines.values():
            remaining += line.qty_units - line.shipped_units - line.released_units
        return remaining

    @property
    def status(self) -> ReservationStatus:
        """What closed a reservation names it: the shipment, release or expiry that took its last
        reserved unit (so a reservation released after a partial shipment is `released`, and one
        partly released and then shipped in full is `shipped`)."""
        return self.status_and_remaining()[0]

    def status_and_remaining(self) -> tuple[ReservationStatus, int]:
        """Both in one pass over the lines (the writer asks for both of every reservation)."""
        remaining = 0
        shipped = False
        for line in self.lines.values():
            remaining += line.qty_units - line.shipped_units - line.released_units
            shipped = shipped or line.shipped_units > 0
        if remaining == 0:
            return self.closed_as or ReservationStatus.SHIPPED, 0
        if shipped:
            return ReservationStatus.PARTIALLY_SHIPPED, remaining
        return ReservationStatus.ACTIVE, remaining

    @property
    def is_open(self) -> bool:
        return self.remaining_units > 0

    def same_request(self, lines: tuple[Line, ...]) -> bool:
        """The same reservation again (a retry) has the same lines (CONTRACT §1: a conflict is
        the id reused with other lines; other fields do not make one)."""
        asked = {line.sku: line.qty_units for line in lines}
        held = {sku: line.qty_units for sku, line in self.lines.items()}
        return asked == held

    def copy(self) -> Reservation:
        return Reservation(
            store_id=self.store_id,
            reservation_id=self.reservation_id,
            order_id=self.order_id,
            expires_at=self.expires_at,
            lines={
                sku: ReservationLine(line.qty_units, line.shipped_units, line.released_units)
                for sku, line in self.lines.items()
            },
            closed_as=self.closed_as,
            placed_at_position=self.placed_at_position,
            channel=self.channel,
        )
