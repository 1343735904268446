"""`ledger simulate`: sends the model retailer's traffic to Kafka or to the HTTP API, at a given rate
or as fast as it goes, with a progress bar and a summary at the end."""

from __future__ import annotations

import argparse
import http.client
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from devtools.retailer import Retailer, SimRecord, Traffic
from ledger.cli_errors import CommandError
from ledger.config import Settings

PROGRESS_EVERY_RECORDS = 100
HTTP_TIMEOUT_S = 60.0
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


@dataclass(slots=True)
class Summary:
    target: str
    by_kind: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    failed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # HTTP only: what the ledger answered
    elapsed_s: float = 0.0

    def lines(self) -> list[str]:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [f"sent {self.sent} records to {self.target} in {self.elapsed_s:.1f} s ({rate:,.0f}/s)"]
        if self.failed:
            out.append(f"  NOT acknowledged: {self.failed}")
        junk = sum(count for kind, count in self.by_kind.items() if kind.startswith("junk:"))
        events = {kind: count for kind, count in self.by_kind.items() if kind.startswith("stock.")}
        out.append(
            "  events: "
            + ", ".join(f"{kind.removeprefix('stock.')} {n}" for kind, n in sorted(events.items()))
        )
        out.append(f"  sent again (duplicates): {self.by_kind['duplicate']}; junk: {junk}")
        if self.outcomes:
            out.append(
                "  ledger answered: " + ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
            )
        return out


class Sink(Protocol):
    target: str

    def send(self, record: SimRecord) -> None: ...

    def close(self, summary: Summary) -> None: ...


class KafkaSink:
    """Produces each record keyed by its store; counts what the broker did not acknowledge."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from ledger.kafka.clients import new_producer

        self.producer = new_producer(settings, role="simulator")
        self.topic = topic
        self.target = f"kafka {settings.kafka_bootstrap} topic {topic}"
        self.failed = 0

    def _failed(self, _: BaseException) -> None:
        self.failed += 1

    def send(self, record: SimRecord) -> None:
        key = record.key.encode() if record.key is not None else None
        self.producer.send(self.topic, key=key, value=record.value).add_errback(self._failed)

    def close(self, summary: Summary) -> None:
        self.producer.flush()
        self.producer.close()
        summary.failed += self.failed


class HttpSink:
    """POSTs envelopes to /v1/events in arrays of `batch_max`; a record that is not JSON is sent on
    its own (the API refuses it with 422), as a broken producer would."""

    def __init__(self, url: str, batch_max: int) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=HTTP_TIMEOUT_S
        )
        self.path = (parts.path.rstrip("/") or "") + "/v1/events"
        self.target = f"{url.rstrip('/')}/v1/events"
        self.batch_max = batch_max
        self.batch: list[bytes] = []
        self.outcomes: Counter[str] = Counter()
        self.failed = 0

    def send(self, record: SimRecord) -> None:
        if record.value is None or not _is_json(record.value):
            self._post(record.value or b"", "application/json")
            return
        self.batch.append(record.value)
        if len(self.batch) >= self.batch_max:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self._post(b"[" + b",".join(self.batch) + b"]", BATCH_CONTENT_TYPE)
            self.batch = []

    def _post(self, body: bytes, content_type: str) -> None:
        self.connection.request("POST", self.path, body=body, headers={"Content-Type": content_type})
        response = self.connection.getresponse()
        answer = response.read()
        if response.status == 200:
            for result in orjson.loads(answer)["results"]:
                self.outcomes[result["outcome"]] += 1
        elif response.status == 422:
            self.outcomes["refused (422)"] += 1
        else:
            self.failed += 1
            self.outcomes[f"HTTP {response.status}"] += 1

    def close(self, summary: Summary) -> None:
        self._flush()
        self.connection.close()
        summary.outcomes.update(self.outcomes)
        summary.failed += self.failed


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def run(
    records: Iterable[SimRecord], sink: Sink, total: int, rate_per_s: float | None, progress: bool = True
) -> Summary:
    """Sends every record, each no earlier than its slot at `rate_per_s` (None: as fast as it goes)."""
    from tqdm import tqdm

    summary = Summary(sink.target)
    started = time.monotonic()
    pending = 0
    with tqdm(total=total, unit="event", desc="simulating", disable=not progress, smoothing=0.1) as bar:
        for number, record in enumerate(records):
            if rate_per_s:
                ahead_s = started + number / rate_per_s - time.monotonic()
                if ahead_s > 0:
                    time.sleep(ahead_s)
            sink.send(record)
            summary.by_kind[record.kind] += 1
            summary.sent += 1
            pending += 1
            if pending >= PROGRESS_EVERY_RECORDS:
                bar.update(pending)
                pending = 0
        sink.close(summary)
        bar.update(pending)
    summary.elapsed_s = time.monotonic() - started
    return summary


def describe(args: Any) -> str:
    rate = f"{args.rate:g}/s" if args.rate else "as fast as it goes"
    return f"{args.events} records, {args.stores} stores x {args.skus} SKUs, {rate}"


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`ledger simulate` (its arguments are declared in ledger/cli.py): 1 if any record was not taken."""
    traffic = Traffic(
        stores=args.stores,
        skus=args.skus,
        events=args.events,
        duplicate_share=args.duplicates,
        junk_share=args.junk,
        expiring_share=args.expiring,
        expire_after_s=args.expire_after_s,
        seed=args.seed,
        run_id=args.run_id or secrets.token_hex(4),
    )
    sink = _kafka_sink(args, settings) if args.to == "kafka" else HttpSink(args.url, args.batch)
    print(f"simulating {describe(args)} (run id {traffic.run_id}) -> {sink.target}", file=sys.stderr)
    summary = run(
        Retailer(traffic).records(),
        sink,
        traffic.events,
        args.rate or None,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _kafka_sink(args: argparse.Namespace, settings: Settings) -> KafkaSink:
    from kafka.errors import KafkaTimeoutError

    # kafka-python logs every connection and metadata refresh at INFO.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if args.bootstrap:
        settings.kafka_bootstrap = args.bootstrap
    if not settings.kafka_bootstrap:
        raise CommandError("set LEDGER_KAFKA_BOOTSTRAP (or --bootstrap), or use --to http")
    topic = args.topic or settings.kafka_topic
    try:
        if args.create_topic:
            from ledger.kafka.clients import ensure_topics

            ensure_topics(settings, [topic], args.partitions)
        return KafkaSink(settings, topic)
    except KafkaTimeoutError as error:  # no broker answered while the client bootstrapped
        raise CommandError(f"Kafka at {settings.kafka_bootstrap}: {error}") from None
