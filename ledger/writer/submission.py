"""What a caller hands the writer, the writer's limits, and the one error callers see from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.domain.model import StockEvent
from ledger.results import EventResult

Done = Callable[[list[EventResult] | BaseException], None]


@dataclass(slots=True)
class Submission:
    """One caller's events, answered together through `done` once their batch has committed."""

    events: list[StockEvent]
    done: Done


@dataclass(frozen=True, slots=True)
class WriterLimits:
    batch_events_max: int
    retries_max: int
    queue_submissions_max: int
    expiry_interval_s: float
    expiry_batch_max: int
    optimistic: bool = True


class WriterUnavailable(Exception):
    """The writer cannot take or answer this work now (stopped, its queue full, its process gone,
    or its database failing); nothing the caller did was wrong, and re-sending is safe."""
