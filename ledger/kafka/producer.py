"""The ledger's Kafka producer: librdkafka (confluent-kafka) behind the small part of kafka-python's
producer interface that the ledger uses, `send()` returning a future, `flush()` and `close()`.

Why librdkafka: publishing one result per event through kafka-python cost about 38% of the Kafka
intake's CPU (its `send()` in Python, and its sender thread holding the GIL); librdkafka builds
and sends the batches in C threads, at about a fifth of the CPU per record (bench/intake_bench.py).
The consumer and the admin client stay kafka-python's (ledger/kafka/clients.py).

What the rest of the ledger relies on, kept here:
- Keyed records go where any Kafka client puts them (murmur2 of the key: `murmur2_random`, not
  librdkafka's own default), so one store's results stay in one partition, in order; the producer
  is idempotent with acks from every in-sync replica, so retries neither double nor reorder.
- Errors are kafka-python's classes (kafka.errors, by the broker's error code), so the publisher
  (ledger/kafka/publisher.py) tells a record the broker can never take from a retriable failure
  and from a producer that failed for good (`ProducerFailedForGood`) in one way for either client.
- The buffer is bounded (`kafka_produce_buffer_records_max`, `kafka_produce_buffer_bytes_max`).
  When it is full, `send()` serves the broker's answers and waits at most the publish timeout,
  then raises KafkaTimeoutError; nothing else blocks.
- librdkafka answers only when asked: a future that is not done yet serves the delivery reports
  of every record (`poll(0)`) when it is looked at; `flush()` and `close()` wait for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import confluent_kafka
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, for_code

from ledger.config import Settings

# librdkafka's own log lines and errors, under `kafka` like kafka-python's: LEDGER_KAFKA_LOG_LEVEL.
log = logging.getLogger("kafka.librdkafka")

# librdkafka's own timeouts, as kafka-python's were: a request, and a record's whole delivery
# (retries included) before its future fails with KafkaTimeoutError.
REQUEST_TIMEOUT_MS = 30_000
DELIVERY_TIMEOUT_MS = 120_000


def verdict_within_s(backstop_s: float) -> float:
    """How long a sender waits for the producer's verdict on a record (acknowledged, or given up)
    before it gives up on the producer itself. The producer retries a record until its delivery
    timeout and may deliver it until then: a copy sent sooner would queue behind the first, and a
    broker slower than the sender's own timeout would get everything twice or more. `backstop_s`
    more is for a producer that never answers."""
    return DELIVERY_TIMEOUT_MS / 1000 + backstop_s


# A producer is built once a broker has answered within this, as kafka-python's was (its constructor
# failed while no broker answered). Else a producer built while the broker is away takes records it
# cannot send, and the intake would count each of those publishes against the batch.
BROKER_CONTACT_TIMEOUT_S = 5.0
# A full buffer: how long `send()` lets librdkafka work before it looks again.
BUFFER_FULL_WAIT_S = 0.05
# Delivery reports are served by `send()` every this many records too, so that a producer whose
# futures nobody looks at (a fire-and-forget sender) does not keep them all.
SENDS_PER_SERVE = 1000


class ProducerFailedForGood(KafkaError):  # type: ignore[misc]  # kafka-python is untyped
    """librdkafka's fatal error (e.g. an idempotent producer whose sequence state the broker lost):
    no send of this producer can succeed again."""

    retriable = False


class LocalProducerError(KafkaError):  # type: ignore[misc]
    """An error librdkafka raised itself (no broker error code); it may pass."""

    retriable = True


def kafka_error(error: confluent_kafka.KafkaError) -> KafkaError:
    """librdkafka's error as kafka-python's class for it."""
    text = error.str()
    if error.fatal() or error.code() == confluent_kafka.KafkaError._FATAL:
        return ProducerFailedForGood(text)
    code = error.code()
    if code == confluent_kafka.KafkaError._MSG_TIMED_OUT:
        return KafkaTimeoutError(text)
    if code > 0:
        return for_code(code)(text)
    return LocalProducerError(f"{error.name()}: {text}")


class Sent:
    """One record's future: done once the broker acknowledged it or it failed for good."""

    __slots__ = ("_callbacks", "_done", "_errbacks", "_producer", "exception")

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._done = False
        self.exception: KafkaError | None = None
        self._callbacks: list[Callable[[Any], Any]] | None = None
        self._errbacks: list[Callable[[BaseException], Any]] | None = None

    @property
    def is_done(self) -> bool:
        if not self._done:
            self._producer.serve()
            failed_for_good = self._producer.failed_for_good
            if not self._done and failed_for_good is not None:
                # librdkafka may hold the records of a producer in its fatal state unanswered.
                self._done, self.exception = True, failed_for_good
        return self._done

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def get(self, timeout: float | None = None) -> None:
        """Waits (at most `timeout` seconds) for the broker; raises the record's error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_done:
            if deadline is not None and time.monotonic() >= deadline:
                raise KafkaTimeoutError(f"not acknowledged within {timeout} s")
            self._producer.serve(BUFFER_FULL_WAIT_S)
        if self.exception is not None:
            raise self.exception

    def add_callback(self, callback: Callable[[Any], Any]) -> Sent:
        if self._done:
            if self.exception is None:
                callback(None)
        else:
            self._callbacks = [*(self._callbacks or ()), callback]
        return self

    def add_errback(self, errback: Callable[[BaseException], Any]) -> Sent:
        if self._done:
            if self.exception is not None:
                errback(self.exception)
        else:
            self._errbacks = [*(self._errbacks or ()), errback]
        return self

    def add_both(self, callback: Callable[[Any], Any]) -> Sent:
        """`callback(None)` once acknowledged, `callback(error)` once failed (the trace's spans)."""
        return self.add_callback(callback).add_errback(callback)

    def delivered(self, error: confluent_kafka.KafkaError | None, _message: Any) -> None:
        """librdkafka's delivery report, called from `serve()` on the thread that serves."""
        self._done = True
        if error is not None:
            self.exception = kafka_error(error)
            for errback in self._errbacks or ():
                errback(self.exception)
        else:
            for callback in self._callbacks or ():
                callback(None)


class Producer:
    """Safe to use from several threads (librdkafka's producer is); the ledger uses it from one."""

    def __init__(self, config: dict[str, Any], publish_timeout_s: float) -> None:
        self._producer = confluent_kafka.Producer(config)
        self._publish_timeout_s = publish_timeout_s
        self._unserved = 0
        # Set once librdkafka reports its fatal error: nothing this producer sends can succeed.
        self.failed_for_good: ProducerFailedForGood | None = None

    def send(
        self,
        topic: str,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        buffer_wait_s: float | None = None,
    ) -> Sent:
        """Hands the record to librdkafka; raises kafka-python's error class when it is refused
        at once (too large, say), KafkaTimeoutError when the buffer stayed full (for
        `buffer_wait_s`, at most the publish timeout)."""
        sent = Sent(self)
        deadline_s: float | None = None
        wait_s = self._publish_timeout_s
        if buffer_wait_s is not None:
            wait_s = min(buffer_wait_s, wait_s)
        while True:
            try:
                # Headers only when there are some: librdkafka's wrapper takes about 1 µs a record
                # to read even an empty list, and a result record (one per event) has none.
                if headers:
                    self._producer.produce(
                        topic, value=value, key=key, headers=cast(Any, headers), on_delivery=sent.delivered
                    )
                else:
                    self._producer.produce(topic, value=value, key=key, on_delivery=sent.delivered)
                break
            except BufferError:
                now = time.monotonic()
                deadline_s = deadline_s or now + wait_s
                if now >= deadline_s:
                    raise KafkaTimeoutError(f"the producer's buffer stayed full for {wait_s:.1f} s") from None
                self.serve(BUFFER_FULL_WAIT_S)
            except confluent_kafka.KafkaException as error:
                raise kafka_error(error.args[0]) from error
        self._unserved += 1
        if self._unserved >= SENDS_PER_SERVE:
            self.serve()
        return sent

    def reach_broker(self, timeout_s: float = BROKER_CONTACT_TIMEOUT_S) -> None:
        """Returns once a broker has answered (its cluster metadata); else closes this producer and
        raises KafkaConnectionError."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except confluent_kafka.KafkaException as error:
            self.close(0)
            raise KafkaConnectionError(f"no broker answered within {timeout_s:.0f} s: {error}") from error

    def has_topic(self, topic: str, timeout_s: float) -> bool:
        """Does the broker know `topic`? Asking never creates it (topics are made on purpose)."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except confluent_kafka.KafkaException as error:
            raise kafka_error(error.args[0]) from error
        found = metadata.topics.get(topic)
        if found is None or found.error is None:
            return found is not None
        if found.error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        # Anything else about the topic (no leader while a broker restarts, say) is no answer: as
        # a missing topic it put the feed in its refused-for-good state, waiting minutes to retry.
        raise kafka_error(found.error)

    def serve(self, timeout_s: float = 0) -> None:
        """Runs the delivery reports (and logs, errors) librdkafka has for this thread. A fatal
        error (raised by poll) is kept: the futures not done then fail with it."""
        self._unserved = 0
        try:
            self._producer.poll(timeout_s)
        except confluent_kafka.KafkaException as error:
            self._failed(error)

    def flush(self, timeout: float | None = None) -> int:
        """Waits (at most `timeout` seconds) until the broker has answered every record; returns
        how many are still unanswered."""
        try:
            return int(self._producer.flush(-1 if timeout is None else max(timeout, 0)))
        except confluent_kafka.KafkaException as error:
            self._failed(error)
            return len(self._producer)

    def close(self, timeout: float | None = None) -> None:
        """Flushes for `timeout` seconds at most; what is still unanswered then fails."""
        if self.flush(timeout) > 0:
            self._producer.purge()
            self.flush(0)
        self._producer.close()

    def _failed(self, error: confluent_kafka.KafkaException) -> None:
        try:
            text = str(kafka_error(error.args[0]))
        except Exception:  # noqa: BLE001 - the client's error may not be readable once it failed
            text = repr(error)
        failure = ProducerFailedForGood(text)
        log.error("the producer failed for good: %s", failure)
        self.failed_for_good = failure


def producer_config(
    settings: Settings, bootstrap: str, client_id: str, security: dict[str, Any]
) -> dict[str, Any]:
    """librdkafka's configuration from the settings; `security` in kafka-python's names."""
    request_bytes_max = settings.kafka_produce_request_bytes_max
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        # Topics are created on purpose (infra/docker-compose.yml), never by a publish: a broker that
        # restarted empty gets its topics back from the operator, with their partition counts.
        "allow.auto.create.topics": False,
        "linger.ms": settings.kafka_linger_ms,
        "batch.size": min(settings.kafka_produce_batch_bytes, request_bytes_max),
        # Dead letters are cut to fit in this (Settings checks it), so that none can block a partition.
        "message.max.bytes": request_bytes_max,
        "queue.buffering.max.messages": settings.kafka_produce_buffer_records_max,
        "queue.buffering.max.kbytes": max(settings.kafka_produce_buffer_bytes_max // 1024, 1),
        "request.timeout.ms": REQUEST_TIMEOUT_MS,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "logger": log,
        "error_cb": _log_fatal,
        "security.protocol": security["security_protocol"],
    }
    optional = {
        "sasl.mechanism": security["sasl_mechanism"],
        "sasl.username": security["sasl_plain_username"],
        "sasl.password": security["sasl_plain_password"],
        "ssl.ca.location": security["ssl_cafile"],
    }
    config.update({name: value for name, value in optional.items() if value is not None})
    return config


def _log_fatal(error: confluent_kafka.KafkaError) -> None:
    """librdkafka's errors that belong to no record: the others (brokers down) are in its own log
    lines already, and the records they affect fail on their own futures."""
    if error.fatal():
        log.error("the producer's fatal error: %s", error.str())
