"""Requests that follow another: recorded only if the one they follow was.

A client may keep two requests in the writer, so that the writer decides the second while the
first commits (the Kafka intake does: in_flight.py overlaps them only when the next batch is
already there). Its events must still be recorded in the order sent: if the first fails and is
sent again, the second must not have been recorded ahead of it. So the second is sent `after` the
first (wire.WriteRequest.after), and the writer tries it only if the first was recorded; if not,
it is answered at once, untried, and the client sends it again after the first.

Per connection the writer keeps whether each of its last CHAIN_OUTCOMES_MAX requests was recorded.
A request followed that is not known there (older than that, or sent on a connection since lost)
counts as not recorded. A follower is never in one batch with the request it follows, so that the
latter's outcome is known when the follower is tried.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from ledger.writer.submission import NotTried

# Per connection: a client keeps at most a few requests in the writer, so it follows only recent ones.
CHAIN_OUTCOMES_MAX = 64


class Outcomes:
    """One connection's last requests: whether each was recorded."""

    def __init__(self) -> None:
        self._recorded: OrderedDict[int, bool] = OrderedDict()

    def note(self, request_id: int, recorded: bool) -> None:
        self._recorded[request_id] = recorded
        if len(self._recorded) > CHAIN_OUTCOMES_MAX:
            self._recorded.popitem(last=False)

    def recorded(self, request_id: int) -> bool:
        return self._recorded.get(request_id, False)


def unchained_prefix(requests: Sequence[tuple[Hashable, int, int | None]]) -> int:
    """Of (connection, request id, the id it follows or None), how many from the front may be one
    batch: up to the first that follows another of them."""
    in_batch: set[tuple[Hashable, int]] = set()
    for index, (connection, request_id, after) in enumerate(requests):
        if after is not None and (connection, after) in in_batch:
            return index
        in_batch.add((connection, request_id))
    return len(requests)


def not_recorded() -> NotTried:
    """The answer to a request whose predecessor was not recorded."""
    return NotTried("not tried: the request it follows was not recorded")
