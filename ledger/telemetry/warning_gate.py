"""When a warning that goes on is worth saying again: the first of a kind at once, the same kind
again at most every interval, a new kind at once (the broker away, and now a record too large,
say). What happens in between is counted by its owner and said with the next warning."""

from __future__ import annotations

import time
from collections.abc import Callable


class WarningGate:
    """One warning's repeats, for one owner (its own lock, if any: the feed's is one thread)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._said: tuple[float, type[BaseException]] | None = None  # when, and of what kind

    def due(self, kind: type[BaseException]) -> bool:
        """Whether to warn of `kind` now; if so, it counts as said."""
        now = self._clock()
        said = self._said
        if said is None or said[1] is not kind or now - said[0] >= self.interval_s:
            self._said = (now, kind)
            return True
        return False

    def reset(self) -> None:
        """The trouble is over: its next warning, of any kind, is said at once."""
        self._said = None
