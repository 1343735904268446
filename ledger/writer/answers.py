"""Each caller's results, once its batch has committed: in the order of its events, with the
position of each recorded event and the first outcome of each duplicate."""

from __future__ import annotations

from ledger.domain.model import Entry, Outcome, StockEvent
from ledger.results import EventResult, Original
from ledger.writer.deciding import Pending
from ledger.writer.submission import Submission


def answers(
    batch: list[Submission],
    events: list[StockEvent],
    pending: list[Pending],
    positions: list[int],
    entries: list[Entry],
) -> list[list[EventResult]]:
    """Each submission's results, in the order of its events. `positions` holds each entry's
    event position (recording.insert), the one every entry of the event carries."""
    results = [_result(event, p, positions, entries) for event, p in zip(events, pending, strict=True)]
    per_submission: list[list[EventResult]] = []
    start = 0
    for submission in batch:
        per_submission.append(results[start : start + len(submission.events)])
        start += len(submission.events)
    return per_submission


def _result(event: StockEvent, pending: Pending, positions: list[int], entries: list[Entry]) -> EventResult:
    if pending.duplicate_of is not None:
        return EventResult(
            event.event_id, event.source, event.store_id, Outcome.DUPLICATE, original=pending.duplicate_of
        )
    if pending.duplicate_of_entry is not None:
        first = entries[pending.duplicate_of_entry]
        original = Original(first.outcome, first.reason, positions[pending.duplicate_of_entry])
        return EventResult(event.event_id, event.source, event.store_id, Outcome.DUPLICATE, original=original)
    if pending.refusal is not None:
        refusal = pending.refusal
        if refusal.search_limit:  # the order was too hard to search: the caller's to change
            return EventResult(event.event_id, event.source, event.store_id, Outcome.INVALID)
        return EventResult(
            event.event_id, event.source, event.store_id, Outcome.REJECTED, refusal.reason, refusal.shortfall
        )
    assert pending.entry_index is not None
    entry = entries[pending.entry_index]
    return EventResult(
        event.event_id,
        event.source,
        event.store_id,
        entry.outcome,
        entry.reason,
        entry.shortfall,
        positions[pending.entry_index],
        # A command across stores says what each part placed; a plain event places nothing so.
        placed=_placed(entries, pending) if type(event) is not StockEvent else (),
    )


def _placed(entries: list[Entry], pending: Pending) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    assert pending.first_entry_index is not None and pending.entry_index is not None
    return tuple(
        (entry.store_id, tuple((effect.sku, effect.reserved_delta) for effect in entry.effects))
        for entry in entries[pending.first_entry_index : pending.entry_index + 1]
    )
