"""The `ledger consume` and `ledger simulate` subcommands (added to `ledger` by register())."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from collections.abc import Callable
from types import FrameType

from ledger.config import Settings

log = logging.getLogger("ledger.kafka")

Handler = Callable[[argparse.Namespace, Settings], int]
SIMULATE_PARTITIONS_DEFAULT = 6


def _quiet_kafka_client() -> None:
    """kafka-python logs every connection and metadata refresh at INFO; group changes are ours to log."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Handler]:
    """Adds the subcommands, each with its `handler` default; also returns the handlers by name."""
    consume = subcommands.add_parser("consume", help="run the Kafka consumer alone (no HTTP), to scale out")
    consume.add_argument("--bootstrap", help="overrides LEDGER_KAFKA_BOOTSTRAP")
    consume.add_argument("--metrics-port", type=int, help="serve /metrics, /readyz, /healthz on this port")

    simulate = subcommands.add_parser(
        "simulate", help="send a model retailer's stock events to Kafka or HTTP"
    )
    simulate.add_argument("--to", choices=("kafka", "http"), default="kafka")
    simulate.add_argument("--bootstrap", help="overrides LEDGER_KAFKA_BOOTSTRAP (--to kafka)")
    simulate.add_argument("--topic", help="overrides LEDGER_KAFKA_TOPIC (--to kafka)")
    simulate.add_argument("--create-topic", action="store_true", help="create the topic if it is missing")
    simulate.add_argument(
        "--partitions", type=int, default=SIMULATE_PARTITIONS_DEFAULT, help="partitions of a topic it creates"
    )
    simulate.add_argument("--url", default="http://127.0.0.1:8000", help="the ledger's base URL (--to http)")
    simulate.add_argument("--batch", type=int, default=100, help="envelopes per HTTP request (--to http)")
    simulate.add_argument("--stores", type=int, default=10)
    simulate.add_argument("--skus", type=int, default=200)
    simulate.add_argument("--events", type=int, default=10_000, help="records to send")
    simulate.add_argument("--rate", type=float, default=0, help="records per second; 0: as fast as it goes")
    simulate.add_argument("--duplicates", type=float, default=0.02, help="share of records sent twice")
    simulate.add_argument("--junk", type=float, default=0.005, help="share of unreadable records")
    simulate.add_argument("--expiring", type=float, default=0.1, help="share of reservations left to expire")
    simulate.add_argument("--expire-after-s", type=float, default=5.0)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--run-id", help="prefix of the event ids (default: random)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    consume.set_defaults(handler=consume_command)
    simulate.set_defaults(handler=simulate_command)
    return {"consume": consume_command, "simulate": simulate_command}


def consume_command(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.bootstrap import build_ledger, intake_limits
    from ledger.kafka.consumer import KafkaIntake
    from ledger.kafka.metrics import IntakeCollector, intake_registry
    from ledger.kafka.ops import OpsServer

    if args.bootstrap:
        settings.kafka_bootstrap = args.bootstrap
    if args.metrics_port is not None:
        settings.kafka_metrics_port = args.metrics_port
    if not settings.kafka_bootstrap:
        print(
            "ledger consume: set LEDGER_KAFKA_BOOTSTRAP (or --bootstrap) to the Kafka brokers",
            file=sys.stderr,
        )
        return 2
    ledger = build_ledger(settings)
    ledger.start()
    intake = KafkaIntake(ledger, settings, intake_limits(settings))

    def ready() -> bool:
        return intake.ready and ledger.writer.alive

    def report() -> tuple[bool, dict[str, object]]:
        return ready(), {
            "lag": intake.stats.lag_records,
            "partitions": intake.stats.assigned_partitions,
            "writer_alive": ledger.writer.alive,
        }

    ops = None
    if settings.kafka_metrics_port is not None:
        registry = intake_registry(IntakeCollector(intake.stats, ready))
        ops = OpsServer(settings.kafka_metrics_host, settings.kafka_metrics_port, registry, report).start()
        log.info("metrics on http://%s:%d/metrics", settings.kafka_metrics_host, ops.port)
    _stop_on_signals(intake.stop)
    try:
        intake.run()
    finally:
        if ops is not None:
            ops.stop()
        ledger.stop()
    return 0


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM or Ctrl+C: finish the batch, commit, leave the group. A second one: stop at once."""

    def handle(signum: int, _: FrameType | None) -> None:
        log.info("%s: finishing the batch in hand, then leaving the group", signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def simulate_command(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.retailer import Retailer, Traffic
    from devtools.simulate import HttpSink, KafkaSink, Sink, describe, run

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
    _quiet_kafka_client()
    sink: Sink
    if args.to == "kafka":
        if args.bootstrap:
            settings.kafka_bootstrap = args.bootstrap
        if not settings.kafka_bootstrap:
            print(
                "ledger simulate: set LEDGER_KAFKA_BOOTSTRAP (or --bootstrap), or use --to http",
                file=sys.stderr,
            )
            return 2
        topic = args.topic or settings.kafka_topic
        if args.create_topic:
            from ledger.kafka.clients import ensure_topics

            ensure_topics(settings, [topic], args.partitions)
        sink = KafkaSink(settings, topic)
    else:
        sink = HttpSink(args.url, args.batch)
    print(f"simulating {describe(args)} (run id {traffic.run_id}) -> {sink.target}", file=sys.stderr)
    summary = run(
        Retailer(traffic).records(), sink, traffic.events, args.rate or None, progress=not args.quiet
    )
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0
