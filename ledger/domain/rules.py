"""The stock rules: decide what an event does given the current state, and apply a recorded entry.

`decide` is where a refusal happens; `apply` is the replay. Both are pure: the writer, the
projection rebuild and the reference model in the tests all run these same two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ledger.domain.model import (
    CHANNEL_EVENT_TYPES,
    LEDGER_PRINCIPAL,
    Entry,
    EventType,
    Level,
    Line,
    LineEffect,
    Outcome,
    Policy,
    RejectionReason,
    Reservation,
    ReservationLine,
    ReservationStatus,
    Shortfall,
    StockEvent,
)
from ledger.domain.policy import effective_policy, line_limit_units


@dataclass(slots=True)
class LedgerState:
    """Levels, reservations and policies, keyed by store. The writer fills it with exactly the
    keys a batch needs; `policies` holds only the stores that have any (store -> SKU or
    DEFAULT_SKU -> policy), so a store without a policy costs a decision one dict lookup.

    `read_only_levels`, when given, holds the levels not in `levels` (the writer's memory, for what
    sourcing reads at every candidate): they are read from it as they are, and copied into
    `levels` before anything changes them. It raises LookupError for a key it does not hold
    (the decision is then not made from this state). Without it a level not held is zero."""

    levels: dict[tuple[str, str], Level] = field(default_factory=dict)
    reservations: dict[tuple[str, str], Reservation] = field(default_factory=dict)
    policies: dict[str, dict[str, Policy]] = field(default_factory=dict)
    read_only_levels: Callable[[tuple[str, str]], Level] | None = None

    def level(self, store_id: str, sku: str) -> Level:
        key = (store_id, sku)
        level = self.levels.get(key)
        if level is None:
            held = self.read_only_levels
            level = self.levels[key] = Level() if held is None else held(key).copy()
        return level

    def reservation(self, store_id: str, reservation_id: str) -> Reservation | None:
        return self.reservations.get((store_id, reservation_id))

    def policy(self, store_id: str, sku: str) -> Policy | None:
        """The policy that applies to a store's SKU (its own, else the store's default)."""
        return effective_policy(self.policies.get(store_id), sku)


@dataclass(frozen=True, slots=True)
class Decision:
    """The entries to record for one event, its own entry last (a transfer records one at each
    store), or a duplicate. All the entries of an event share its position."""

    entries: tuple[Entry, ...]
    duplicate_of_position: int | None = None
    # A command refused as a whole before any entry (a reservation across stores, sourcing):
    # nothing is recorded, the caller is told why.
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command across stores was refused. `unsourceable`: sourcing found no set of at most
    `max_stores` candidates (the shortfall is then empty when only that limit stands in the
    way); `search_limit`: the search would take more steps than it may."""

    reason: RejectionReason
    shortfall: tuple[Shortfall, ...] = ()
    search_limit: bool = False


def decide(event: StockEvent, state: LedgerState) -> Decision:
    decide_by_type = _DECIDERS[event.type]
    return decide_by_type(event, state)


def _accept(event: StockEvent, effects: list[LineEffect]) -> Decision:
    return Decision((Entry(event, Outcome.ACCEPTED, tuple(effects)),))


def _reject(event: StockEvent, reason: RejectionReason, shortfall: tuple[Shortfall, ...] = ()) -> Decision:
    effects = tuple(LineEffect(line.sku, line.qty_units) for line in event.lines)
    return Decision((Entry(event, Outcome.REJECTED, effects, reason, shortfall),))


def _shortfall(event: StockEvent, state: LedgerState) -> tuple[Shortfall, ...]:
    """The lines whose qty exceeds the figure that applies to them (CONTRACT §6): `available`
    with no policy, else the store's or the event's channel's sellable."""
    short: list[Shortfall] = []
    store_policies = state.policies.get(event.store_id)
    channel = event.channel if event.type in CHANNEL_EVENT_TYPES else None
    for line in event.lines:
        limit = line_limit_units(state.level(event.store_id, line.sku), store_policies, line.sku, channel)
        if limit < line.qty_units:
            short.append(Shortfall(line.sku, line.qty_units, limit))
    return tuple(short)


def _decide_receipt(event: StockEvent, state: LedgerState) -> Decision:
    incoming_sign = -1 if event.transfer_id else 0
    return _accept(
        event,
        [
            LineEffect(line.sku, line.qty_units, line.qty_units, 0, incoming_sign * line.qty_units)
            for line in event.lines
        ],
    )


def _decide_plain_increase(event: StockEvent, state: LedgerState) -> Decision:
    """Returns and adjustments: on_hand += qty (an adjustment's qty is signed)."""
    return _accept(event, [LineEffect(line.sku, line.qty_units, line.qty_units) for line in event.lines])


def _decide_sale(event: StockEvent, state: LedgerState) -> Decision:
    short = _shortfall(event, state)
    if short:
        return _reject(event, RejectionReason.INSUFFICIENT_STOCK, short)
    return _accept(event, [LineEffect(line.sku, line.qty_units, -line.qty_units) for line in event.lines])


