"""Reservations across stores and sourcing with `reserve` (CONTRACT §6), as commands the writer
decides like any event: under its lock, from the same state, in one transaction.

A command is a StockEvent (so it travels, is batched, deduplicated by (source, id) and answered
like one) whose decision is one ordinary `stock.reservation` entry per store, all sharing the
command's position: so each part is, from then on, a per-store reservation like any other
(GET, shipments, releases, expiry, status need nothing new). All parts or none: a part that is
short or conflicts refuses the whole command, and a refused command records nothing (a refusal
that spans stores belongs to no store's history; the caller gets its shortfall, store by store).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ledger.domain.model import (
    EventType,
    Line,
    Outcome,
    RejectionReason,
    Reservation,
    ReservationStatus,
    Shortfall,
    StockEvent,
    event_fields_from_values,
)
from ledger.domain.policy import line_limit_units
from ledger.domain.rules import Decision, LedgerState, Refusal, decide, reservation_entry
from ledger.domain.sourcing import Allocation, SearchTooLong, choose


class Reads(Protocol):
    """What the writer reads keys by (levels, reservations, policies, stores): a plain event, or a
    probe of a command."""

    @property
    def store_id(self) -> str: ...
    @property
    def lines(self) -> tuple[Line, ...]: ...
    @property
    def reservation_id(self) -> str | None: ...
    @property
    def type(self) -> EventType: ...
    @property
    def to_store(self) -> str | None: ...


class Probe(NamedTuple):
    """A reservation of a whole order at one candidate, as far as the writer reads keys for it:
    not an event (never decided or recorded), and some twenty times cheaper to make than one."""

    store_id: str
    lines: tuple[Line, ...]
    reservation_id: str | None
    type: EventType = EventType.RESERVATION
    to_store: str | None = None


# How many stores one reservation across stores may span: a bound of the stored format (each
# part says how many parts of its command follow it in the log), not a setting.
PARTS_MAX = 100


@dataclass(frozen=True, slots=True)
class ReserveAcrossStores(StockEvent):
    """`POST /v1/reservations`: reserve each part at its store, all or none. The parts are
    `stock.reservation` events at distinct stores, with the command's id, source and fields."""

    parts: tuple[StockEvent, ...] = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_command_from_values, (ReserveAcrossStores, StockEvent.__reduce__(self)[1], (self.parts,)))


@dataclass(frozen=True, slots=True)
class SourceAndReserve(StockEvent):
    """`POST /v1/sourcing` with `reserve`: choose the stores for `lines` among `candidates` (in
    order of preference) from the writer's state, and reserve the allocation across stores in
    the same decision."""

    candidates: tuple[str, ...] = ()
    max_stores: int = 3
    search_steps_max: int = 0
    # The reservations of every line at every candidate that deciding reads (reads_of), made once
    # per command in the writer, never sent: the writer asks for them at each step of a batch.
    probes: tuple[Probe, ...] | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (
            _command_from_values,
            (
                SourceAndReserve,
                StockEvent.__reduce__(self)[1],
                (self.candidates, self.max_stores, self.search_steps_max),
            ),
        )


def _command_from_values(
    kind: type[StockEvent], values: tuple[Any, ...], extra: tuple[Any, ...]
) -> StockEvent:
    # The event's fields, then the command's own that travel, in their order (a cache such as
    # `probes` does not travel): built once, positionally (a quarter of a command's decoding in
    # the writer went to rebuilding it by field names).
    return kind(*event_fields_from_values(*values), *extra)


def part_event(command: StockEvent, store_id: str, lines: tuple[Line, ...]) -> StockEvent:
    """One store's part of a command: a plain reservation with the command's identity."""
    return StockEvent(
        event_id=command.event_id,
        source=command.source,
        type=EventType.RESERVATION,
        time=command.time,
        store_id=store_id,
        lines=lines,
        order_id=command.order_id,
        reservation_id=command.reservation_id,
        expires_at=command.expires_at,
        principal=command.principal,
        channel=command.channel,
    )


def reads_of(event: StockEvent) -> tuple[Reads, ...]:
    """The plain events whose keys (levels, reservations, policies, stores) deciding `event`
    reads: a command's parts, or, for sourcing, a reservation of every line at every candidate."""
    if type(event) is StockEvent:
        return (event,)
    if isinstance(event, ReserveAcrossStores):
        return event.parts
    if isinstance(event, SourceAndReserve):
        if event.probes is None:
            lines, reservation_id = event.lines, event.reservation_id
            probes = tuple(Probe(store, lines, reservation_id) for store in event.candidates)
            object.__setattr__(event, "probes", probes)  # a cache of what the fields determine
            return probes
        return event.probes
    return (event,)


def decide_any(event: StockEvent, state: LedgerState) -> Decision:
    """`rules.decide` for a plain event; the commands' own decisions for the commands."""
    if type(event) is StockEvent:
        return decide(event, state)
    if isinstance(event, ReserveAcrossStores):
        return decide_parts(event.parts, state)
    if isinstance(event, SourceAndReserve):
        return decide_sourcing(event, state)
    return decide(event, state)


