"""Whether the intake is in touch with the broker right now, for /readyz: the group coordinator
answers its heartbeats, the results it sent are acknowledged, and its poll loop turns.

A failed batch says so too (KafkaIntake.ready), but only once a timeout has passed, and an idle
intake has no batch to fail: a broker that stops answering (frozen, cut off) must show without
either. Each signal is one that a healthy member keeps fresh whether or not records arrive, so
an idle topic never makes readiness flap: kafka-python's heartbeat thread hears from the
coordinator every heartbeat interval, results are waited for only while some are on their way,
and the loop turns at least once per poll timeout.

The heartbeat is read from kafka-python's coordinator (`consumer._coordinator.heartbeat`, plain
numbers written by the client's network thread, read here without a lock: a stale read only
delays the answer by one call). Should a kafka-python release move it, the heartbeat signal is
off (logged once) and the other two still hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ledger.kafka")

# A heartbeat answered this long after it was due is late: a healthy coordinator answers within
# milliseconds, so only a broker that stopped answering (or is far behind) makes one this late.
HEARTBEAT_LATE_S = 0.5


class BrokerContact:
    """Written by the consumer thread (and its rebalance listener); read by any thread."""

    def __init__(
        self,
        *,
        unanswered_ms_max: int,
        loop_turn_ms_max: int,
        heartbeat_interval_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unanswered_s_max = unanswered_ms_max / 1000
        self.loop_turn_s_max = loop_turn_ms_max / 1000
        self.heartbeat_interval_s = heartbeat_interval_ms / 1000
        self._clock = clock
        self._turn_began_s = clock()
        self._results_sent_s: float | None = None  # the oldest results not yet acknowledged
        self._coordinator: Any = None

    def watch(self, consumer: Any) -> None:
        """Follows this consumer's heartbeats (from now until `unwatch`)."""
        coordinator = getattr(consumer, "_coordinator", None)
        heartbeat = getattr(coordinator, "heartbeat", None)
        if not all(hasattr(heartbeat, name) for name in ("last_receive", "last_reset")):
            log.warning("the consumer's heartbeats cannot be followed: readiness goes by results and polls")
            coordinator = None
        self._coordinator = coordinator

    def unwatch(self) -> None:
        self._coordinator = None
        self._results_sent_s = None

    def turn_began(self) -> None:
        self._turn_began_s = self._clock()

    def results_waiting(self, sent_s: float | None) -> None:
        """When the oldest results not yet acknowledged were sent (time.monotonic()), or None."""
        self._results_sent_s = sent_s

    def out_of_touch(self) -> str | None:
        """Why the broker cannot be counted on now, or None."""
        now = self._clock()
        turn_s = now - self._turn_began_s
        if turn_s > self.loop_turn_s_max:
            return f"the poll loop has not come round for {turn_s:.1f} s"
        sent_s = self._results_sent_s
        if sent_s is not None and now - sent_s > self.unanswered_s_max:
            return f"results sent {now - sent_s:.1f} s ago are not acknowledged"
        overdue_s = self._heartbeat_overdue_s(now)
        if overdue_s is not None and overdue_s > self.unanswered_s_max:
            return f"the group coordinator has not answered a heartbeat due {overdue_s:.1f} s ago"
        return None

    def heartbeat_late(self) -> bool:
        """Is the coordinator's answer to a heartbeat over HEARTBEAT_LATE_S late? (See
        KafkaIntake._poll for what the intake does then.)"""
        overdue_s = self._heartbeat_overdue_s(self._clock())
        return overdue_s is not None and overdue_s > HEARTBEAT_LATE_S

    def _heartbeat_overdue_s(self, now: float) -> float | None:
        """How long ago the heartbeat after the last one answered was due; None while the member
        sends none (joining or rebalancing: the join itself is then what waits on the broker)."""
        coordinator = self._coordinator
        if coordinator is None or not getattr(coordinator, "_heartbeat_enabled", True):
            return None
        stable = getattr(coordinator, "stable", None)
        if stable is not None and not stable():
            return None
        heartbeat = coordinator.heartbeat
        # Heartbeats go out every interval, and (re)joining the group counts as an answer.
        answered_s = float(max(heartbeat.last_receive, heartbeat.last_reset))
        return now - (answered_s + self.heartbeat_interval_s)
