"""The availability feed's figures for /metrics: plain numbers written by the feed's thread."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(slots=True)
class FeedStats:
    """Written by the feed's thread only; read by whoever scrapes (ints: no torn reads)."""

    publishing: bool = False  # this instance holds the feed
    published_position: int = 0
    head_position: int = 0
    records_published: int = 0
    rounds_published: int = 0
    rounds_failed: int = 0
    takeovers: int = 0
    refusals: int = 0  # rounds the broker refused for good (each try counted)
    stuck: bool = False  # the next round is refused for good: the feed stands still until it is taken
    # When the round on the wire was sent (time.monotonic()); None while none waits for the broker.
    unacknowledged_since_s: float | None = None

    @property
    def lag_positions(self) -> int:
        return max(0, self.head_position - self.published_position) if self.publishing else 0

    @property
    def unacknowledged_s(self) -> float:
        since = self.unacknowledged_since_s  # read once: the feed's thread may clear it meanwhile
        return 0.0 if since is None or not self.publishing else max(0.0, time.monotonic() - since)


class FeedCollector(Collector):
    def __init__(self, stats: FeedStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.stats
        yield GaugeMetricFamily(
            "ledger_feed_publishing",
            "1 while this instance publishes the availability feed",
            value=int(stats.publishing),
        )
        yield GaugeMetricFamily(
            "ledger_feed_position",
            "the log position the feed has published up to",
            value=stats.published_position,
        )
        yield GaugeMetricFamily(
            "ledger_feed_lag_positions",
            "positions committed and not yet published on the feed (0 where another instance publishes it)",
            value=stats.lag_positions,
        )
        yield CounterMetricFamily(
            "ledger_feed_records",
            "availability records acknowledged by the broker",
            value=stats.records_published,
        )
        yield GaugeMetricFamily(
            "ledger_feed_unacknowledged_seconds",
            "how long the round on the wire has waited for the broker (0 when none waits); past "
            "LEDGER_FEED_PUBLISH_TIMEOUT_S it is warned of, and it is sent again only once the producer "
            "gave it up",
            value=stats.unacknowledged_s,
        )
        yield CounterMetricFamily(
            "ledger_feed_rounds_failed",
            "rounds not acknowledged in full (published again from their start)",
            value=stats.rounds_failed,
        )
        yield CounterMetricFamily(
            "ledger_feed_takeovers", "times this instance took the feed over", value=stats.takeovers
        )
        yield GaugeMetricFamily(
            "ledger_feed_stuck",
            "1 while the broker refuses the feed's next round for good (a record too large, the topic "
            "missing or not allowed): nothing after it is published until an operator acts",
            value=int(stats.stuck and stats.publishing),
        )
        yield CounterMetricFamily(
            "ledger_feed_refusals",
            "times the broker refused a round for good (it is kept and tried again, never skipped)",
            value=stats.refusals,
        )
