"""One trial's setup: a production service on a database of its own, with topics and a catalogue
of its own on a broker, and Kafka producers of events from that catalogue to those topics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka_harness import Broker, Topics
from support.ids import unique

from production.load import Catalogue, KafkaLoad, new_catalogue
from production.service import KafkaSetup, ProductionService


@dataclass
class KafkaTrial:
    broker: Broker
    topics: Topics
    catalogue: Catalogue
    service: ProductionService

    def producer(self, *, chunk: int, pause_s: float, **options: Any) -> KafkaLoad:
        """Events of this trial's catalogue to its topic (not started)."""
        return KafkaLoad(
            self.broker.bootstrap, self.topics.events, self.catalogue, chunk=chunk, pause_s=pause_s, **options
        )


def kafka_trial(
    name: str,
    broker: Broker,
    database_url: str,
    log_dir: Path,
    *,
    partitions: int,
    request_timeout_s: float,
    extra_env: dict[str, str] | None = None,
) -> KafkaTrial:
    """The trial's topics and catalogue, named after it, and its service (not started)."""
    topics = broker.new_topics(f"prod-{name}", partitions)
    service = ProductionService(
        database_url,
        log_dir,
        request_timeout_s=request_timeout_s,
        kafka=KafkaSetup(broker.bootstrap, topics),
        extra_env=extra_env,
    )
    return KafkaTrial(broker, topics, new_catalogue(unique(name)), service)
