"""Waits between retries: one mechanism for the Kafka intake, the availability feed and the adapters.

A wait doubles from `initial_s` with each failure in a row, up to `max_s`. A caller that counts its
attempts asks `delay_s(attempt)`; one that does not lets the backoff count (`next_s()` after each
failure, `reset()` after a success). With `jitter` above 0 each wait is spread at random by up to
that share either way (the cap included), so that retries started together do not stay in step.
"""

from __future__ import annotations

import random

# Beyond this many doublings every cap in use is reached; 2 ** a larger count would overflow a float
# after a long enough outage (a stateful backoff counts its failures for as long as they last).
DOUBLINGS_MAX = 62
# The first wait of the Kafka intake and the availability feed after a failed batch or round (their
# caps are settings); the adapters' first wait is a setting.
BROKER_RETRY_FIRST_S = 0.1


class Backoff:
    """Doubling waits from `initial_s` to `max_s`, each spread by up to ±`jitter` of itself."""

    def __init__(self, initial_s: float, max_s: float, *, jitter: float = 0.0) -> None:
        if initial_s <= 0 or max_s <= 0 or not 0 <= jitter < 1:
            raise ValueError("a backoff needs positive waits and a jitter from 0 to below 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.failures = 0

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1 for the first retry)."""
        doublings = min(max(0, attempt - 1), DOUBLINGS_MAX)
        base = min(self.max_s, self.initial_s * 2**doublings)
        if not self.jitter:
            return float(base)
        return float(base * (1 + random.uniform(-self.jitter, self.jitter)))

    def next_s(self) -> float:
        """The wait after one more failure in a row."""
        self.failures += 1
        return self.delay_s(self.failures)

    def reset(self) -> None:
        """A success: the next failure waits `initial_s` again."""
        self.failures = 0
