"""The `ledger consume` subcommand (added to `ledger` by register())."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ledger.cli_errors import CommandError, database_url_checked, int_from
from ledger.config import PORT_MAX, Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ledger.access.book import TokenBook
    from ledger.access.store import TokenDatabase
    from ledger.kafka.ops import OpsServer, ReadyReport

log = logging.getLogger("ledger.kafka")


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    """Adds the subcommand, with its `handler` default."""
    consume = subcommands.add_parser("consume", help="run the Kafka consumer alone (no HTTP), to scale out")
    consume.add_argument("--bootstrap", help="overrides LEDGER_KAFKA_BOOTSTRAP")
    consume.add_argument(
        "--metrics-port", type=int_from(1, PORT_MAX), help="serve /metrics, /readyz, /healthz on this port"
    )
    consume.set_defaults(handler=consume_command)


def consume_command(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.bootstrap import build_ledger, intake_limits
    from ledger.kafka.consumer import KafkaIntake
    from ledger.kafka.levels_feed import start_levels_feed
    from ledger.kafka.metrics import IntakeCollector, intake_registry

    if args.bootstrap:
        settings.kafka_bootstrap = args.bootstrap
    if args.metrics_port is not None:
        settings.kafka_metrics_port = args.metrics_port
    if not settings.kafka_bootstrap:
        raise CommandError("set LEDGER_KAFKA_BOOTSTRAP (or --bootstrap) to the Kafka brokers")
    check_codecs()
    with database_url_checked():
        ledger = build_ledger(settings, "consume")
    ledger.start()
    intake = KafkaIntake(ledger, settings, intake_limits(settings))
    feed = start_levels_feed(ledger.recorder, settings) if settings.feed_enabled else None

    def ready() -> bool:
        return intake.ready and ledger.writer.alive

    def report() -> tuple[bool, dict[str, object]]:
        because = intake.not_ready_because
        if because is None and not ledger.writer.alive:
            because = "the ledger's writer has stopped"
        return ready(), {
            "not_ready_because": because,  # a not-ready answer's detail (ledger/kafka/ops.py)
            "lag": intake.stats.lag_records,
            "partitions": intake.stats.assigned_partitions,
            "writer_alive": ledger.writer.alive,
        }

    ops = None
    book = None
    if settings.kafka_metrics_port is not None:
        registry = intake_registry(IntakeCollector(intake.stats, ready))
        if feed is not None:
            registry.register(feed.collector)
        ops, book = _serve_ops(settings, settings.kafka_metrics_port, ledger.recorder, registry, report)
    _stop_on_signals(intake.stop)
    try:
        intake.run()
    finally:
        if feed is not None:
            feed.stop()  # its position is saved after each round
        if ops is not None:
            ops.stop()
        if book is not None:
            book.stop()
        ledger.stop()
    return 0


def _serve_ops(
    settings: Settings, port: int, tokens: TokenDatabase, registry: CollectorRegistry, report: ReadyReport
) -> tuple[OpsServer, TokenBook | None]:
    """The ops endpoint on `port`, started: the API's Host rules, and its token for /metrics when
    LEDGER_METRICS_AUTH=required (then the book returned, started, to stop with it)."""
    from ledger.access.book import TokenBook
    from ledger.access.hosts import allowed_hosts, is_loopback
    from ledger.access.metrics import metrics_guard
    from ledger.kafka.ops import OpsServer

    book = None
    guard = None
    if settings.metrics_auth == "required":
        book = TokenBook(
            tokens,
            refresh_interval_s=settings.auth_refresh_ms / 1000,
            last_use_flush_s=settings.auth_last_use_flush_s,
        )
        book.start()
        guard = metrics_guard(book, required=settings.auth == "required")
    host = settings.kafka_metrics_host
    ops = OpsServer(
        host,
        port,
        registry,
        report,
        guard,
        allowed_hosts=allowed_hosts(settings.allowed_hosts),
    ).start()
    log.info("metrics on http://%s:%d/metrics", host, ops.port)
    if not is_loopback(host) and settings.allowed_hosts is None:
        log.warning(
            "listening on %s, but only requests for localhost, 127.0.0.1 or [::1] are answered "
            "(/healthz and /readyz: any): set LEDGER_ALLOWED_HOSTS to the names the scraper "
            "reaches this by (or *)",
            host,
        )
    return ops, book


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM or Ctrl+C: finish the batch, commit, leave the group. A second one: stop at once."""

    def handle(signum: int, _: FrameType | None) -> None:
        log.info("%s: finishing the batch in hand, then leaving the group", signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def check_codecs() -> None:
    """Refuses to start an intake that could not read every record batch a producer may send."""
    from ledger.kafka.clients import missing_codecs_reason

    missing = missing_codecs_reason()
    if missing:
        raise CommandError(missing)
