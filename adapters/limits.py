"""Client-side limits: each target's documented request rate, parallelism, and the retries' jitter.

Every limiter here blocks the caller until a request may go; none of them drops work. The shapes
copy the targets' own rules so that a well-behaved client never sees a rate-limit answer:
Bitrix counts requests in a leaky bucket (X requests of burst, drained at Y per second), MoySklad
counts requests per 3-second window and also limits parallel requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class LeakyBucket:
    """At most `capacity` requests in the bucket; it drains at `drain_per_s` requests a second."""

    def __init__(
        self, capacity: int, drain_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or drain_per_s <= 0:
            raise ValueError("a leaky bucket needs capacity >= 1 and a positive drain rate")
        self.capacity = capacity
        self.drain_per_s = drain_per_s
        self._clock = clock
        self._level = 0.0
        self._at = clock()
        self._lock = threading.Lock()

    def _drain(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._at) * self.drain_per_s)
        self._at = now

    def delay_s(self) -> float:
        """How long the next request must wait (0 when it may go now); reserves its place."""
        with self._lock:
            now = self._clock()
            self._drain(now)
            wait_s = max(0.0, (self._level + 1 - self.capacity) / self.drain_per_s)
            self._level += 1
            return wait_s

    def acquire(self) -> None:
        wait_s = self.delay_s()
        if wait_s > 0:
            time.sleep(wait_s)


class SlidingWindow:
    """At most `requests_max` requests in any `window_s` seconds."""

    def __init__(
        self, requests_max: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if requests_max < 1 or window_s <= 0:
            raise ValueError("a window needs requests_max >= 1 and a positive length")
        self.requests_max = requests_max
        self.window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Sends nothing for `seconds`: the target said its limit is reached (a 429 with a reset time)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait_s = self._paused_until - now
                else:
                    while self._sent and now - self._sent[0] >= self.window_s:
                        self._sent.popleft()
                    if len(self._sent) < self.requests_max:
                        self._sent.append(now)
                        return
                    wait_s = self.window_s - (now - self._sent[0])
            time.sleep(max(wait_s, 0.001))


# The adapters' retries are spread by up to this share of each wait either way (ledger/backoff.py), so
# that the workers of several targets, or of several processes, do not retry in step.
RETRY_JITTER = 0.2


class Stopper:
    """A stop flag that sleeping loops can wait on, so that stopping never waits for a long sleep."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; True if stopped meanwhile."""
        return self._event.wait(max(0.0, seconds))
