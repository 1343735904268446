"""Where inbound adapters record what they learnt: stock events submitted to the ledger.

The ledger decides and dedupes (source + id), so an inbound adapter only has to give each fact a
stable event id (a MoySklad demand id, a WMS picking order id and status) to make redelivery and
reprocessing harmless.
"""

from __future__ import annotations

from typing import Any, Protocol

from adapters.masking import secret_safe_logger
from ledger.domain.model import Outcome, StockEvent

log = secret_safe_logger("adapters.sink")


class SinkError(Exception):
    """The ledger did not answer: tried again later, in order."""


class EventsRefused(ValueError):
    """The ledger answered an event `invalid`: the same events will be refused again, so the caller
    gives them up with an alert (as any input it cannot take) rather than hold what follows."""


class EventSink(Protocol):
    def record(self, events: list[StockEvent]) -> list[Any]: ...


class LedgerSink:
    """Submits to an in-process ledger (`build_ledger(settings); ledger.start()`)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger

    def record(self, events: list[StockEvent]) -> list[Any]:
        try:
            results = self.ledger.submit_and_wait(events)
        except Exception as error:
            raise SinkError(f"the ledger did not record {len(events)} event(s): {error}") from error
        for result in results:
            if result.outcome is Outcome.INVALID:
                raise EventsRefused(f"the ledger found {result.event_id} invalid")
            log.info("recorded %s from %s: %s", result.event_id, result.source, result.outcome.value)
        return list(results)
