"""A small in-memory book for the unit tests: builds events and runs them through decide and apply."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ledger.domain.model import EventType, Level, Line, Reservation, StockEvent
from ledger.domain.rules import Decision, LedgerState, apply, decide, expire

STORE = "store-12"
OTHER_STORE = "store-7"
EVENT_TIME = datetime(2026, 11, 22, 10, 15, tzinfo=timezone(timedelta(hours=3)))

_event_numbers = itertools.count(1)


def lines_of(*pairs: tuple[str, int]) -> tuple[Line, ...]:
    return tuple(Line(sku, qty_units) for sku, qty_units in pairs)


def event(event_type: EventType, *pairs: tuple[str, int], store_id: str = STORE, **fields: Any) -> StockEvent:
    """A producer's event with a fresh id; `fields` are the StockEvent's optional data fields."""
    return StockEvent(
        event_id=f"evt-{next(_event_numbers)}",
        source="tests/unit",
        type=event_type,
        time=EVENT_TIME,
        store_id=store_id,
        lines=lines_of(*pairs),
        **fields,
    )


class Book:
    """One ledger state and its position counter: `record` decides an event and applies what it decided."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.position = 0

    def record(self, stock_event: StockEvent) -> Decision:
        decision = decide(stock_event, self.state)
        if decision.entries:
            self.position += 1
            for entry in decision.entries:
                apply(entry, self.state, self.position)
        return decision

    def expire(self, reservation_id: str, store_id: str = STORE) -> Decision:
        held = self.state.reservation(store_id, reservation_id)
        assert held is not None
        entry = expire(held, datetime(2026, 11, 23, tzinfo=UTC), f"expiry-{reservation_id}")
        self.position += 1
        apply(entry, self.state, self.position)
        return Decision((entry,))

    def level(self, sku: str, store_id: str = STORE) -> Level:
        return self.state.level(store_id, sku)

    def levels(self, sku: str, store_id: str = STORE) -> tuple[int, int, int, int]:
        """(on_hand, reserved, available, incoming)."""
        level = self.level(sku, store_id)
        return (level.on_hand_units, level.reserved_units, level.available_units, level.incoming_units)

    def reservation(self, reservation_id: str, store_id: str = STORE) -> Reservation:
        held = self.state.reservation(store_id, reservation_id)
        assert held is not None, f"reservation {reservation_id} is unknown"
        return held

    def receive(self, *pairs: tuple[str, int], store_id: str = STORE) -> None:
        self.record(event(EventType.RECEIPT, *pairs, store_id=store_id))
