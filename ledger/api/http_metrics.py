"""The metrics of the HTTP edge and of the writer as this process sees them: requests by route
template, method and status with their latency, the writer's batches, commits, queue and rejects,
and the build.

Counted in plain Python values (telemetry.histogram): a request costs one dict look-up and one
append, folded into buckets a thousand at a time and at every scrape (which runs on the event loop
that observes: telemetry.histogram's DeferredHistogram), with nothing formatted until then. Routes are
labelled by their template (`/v1/stores/{store}/stock/{sku}`), methods outside HTTP's usual ones as
OTHER, so the number of series stays bounded whatever clients send."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.service import WriterPort
from ledger.telemetry.histogram import FOLD_AT, SECONDS_BOUNDS, DeferredHistogram, Snapshot, cumulative
from ledger.writer.stats import (
    BATCH_EVENTS_BOUNDS,
    COMMIT_SECONDS_BOUNDS,
    REJECT_REASONS,
    WriterStatsSnapshot,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "unmatched"  # no route of the service has this path


class HttpMetrics(Collector):
    """`ledger_http_requests_total` and `ledger_http_request_duration_seconds`."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, int], DeferredHistogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self.series.get((route, method, status))
        if series is None:
            key = (route, method if method in METHODS else OTHER_METHOD, status)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = DeferredHistogram(SECONDS_BOUNDS)
        # DeferredHistogram.observe, written out: this runs for every request, and a call is a good
        # part of it.
        pending = series.pending
        pending.append(seconds)
        if len(pending) >= FOLD_AT:
            series.fold()

    def collect(self) -> Iterator[Metric]:
        labels = ["route", "method", "status"]
        requests = CounterMetricFamily("ledger_http_requests", "HTTP requests answered", labels=labels)
        durations = HistogramMetricFamily(
            "ledger_http_request_duration_seconds",
            "from a request's arrival to its answer's last byte handed to the server",
            labels=labels,
        )
        for (route, method, status), series in sorted(self.series.items()):
            snapshot = series.snapshot()
            values = [route, method, str(status)]
            requests.add_metric(values, sum(snapshot[0]))
            durations.add_metric(values, cumulative(series.bounds, snapshot), snapshot[1])
        yield requests
        yield durations


class WriterMetrics(Collector):
    """The writer's own figures: read from the writer thread, or the last the writer process sent
    (every second; none until the first arrives)."""

    def __init__(self, writer: WriterPort) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        stats: WriterStatsSnapshot | None = self.writer.stats
        if stats is None:
            return
        yield _histogram(
            "ledger_writer_batch_events",
            "events per batch the writer committed",
            BATCH_EVENTS_BOUNDS,
            stats.batch_events,
        )
        yield _histogram(
            "ledger_writer_commit_duration_seconds",
            "from a batch taken by the writer to its callers answered: decided, recorded, committed",
            COMMIT_SECONDS_BOUNDS,
            stats.commit_seconds,
        )
        yield GaugeMetricFamily(
            "ledger_writer_queued_requests",
            "write requests waiting for the writer's next batch",
            value=stats.queued_requests,
        )
        rejects = CounterMetricFamily(
            "ledger_writer_rejects",
            "write requests the writer turned away: queue_full (never tried), unavailable (the "
            "database could not record them; safe to re-send), refused (failed for good)",
            labels=["reason"],
        )
        for reason, count in zip(REJECT_REASONS, stats.rejects, strict=True):
            rejects.add_metric([reason], count)
        yield rejects
        one_statement = CounterMetricFamily(
            "ledger_writer_one_statement_batches",
            "PostgreSQL: batches decided from the writer's memory and sent as one statement: committed, "
            "or lost (another writer wrote first, or an id was taken: rolled back whole and recorded "
            "the ordinary way under the lock)",
            labels=["result"],
        )
        for result, count in zip(("committed", "lost"), stats.one_statement, strict=True):
            one_statement.add_metric([result], count)
        yield one_statement
        yield CounterMetricFamily(
            "ledger_oversold_lines",
            "lines recorded past what their store held: a shipment or sale beyond the available units, "
            "recorded all the same and flagged oversold in the history",
            value=stats.oversold_lines,
        )


def _histogram(name: str, documentation: str, bounds: tuple[float, ...], snapshot: Snapshot) -> Metric:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], cumulative(bounds, snapshot), snapshot[1])
    return family


class BuildInfo(Collector):
    def __init__(self, version: str) -> None:
        self.version = version

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "ledger_build_info", "always 1: the service's version and Python's", labels=["version", "python"]
        )
        info.add_metric([self.version, platform.python_version()], 1)
        yield info
