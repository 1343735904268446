"""A stand-in for the ledger that the adapters' tests need where the real one cannot be made to
answer so: an event answered `invalid`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.domain.model import Outcome, StockEvent
from ledger.results import EventResult


class RefusingLedger:
    """The ledger, answering `invalid` for the events `refused` picks, as it answers an event it
    cannot take (the rest are recorded)."""

    def __init__(self, ledger: Any, refused: Callable[[StockEvent], bool]) -> None:
        self.ledger = ledger
        self.refused = refused

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        taken = [e for e in events if not self.refused(e)]
        results = iter(self.ledger.submit_and_wait(taken) if taken else [])
        invalid = Outcome.INVALID
        return [
            EventResult(e.event_id, e.source, e.store_id, invalid) if self.refused(e) else next(results)
            for e in events
        ]
