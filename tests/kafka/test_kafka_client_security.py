"""CONTRACT §5: every Kafka client the ledger creates (consumer, producer, admin) is given the broker's
security settings. The test broker takes no SASL, so the clients' configuration is what is checked."""

from __future__ import annotations

from typing import Any

import certifi
import pytest
from pydantic import ValidationError

from ledger.config import Settings
from ledger.kafka import clients, producer

# A file of CA certificates that exists: the settings read it when TLS is on.
CA_FILE = certifi.where()
SECURE = {
    "kafka_bootstrap": "broker-1:9093,broker-2:9093",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "ledger",
    "kafka_sasl_password": "s3cret-broker-password",
    "kafka_ssl_cafile": CA_FILE,
}
EXPECTED = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "ledger",
    "sasl_plain_password": "s3cret-broker-password",
    "ssl_cafile": CA_FILE,
}
# The producer is librdkafka's (ledger/kafka/producer.py): the same settings under its names.
EXPECTED_PRODUCER = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "ledger",
    "sasl.password": "s3cret-broker-password",
    "ssl.ca.location": CA_FILE,
}


class _Recorded:
    """Stands in for a kafka-python client class: keeps the configuration it was built with."""

    def __init__(self, built: list[dict[str, Any]]) -> None:
        self.built = built

    def __call__(self, *args: Any, **config: Any) -> Any:
        self.built.append(args[0] if args else config)  # librdkafka's producer takes one dict
        return self

    def list_topics(self, **_: Any) -> list[str]:
        return []

    def create_topics(self, topics: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    made: dict[str, list[dict[str, Any]]] = {"consumer": [], "producer": [], "admin": []}
    monkeypatch.setattr(clients, "KafkaConsumer", _Recorded(made["consumer"]))
    monkeypatch.setattr(producer.confluent_kafka, "Producer", _Recorded(made["producer"]))
    monkeypatch.setattr(clients, "KafkaAdminClient", _Recorded(made["admin"]))
    return made


def test_the_consumer_the_producer_and_the_admin_client_are_given_the_security_settings(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    settings = Settings(**SECURE)
    clients.new_consumer(settings)
    clients.new_producer(settings)
    clients.new_producer(settings, role="dead-letters")
    clients.ensure_topics(settings, ["stock.events"], partitions=1)
    for kind in ("consumer", "producer", "admin"):
        assert built[kind], kind
        expected = EXPECTED_PRODUCER if kind == "producer" else EXPECTED
        for config in built[kind]:
            assert {key: config.get(key) for key in expected} == expected, kind


def test_without_security_settings_the_clients_use_plaintext(built: dict[str, list[dict[str, Any]]]) -> None:
    clients.new_consumer(Settings(kafka_bootstrap="localhost:9092"))
    assert built["consumer"][0]["security_protocol"] == "PLAINTEXT"
    assert built["consumer"][0]["sasl_plain_password"] is None
    clients.new_producer(Settings(kafka_bootstrap="localhost:9092"))
    assert built["producer"][0]["security.protocol"] == "PLAINTEXT"
    assert "sasl.password" not in built["producer"][0]


def test_sasl_without_its_credentials_is_refused_naming_the_variables() -> None:
    with pytest.raises(ValidationError, match="LEDGER_KAFKA_SASL_USERNAME"):
        Settings(kafka_bootstrap="localhost:9092", kafka_security_protocol="SASL_PLAINTEXT")


def test_the_broker_password_is_not_shown_with_the_settings() -> None:
    settings = Settings(**SECURE)
    assert "s3cret-broker-password" not in repr(settings)
    assert "s3cret-broker-password" not in str(settings.model_dump())
