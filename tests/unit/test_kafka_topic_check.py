"""Whether the broker has a topic (ledger/kafka/producer.py `has_topic`): only the broker's "unknown
topic" is a no. Another error about the topic (no leader while a broker restarts) counted as one,
and put the availability feed in its refused-for-good state, which retries minutes apart."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import pytest

# kafka-python loads its protocol schemas with a deprecated importlib call, hundreds of times.
warnings.filterwarnings("ignore", ".*is deprecated. Use files", DeprecationWarning)

from kafka.errors import LeaderNotAvailableError  # noqa: E402

from ledger.kafka.producer import Producer  # noqa: E402


def _producer_answering(topics: dict[str, Any]) -> Producer:
    producer = Producer({"bootstrap.servers": "127.0.0.1:9"}, publish_timeout_s=1.0)
    producer._producer = SimpleNamespace(list_topics=lambda topic, timeout: SimpleNamespace(topics=topics))
    return producer


def _topic(error_code: int | None) -> Any:
    return SimpleNamespace(error=None if error_code is None else confluent_kafka.KafkaError(error_code))


def test_a_topic_the_broker_lists_without_an_error_is_there() -> None:
    assert _producer_answering({"stock.levels": _topic(None)}).has_topic("stock.levels", 1.0)


@pytest.mark.parametrize(
    "topics", [{}, {"stock.levels": _topic(confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART)}]
)
def test_a_topic_the_broker_does_not_know_is_missing(topics: dict[str, Any]) -> None:
    assert not _producer_answering(topics).has_topic("stock.levels", 1.0)


def test_another_error_about_the_topic_is_no_answer_rather_than_a_missing_topic() -> None:
    answering = _producer_answering({"stock.levels": _topic(confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE)})
    with pytest.raises(LeaderNotAvailableError):
        answering.has_topic("stock.levels", 1.0)
