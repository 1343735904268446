"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from fastapi import APIRouter, Depends
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ledger.access.scopes import Role
from ledger.api.deps import REQUIRES, LedgerDep
from ledger.api.http_metrics import BuildInfo, HttpMetrics, WriterMetrics
from ledger.api.openapi import package_version
from ledger.api.problems import Problem
from ledger.api.schemas import problem_responses
from ledger.service import Ledger
from ledger.telemetry import METRICS_MEDIA_TYPE

router = APIRouter(tags=["operations"])


class IntakeStatus(Protocol):
    """What readiness needs of the Kafka intake (ledger/kafka's ConsumerHandle)."""

    @property
    def ready(self) -> bool: ...
    @property
    def lag(self) -> int | None: ...


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        writer = self.ledger.writer
        outcomes = CounterMetricFamily(
            "ledger_events", "events this process submitted, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self.ledger.outcome_counts.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield CounterMetricFamily(
            "ledger_writer_commits", "batches the writer committed, as seen here", value=writer.commits_seen
        )
        yield GaugeMetricFamily(
            "ledger_position", "the log position this instance has applied", value=self.ledger.cache.head
        )
        yield GaugeMetricFamily(
            "ledger_writer_alive", "1 while the writer thread runs", value=1 if writer.alive else 0
        )
        yield GaugeMetricFamily(
            "ledger_writes_failing",
            "1 while the last write (or readiness probe) here could not be recorded",
            value=0 if self.ledger.write_failure is None else 1,
        )
        yield GaugeMetricFamily(
            "ledger_cached_levels", "levels held in memory", value=len(self.ledger.cache.levels)
        )


def metrics_registry(ledger: Ledger, http: HttpMetrics) -> CollectorRegistry:
    """This process's metrics: the ledger's, the HTTP edge's, the writer's (ledger/api/http_metrics.py),
    the build, and prometheus_client's process (CPU, memory, open files) and Python (GC) ones."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger))
    registry.register(http)
    registry.register(WriterMetrics(ledger.writer))
    registry.register(BuildInfo(package_version()))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers, writes are recorded, Kafka is in",
    responses=problem_responses(503),
)
async def readyz(request: Request, ledger: LedgerDep) -> dict[str, object]:
    kafka: IntakeStatus | None = request.app.state.kafka
    problem = await _not_ready_because(ledger, kafka)
    if problem is not None:
        raise Problem(503, "not-ready", "Not ready", problem)
    body: dict[str, object] = {"status": "ready", "position": ledger.cache.head}
    if kafka is not None:
        body["kafka_lag"] = kafka.lag
    return body


async def _not_ready_because(ledger: Ledger, kafka: IntakeStatus | None) -> str | None:
    """The first reason this instance should not be sent traffic now, or None."""
    unreadable = await ledger.database_answers()
    if unreadable is not None:
        return unreadable
    failure = await ledger.writes_unready()
    if failure is not None:
        return f"writes cannot be recorded: {failure}"
    if kafka is not None and not kafka.ready:
        return "the Kafka intake is not in its group or cannot publish"
    return None


@router.get(
    "/metrics",
    summary="Prometheus metrics (open unless LEDGER_METRICS_AUTH=required)",
    dependencies=[Depends(REQUIRES[Role.READER])],
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=METRICS_MEDIA_TYPE)
