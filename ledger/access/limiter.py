"""Per-token rate limits (`--rate-per-s`): a token bucket per token, in this process.

Per process, not global: a global count would cost a shared store's round trip on every request,
which the hot paths must not make. A token that reaches several processes (HTTP workers, instances)
gets the rate from each; every token has a bucket of its own, so a noisy client never takes what
another is allowed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ledger.access.scopes import Grant

# A bucket holds one second's worth of requests (at least one): a client may send that many at once.
BURST_S = 1.0


class RateLimited(Exception):
    """Over the token's rate; `retry_after_s` is how long until one more request is allowed."""

    def __init__(self, name: str, retry_after_s: int) -> None:
        super().__init__(f"the token {name} is over its rate limit")
        self.name = name
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Not thread-safe: the event loop of one HTTP process is its only caller. It holds a bucket per
    token name used here, and names are never reused, so it is bounded by the tokens created."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # name -> [requests left, when last filled]

    def admit(self, grant: Grant) -> None:
        """Takes one request from the token's bucket; raises RateLimited when it is empty."""
        rate = grant.rate_per_s
        if rate is None:
            return
        now = self.clock()
        capacity = max(1.0, rate * BURST_S)
        bucket = self._buckets.get(grant.name)
        if bucket is None:
            bucket = self._buckets[grant.name] = [capacity, now]
        left = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if left < 1.0:
            bucket[0] = left
            raise RateLimited(grant.name, max(1, math.ceil((1.0 - left) / rate)))
        bucket[0] = left - 1.0