def decide_parts(parts: tuple[StockEvent, ...], state: LedgerState) -> Decision:
    """All parts or none. The parts are at distinct stores, so none reads what another changes
    and each is decided by the per-store rule against the same state. Every part already held
    with its lines: the same request again. Some held and some not, or one held with other lines:
    a conflict (the id exists with other lines at those stores)."""
    assert len({part.store_id for part in parts}) == len(parts), "one part per store"
    decisions = [decide(part, state) for part in parts]
    held = [d.duplicate_of_position for d in decisions if d.duplicate_of_position is not None]
    if len(held) == len(parts):
        return Decision((), duplicate_of_position=_latest(held))
    conflict = bool(held) or any(
        e.reason is RejectionReason.RESERVATION_CONFLICT for d in decisions for e in d.entries
    )
    if conflict:
        return Decision((), refusal=Refusal(RejectionReason.RESERVATION_CONFLICT))
    short = tuple(
        Shortfall(s.sku, s.requested_units, s.available_units, entry.store_id)
        for d in decisions
        for entry in d.entries
        if entry.outcome is Outcome.REJECTED
        for s in entry.shortfall
    )
    if short:
        return Decision((), refusal=Refusal(RejectionReason.INSUFFICIENT_STOCK, short))
    return Decision(tuple(entry for d in decisions for entry in d.entries))


def _latest(positions: list[int]) -> int:
    """The latest of the parts' placing positions. A negative one is a placeholder for an event of
    the batch being decided (-(its last entry's index) - 1): later than any recorded one."""
    placeholders = [p for p in positions if p < 0]
    return min(placeholders) if placeholders else max(positions)


def decide_sourcing(command: SourceAndReserve, state: LedgerState) -> Decision:
    """The same request again answers the reservation it placed (its parts at the candidates
    hold the order's lines between them); the id held at a candidate with other lines is a
    conflict. Otherwise the stores are chosen from this very state and reserved at once."""
    reservation_id = command.reservation_id
    assert reservation_id is not None
    reservations = state.reservations
    held = [
        reservation
        for store in command.candidates
        if (reservation := reservations.get((store, reservation_id))) is not None
    ]
    if held:
        if holds_order(held, command.lines):
            return Decision((), duplicate_of_position=_latest([r.placed_at_position for r in held]))
        return Decision((), refusal=Refusal(RejectionReason.RESERVATION_CONFLICT))
    channel = command.channel
    policies = state.policies
    levels = state.levels
    read_only = state.read_only_levels or (lambda key: state.level(*key))

    def figure(store: str, sku: str) -> int:
        # Read only: a candidate's level is copied into the state only where it is reserved.
        key = (store, sku)
        level = levels.get(key)
        if level is None:
            level = read_only(key)
        store_policies = policies.get(store)
        if not store_policies:
            return level.on_hand_units - level.reserved_units  # available: read per candidate and line
        return line_limit_units(level, store_policies, sku, channel)

    try:
        chosen = choose(
            command.lines, command.candidates, command.max_stores, figure, command.search_steps_max
        )
    except SearchTooLong:
        return Decision((), refusal=Refusal(RejectionReason.INSUFFICIENT_STOCK, search_limit=True))
    if not isinstance(chosen, Allocation):
        return Decision((), refusal=Refusal(RejectionReason.INSUFFICIENT_STOCK, chosen.shortfall))
    # The per-store rule accepts every part, so its entries are written without asking it again
    # (a third of a sourcing decision's CPU): no candidate holds the id (checked above), the
    # parts are at distinct stores, and each line takes at most the figure `choose` read for it,
    # the one that rule limits it by (line_limit_units of the order's channel), from this state.
    return Decision(
        tuple(reservation_entry(part_event(command, store, lines)) for store, lines in chosen.stores)
    )


def holds_order(held: list[Reservation], lines: tuple[Line, ...]) -> bool:
    placed: dict[str, int] = {}
    for reservation in held:
        for sku, line in reservation.lines.items():
            placed[sku] = placed.get(sku, 0) + line.qty_units
    return placed == {line.sku: line.qty_units for line in lines}


def status_across(parts: list[Reservation]) -> ReservationStatus:
    """One status for the parts: theirs when they agree; else, while any part holds units,
    `partially_shipped` if any unit was shipped and `active` if none; once none holds any,
    `released` if any part was released, else `expired` if any expired (the rest shipped)."""
    statuses = {part.status for part in parts}
    if len(statuses) == 1:
        return statuses.pop()
    if any(part.is_open for part in parts):
        shipped = any(line.shipped_units for part in parts for line in part.lines.values())
        return ReservationStatus.PARTIALLY_SHIPPED if shipped else ReservationStatus.ACTIVE
    for closed in (ReservationStatus.RELEASED, ReservationStatus.EXPIRED):
        if closed in statuses:
            return closed
    return ReservationStatus.SHIPPED
