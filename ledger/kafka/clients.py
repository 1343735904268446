"""The ledger's Kafka clients built from the settings, every option that matters passed explicitly:
kafka-python's consumer and admin client, and the librdkafka producer of ledger/kafka/producer.py."""

from __future__ import annotations

import os
import socket
from typing import Any

from kafka import KafkaConsumer, codec
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.net.compat import KafkaNetClient

from ledger.config import Settings
from ledger.kafka import header_keys
from ledger.kafka.producer import BROKER_CONTACT_TIMEOUT_S, Producer, producer_config

REQUEST_TIMEOUT_MS = 30_000


class BrokerUnreachable(KafkaConnectionError):  # type: ignore[misc]  # kafka-python is untyped
    """No broker answered a new client: an outage to wait out, said in one line, not a fault in the
    ledger whose traceback would help anyone."""


def client_id(settings: Settings, role: str) -> str:
    return f"{settings.kafka_client_id}-{role}-{socket.gethostname()}-{os.getpid()}"


def bootstrap_servers(settings: Settings) -> list[str]:
    if not settings.kafka_bootstrap:
        raise ValueError("LEDGER_KAFKA_BOOTSTRAP is not set")
    return [server.strip() for server in settings.kafka_bootstrap.split(",") if server.strip()]


def security(settings: Settings) -> dict[str, Any]:
    """CONTRACT §5: how every client of the ledger's authenticates to the broker, passed to each."""
    password = settings.kafka_sasl_password
    return {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": None if password is None else password.get_secret_value(),
        "ssl_cafile": settings.kafka_ssl_cafile,
    }


# Every codec a producer or a topic may compress record batches with, and whether kafka-python can
# read it here. A batch it cannot read fails every poll of its partition (CONTRACT §2's dead-letter
# topic is for records the ledger reads and refuses, not for batches nobody can open).
_CODECS = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}


def missing_codecs_reason() -> str | None:
    """Why the consumer could not open some record batches here, or None: `ledger serve` and
    `ledger consume` check it before they start, the consumer before it is built."""
    missing = [name for name, present in _CODECS.items() if not present()]
    if not missing:
        return None
    return (
        f"the Kafka consumer cannot read records compressed with {', '.join(missing)}: "
        "install lz4, zstandard and python-snappy"
    )


def new_consumer(settings: Settings) -> Any:
    """A group member that never commits by itself: offsets move only after an outcome is durable.
    Refused (ValueError) where a compression codec is missing (pyproject.toml installs them all)."""
    missing = missing_codecs_reason()
    if missing:
        raise ValueError(missing)
    header_keys.install()
    servers = bootstrap_servers(settings)
    built: list[KafkaNetClient] = []

    def network_client(**config: Any) -> KafkaNetClient:
        client = KafkaNetClient(**config)
        built.append(client)
        return client

    try:
        return _consumer(settings, servers, network_client)
    except (KafkaTimeoutError, KafkaConnectionError) as error:
        # kafka-python's constructor starts its network thread, then waits for a broker, and fails
        # with one of these when none answers, leaving that thread and its sockets running: closed
        # here, or every try of an outage left a thread and four descriptors behind.
        for client in built:
            client.close()
        # kafka-python ends a refused TLS or SASL handshake the same way: the kafka.* lines say which.
        raise BrokerUnreachable(
            f"no broker at {','.join(servers)} answered (a refused TLS or SASL handshake ends so too: "
            f"see the kafka.* lines): {error}"
        ) from error


def _consumer(settings: Settings, servers: list[str], network_client: Any) -> Any:
    return KafkaConsumer(
        bootstrap_servers=servers,
        kafka_client=network_client,
        client_id=client_id(settings, "consumer"),
        group_id=settings.kafka_group,
        enable_auto_commit=False,
        # A new group reads the topic from its start: every event ever sent belongs in the ledger.
        auto_offset_reset="earliest",
        # Events from producers' aborted transactions never reach the ledger.
        isolation_level="read_committed",
        max_poll_records=settings.kafka_batch_records_max,
        max_partition_fetch_bytes=settings.kafka_fetch_partition_bytes_max,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_poll_interval_ms_max,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        # kafka-python's default, 30 s, kept `ledger consume` that long from its SIGINT with no broker.
        bootstrap_timeout_ms=settings.kafka_bootstrap_timeout_ms,
        check_crcs=True,
        key_deserializer=None,
        value_deserializer=None,
        **security(settings),
    )


def new_producer(
    settings: Settings, role: str = "producer", broker_contact_timeout_s: float = BROKER_CONTACT_TIMEOUT_S
) -> Producer:
    """Acknowledged by every in-sync replica; idempotent, so retries neither double nor reorder a key;
    keyed records placed as every Kafka client places them (ledger/kafka/producer.py). Built once a
    broker answered within `broker_contact_timeout_s` (else KafkaConnectionError)."""
    bootstrap = ",".join(bootstrap_servers(settings))
    config = producer_config(settings, bootstrap, client_id(settings, role), security(settings))
    producer = Producer(config, settings.kafka_publish_timeout_s)
    producer.reach_broker(broker_contact_timeout_s)
    return producer


def ensure_topics(settings: Settings, topics: list[str], partitions: int, replication: int = 1) -> list[str]:
    """Creates the topics that do not exist yet (dev and test helper); returns those it created."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=client_id(settings, "admin"),
        **security(settings),
    )
    try:
        existing = set(admin.list_topics())
        missing = [topic for topic in topics if topic not in existing]
        created = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, partitions, replication)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
