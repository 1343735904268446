"""The Kafka intake: stock.events in, stock.events.results and stock.events.dlq out (CONTRACT §2);
and the availability feed, stock.levels out (CONTRACT §9).

Importing this package is cheap: kafka-python is loaded only when a consumer starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.config import Settings
    from ledger.intake.envelope import IntakeLimits
    from ledger.kafka.consumer import LedgerPort
    from ledger.kafka.handle import ConsumerHandle
    from ledger.kafka.levels_feed import FeedHandle


def start_consumer(
    ledger: LedgerPort, settings: Settings, limits: IntakeLimits | None = None
) -> ConsumerHandle:
    """Starts consuming LEDGER_KAFKA_TOPIC into `ledger` (already started) on a thread of its own."""
    from ledger.kafka.handle import start_consumer as start

    return start(ledger, settings, limits)


def start_levels_feed(recorder: Any, settings: Settings) -> FeedHandle:
    """Starts the availability feed (LEDGER_KAFKA_LEVELS_TOPIC) on a thread of its own."""
    from ledger.kafka.levels_feed import start_levels_feed as start

    return start(recorder, settings)


__all__ = ["start_consumer", "start_levels_feed"]
