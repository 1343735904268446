"""The event keys this writer recorded lately, with each one's first outcome.

Producers resend: Kafka delivers at least once, and a till retries a POST whose answer it lost.
A resent event is a duplicate, and deciding it needs its key's first outcome. Memory's levels do
not hold it, so without this a one-statement batch bets that every key is new, the resent key's
primary key fails the statement, and the whole batch is rolled back and recorded the ordinary way
(with the writer then recording the ordinary way for a while: facade.CONTENDED_S). Kept here, a
recent resend is decided from memory as the duplicate it is.

Only what this writer recorded is here, and a recorded key stays recorded, so a key found here is
a duplicate whoever else writes; a key not found may still be one (older, or another instance's),
which the statement's check still catches. Memory forgets these keys whenever it forgets the rest
(Writer.forget), and a lost bet takes back the keys its batch put here (in_flight.land).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ledger.domain.model import Entry, StockEvent
from ledger.results import Original
from ledger.writer.deciding import Known, Pending

# How many keys are kept, the oldest forgotten first: at a few thousand events a second, the last
# ten seconds or more, where producers' retries fall; about 10 MB.
RECENT_KEYS_MAX = 50_000


class RecentKeys:
    def __init__(self, keys_max: int = RECENT_KEYS_MAX) -> None:
        self.keys_max = keys_max
        self._originals: OrderedDict[tuple[str, str], Original] = OrderedDict()

    def __len__(self) -> int:
        return len(self._originals)

    def known(self, events: Iterable[StockEvent]) -> Known:
        """The events' keys found here, with their first outcome (a new dict: the caller adds to it)."""
        originals = self._originals
        return {event.key: originals[event.key] for event in events if event.key in originals}

    def remember(
        self, events: list[StockEvent], pending: list[Pending], positions: list[int], entries: list[Entry]
    ) -> None:
        """The keys a batch recorded (its duplicates and refused commands record none)."""
        originals = self._originals
        for event, decided in zip(events, pending, strict=True):
            index = decided.entry_index
            if index is not None:
                entry = entries[index]
                originals[event.key] = Original(entry.outcome, entry.reason, positions[index])
        while len(originals) > self.keys_max:
            originals.popitem(last=False)

    def withdraw(self, events: list[StockEvent], pending: list[Pending]) -> None:
        """Takes back the keys a batch put here: it did not commit. (Its duplicates' keys stay:
        they are their originals'.)"""
        for event, decided in zip(events, pending, strict=True):
            if decided.entry_index is not None:
                self._originals.pop(event.key, None)

    def clear(self) -> None:
        self._originals.clear()