def _decide_transfer(event: StockEvent, state: LedgerState) -> Decision:
    short = _shortfall(event, state)
    if short:
        return _reject(event, RejectionReason.INSUFFICIENT_STOCK, short)
    assert event.to_store is not None and event.to_store != event.store_id
    outgoing = Entry(
        event,
        Outcome.ACCEPTED,
        tuple(LineEffect(line.sku, line.qty_units, -line.qty_units) for line in event.lines),
    )
    incoming_event = StockEvent(
        event_id=event.event_id,
        source=event.source,
        type=EventType.TRANSFER_INCOMING,
        time=event.time,
        store_id=event.to_store,
        lines=event.lines,
        transfer_id=event.transfer_id,
        reference=event.store_id,
        principal=event.principal,
    )
    incoming = Entry(
        incoming_event,
        Outcome.ACCEPTED,
        tuple(LineEffect(line.sku, line.qty_units, 0, 0, line.qty_units) for line in event.lines),
    )
    # The receiving store's entry first, the event's own last: the event's position is the last
    # entry's, and both entries carry it.
    return Decision((incoming, outgoing))


def _decide_pos_sale(event: StockEvent, state: LedgerState) -> Decision:
    """A till sale already happened: never refused, flagged when it leaves available below zero."""
    effects = []
    for line in event.lines:
        level = state.level(event.store_id, line.sku)
        oversold = level.available_units - line.qty_units < 0
        effects.append(LineEffect(line.sku, line.qty_units, -line.qty_units, oversold=oversold))
    return _accept(event, effects)


def _decide_reservation(event: StockEvent, state: LedgerState) -> Decision:
    assert event.reservation_id is not None
    held = state.reservation(event.store_id, event.reservation_id)
    if held is not None:
        if held.same_request(event.lines):
            return Decision((), duplicate_of_position=held.placed_at_position)
        return _reject(event, RejectionReason.RESERVATION_CONFLICT)
    short = _shortfall(event, state)
    if short:
        return _reject(event, RejectionReason.INSUFFICIENT_STOCK, short)
    return Decision((reservation_entry(event),))


def reservation_entry(event: StockEvent) -> Entry:
    """The entry of a reservation this rule accepts: every line reserved as asked."""
    effects = tuple(LineEffect(line.sku, line.qty_units, 0, line.qty_units) for line in event.lines)
    return Entry(event, Outcome.ACCEPTED, effects)


def _release_effects(event_lines: tuple[Line, ...], held: Reservation) -> list[LineEffect]:
    if not event_lines:
        return [
            LineEffect(sku, line.remaining_units, 0, -line.remaining_units)
            for sku, line in held.lines.items()
        ]
    effects = []
    for line in event_lines:
        held_line = held.lines.get(line.sku)
        released_units = min(line.qty_units, held_line.remaining_units) if held_line else 0
        effects.append(LineEffect(line.sku, line.qty_units, 0, -released_units))
    return effects


def _decide_release(event: StockEvent, state: LedgerState) -> Decision:
    assert event.reservation_id is not None
    held = state.reservation(event.store_id, event.reservation_id)
    if held is None:
        return _reject(event, RejectionReason.UNKNOWN_RESERVATION)
    return _accept(event, _release_effects(event.lines, held))


def _decide_shipment(event: StockEvent, state: LedgerState) -> Decision:
    """Goods have left: never refused. Under a known reservation it consumes what is still reserved."""
    held = state.reservation(event.store_id, event.reservation_id) if event.reservation_id else None
    unknown = event.reservation_id is not None and held is None
    effects = []
    for line in event.lines:
        held_line = held.lines.get(line.sku) if held else None
        consumed_units = min(line.qty_units, held_line.remaining_units) if held_line else 0
        level = state.level(event.store_id, line.sku)
        available_after = (level.on_hand_units - line.qty_units) - (level.reserved_units - consumed_units)
        effects.append(
            LineEffect(
                line.sku,
                line.qty_units,
                -line.qty_units,
                -consumed_units,
                oversold=available_after < 0,
                unknown_reservation=unknown,
            )
        )
    return _accept(event, effects)


def _decide_count(event: StockEvent, state: LedgerState) -> Decision:
    """on_hand := counted; the entry records the difference."""
    effects = []
    for line in event.lines:
        level = state.level(event.store_id, line.sku)
        effects.append(LineEffect(line.sku, line.qty_units, line.qty_units - level.on_hand_units))
    return _accept(event, effects)


# A policy change that changes nothing (the same policy again, or clearing what was never set)
# records nothing: decided as a duplicate of no position.
UNCHANGED_POLICY = Decision((), duplicate_of_position=0)


def _decide_policy_change(event: StockEvent, state: LedgerState) -> Decision:
    """Never refused; recorded with zero deltas on its one line (the SKU, or DEFAULT_SKU)."""
    [line] = event.lines
    held = state.policies.get(event.store_id, {}).get(line.sku)
    if held == event.policy:
        return UNCHANGED_POLICY
    return _accept(event, [LineEffect(line.sku, 0)])


