"""Doubling waits between the Kafka intake's retries, bounded by a named maximum."""

from __future__ import annotations

BACKOFF_MS_MIN = 100


class Backoff:
    """Doubling waits between retries, from BACKOFF_MS_MIN up to a named maximum."""

    def __init__(self, wait_ms_max: int) -> None:
        self.wait_ms_max = wait_ms_max
        self.wait_ms = 0

    def next_s(self) -> float:
        self.wait_ms = min(max(self.wait_ms * 2, BACKOFF_MS_MIN), self.wait_ms_max)
        return self.wait_ms / 1000

    def reset(self) -> None:
        self.wait_ms = 0
