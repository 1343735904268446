"""What the writer answers for each event: its outcome, and for a duplicate the first one.

Results cross from the writer process back to the HTTP workers on every write, so they pickle
as plain values (see EventResult.__reduce__).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.domain.frozen_values import frozen_value
from ledger.domain.model import (
    OUTCOME_BY_VALUE,
    REASON_BY_VALUE,
    Outcome,
    RejectionReason,
    Shortfall,
    _reduce,
)


@dataclass(frozen=True, slots=True)
class Original:
    outcome: Outcome
    reason: RejectionReason | None
    position: int

    __reduce__ = _reduce


@frozen_value
class EventResult:
    event_id: str
    source: str
    store_id: str
    outcome: Outcome
    reason: RejectionReason | None = None
    shortfall: tuple[Shortfall, ...] = ()
    position: int | None = None
    original: Original | None = None
    # What a reservation across stores placed (CONTRACT §6): per store, in log order, its lines
    # as (sku, qty). Empty for every other event.
    placed: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Plain values, as StockEvent's (every answer crosses back from the writer process)."""
        original = self.original
        return (
            _result_from_values,
            (
                self.event_id,
                self.source,
                self.store_id,
                self.outcome.value,
                self.reason.value if self.reason else None,
                tuple((s.sku, s.requested_units, s.available_units, s.store_id) for s in self.shortfall)
                if self.shortfall
                else (),
                self.position,
                None
                if original is None
                else (
                    original.outcome.value,
                    original.reason.value if original.reason else None,
                    original.position,
                ),
                self.placed,
            ),
        )


def _result_from_values(
    event_id: str,
    source: str,
    store_id: str,
    outcome: str,
    reason: str | None,
    shortfall: tuple[tuple[str, int, int, str | None], ...],
    position: int | None,
    original: tuple[str, str | None, int] | None,
    placed: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (),
) -> EventResult:
    return EventResult(
        event_id,
        source,
        store_id,
        _outcome(outcome),
        _reason(reason) if reason else None,
        tuple(Shortfall(*s) for s in shortfall) if shortfall else (),
        position,
        None if original is None else Original(_outcome(original[0]), _reason(original[1]), original[2]),
        placed,
    )


def _outcome(value: str) -> Outcome:
    return OUTCOME_BY_VALUE.get(value) or Outcome(value)


def _reason(value: str | None) -> RejectionReason | None:
    if not value:
        return None
    return REASON_BY_VALUE.get(value) or RejectionReason(value)
