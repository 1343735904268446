"""The Kafka intake as a thread of a running service (`ledger serve` with LEDGER_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import logging
import threading

from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.kafka.consumer import KafkaIntake, LedgerPort
from ledger.kafka.metrics import IntakeCollector, IntakeStats

log = logging.getLogger("ledger.kafka")


class ConsumerHandle:
    """A running intake: `ready` for /readyz, `lag` and `collector` for /metrics, `stop()` on shutdown."""

    def __init__(self, intake: KafkaIntake) -> None:
        self.intake = intake
        self.collector = IntakeCollector(intake.stats, lambda: self.ready)
        self._thread = threading.Thread(target=intake.run, name="ledger-kafka", daemon=True)

    def start(self) -> ConsumerHandle:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self.not_ready_because is None

    @property
    def not_ready_because(self) -> str | None:
        """Why the intake should not be counted on now (KafkaIntake.not_ready_because), or None."""
        if not self._thread.is_alive():
            return "the consumer thread has ended"
        return self.intake.not_ready_because

    @property
    def lag(self) -> int | None:
        """Records of this member's partitions not yet committed (None until known)."""
        return self.intake.stats.lag_records

    @property
    def stats(self) -> IntakeStats:
        return self.intake.stats

    def stop(self, timeout_s: float | None = None) -> bool:
        """Finishes the batch in hand, commits, leaves the group; True when it did so in time."""
        self.intake.stop()
        self._thread.join(self.intake.settings.kafka_shutdown_timeout_s if timeout_s is None else timeout_s)
        if self._thread.is_alive():
            log.error("the Kafka consumer did not stop in time")
            return False
        return True


def start_consumer(
    ledger: LedgerPort, settings: Settings, limits: IntakeLimits | None = None
) -> ConsumerHandle:
    """Starts consuming LEDGER_KAFKA_TOPIC into `ledger` (which must be started) on a thread."""
    if limits is None:
        from ledger.bootstrap import intake_limits

        limits = intake_limits(settings)
    return ConsumerHandle(KafkaIntake(ledger, settings, limits)).start()