def _decide_by_ledger(event: StockEvent, state: LedgerState) -> Decision:
    raise ValueError(f"{event.type} is recorded by the ledger itself, not decided from a producer")


_DECIDERS = {
    EventType.RECEIPT: _decide_receipt,
    EventType.SALE: _decide_sale,
    EventType.POS_SALE: _decide_pos_sale,
    EventType.RESERVATION: _decide_reservation,
    EventType.RESERVATION_RELEASE: _decide_release,
    EventType.SHIPMENT: _decide_shipment,
    EventType.RETURN: _decide_plain_increase,
    EventType.ADJUSTMENT: _decide_plain_increase,
    EventType.COUNT: _decide_count,
    EventType.TRANSFER: _decide_transfer,
    EventType.RESERVATION_EXPIRED: _decide_by_ledger,
    EventType.TRANSFER_INCOMING: _decide_by_ledger,
    EventType.POLICY_CHANGED: _decide_policy_change,
}


def expire(held: Reservation, now: datetime, event_id: str) -> Entry:
    """The ledger's own entry that releases what an expired reservation still holds."""
    event = StockEvent(
        event_id=event_id,
        source="ledger/expiry",
        type=EventType.RESERVATION_EXPIRED,
        time=now,
        store_id=held.store_id,
        lines=tuple(Line(sku, line.remaining_units) for sku, line in held.lines.items()),
        order_id=held.order_id,
        reservation_id=held.reservation_id,
        principal=LEDGER_PRINCIPAL,
    )
    effects = tuple(
        LineEffect(sku, line.remaining_units, 0, -line.remaining_units) for sku, line in held.lines.items()
    )
    return Entry(event, Outcome.ACCEPTED, effects)


def apply(entry: Entry, state: LedgerState, position: int) -> None:
    """Replay one recorded entry onto the state; `position` is its event's. Rejected entries
    change nothing."""
    if entry.outcome is not Outcome.ACCEPTED:
        return
    store_id = entry.store_id
    if entry.event.type is EventType.POLICY_CHANGED:
        _apply_policy(entry, state)
        return
    channel = _reserving_channel(entry, state)
    for effect in entry.effects:
        level = state.level(store_id, effect.sku)
        level.on_hand_units += effect.on_hand_delta
        level.reserved_units += effect.reserved_delta
        level.incoming_units += effect.incoming_delta
        if channel is not None and effect.reserved_delta:
            level.add_channel_reserved(channel, effect.reserved_delta)
    _apply_to_reservation(entry, state, position)


def _reserving_channel(entry: Entry, state: LedgerState) -> str | None:
    """The channel whose reserved units an entry's reserved deltas move: a reservation's own, or,
    for what consumes one (shipment, release, expiry), the channel it was placed under."""
    event = entry.event
    if event.reservation_id is None:
        return None
    if event.type is EventType.RESERVATION:
        return event.channel
    held = state.reservations.get((entry.store_id, event.reservation_id))
    return held.channel if held is not None else None


def _apply_policy(entry: Entry, state: LedgerState) -> None:
    """Copy on write: the writer's state shares its stores' policy dicts with its cache."""
    [line] = entry.event.lines
    store_policies = dict(state.policies.get(entry.store_id) or {})
    if entry.event.policy is not None:
        store_policies[line.sku] = entry.event.policy
    else:
        store_policies.pop(line.sku, None)
    if store_policies:
        state.policies[entry.store_id] = store_policies
    else:
        state.policies.pop(entry.store_id, None)


def _apply_to_reservation(entry: Entry, state: LedgerState, position: int) -> None:
    event = entry.event
    if event.reservation_id is None:
        return
    key = (entry.store_id, event.reservation_id)
    if event.type is EventType.RESERVATION:
        state.reservations[key] = Reservation(
            store_id=entry.store_id,
            reservation_id=event.reservation_id,
            order_id=event.order_id,
            expires_at=event.expires_at,
            lines={e.sku: ReservationLine(e.reserved_delta) for e in entry.effects},
            placed_at_position=position,
            channel=event.channel,
        )
        return
    held = state.reservations.get(key)
    if held is None:
        return
    if event.type is EventType.SHIPMENT:
        shipped_units = 0
        for effect in entry.effects:
            if effect.sku in held.lines:
                held.lines[effect.sku].shipped_units += -effect.reserved_delta
                shipped_units += -effect.reserved_delta
        if shipped_units > 0 and held.remaining_units == 0:
            held.closed_as = ReservationStatus.SHIPPED
    elif event.type in (EventType.RESERVATION_RELEASE, EventType.RESERVATION_EXPIRED):
        released_units = 0
        for effect in entry.effects:
            if effect.sku in held.lines:
                held.lines[effect.sku].released_units += -effect.reserved_delta
                released_units += -effect.reserved_delta
        if released_units > 0 and held.remaining_units == 0:
            held.closed_as = (
                ReservationStatus.EXPIRED
                if event.type is EventType.RESERVATION_EXPIRED
                else ReservationStatus.RELEASED
            )
