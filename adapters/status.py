"""What each adapter has done, read from the database: for `ledger adapters status` and /metrics.

Both read the same rows, so the status command and the Prometheus text always agree, whichever
process runs the workers. Both are masked (adapters/masking.py): the rows are masked when written,
and masked again when shown, for rows an earlier version wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.db import log_head, transaction
from adapters.masking import mask


@dataclass(frozen=True, slots=True)
class AdapterStatus:
    adapter: str
    position: int
    head: int
    pushed_total: int
    failures_total: int
    parked_total: int
    parked_now: int
    outbox_pending: int
    alerts_total: int
    last_error: str | None
    last_push_at: str | None

    @property
    def lag_events(self) -> int:
        return max(0, self.head - self.position)


def read_status(recorder: Any) -> list[AdapterStatus]:
    head = log_head(recorder)
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT * FROM adapter_positions ORDER BY adapter")
        parked = _counts(tx, "SELECT adapter, COUNT(*) AS n FROM adapter_parked GROUP BY adapter")
        outbox = _counts(tx, "SELECT adapter, COUNT(*) AS n FROM adapter_outbox GROUP BY adapter")
        alerts = _counts(
            tx, "SELECT adapter, COUNT(*) AS n FROM adapter_journal WHERE kind = 'alert' GROUP BY adapter"
        )
    names = sorted({row["adapter"] for row in rows} | set(alerts))
    by_name = {row["adapter"]: row for row in rows}
    statuses = []
    for name in names:
        row = by_name.get(name)
        statuses.append(
            AdapterStatus(
                adapter=name,
                position=int(row["position"]) if row else 0,
                head=head,
                pushed_total=int(row["pushed_total"]) if row else 0,
                failures_total=int(row["failures_total"]) if row else 0,
                parked_total=int(row["parked_total"]) if row else 0,
                parked_now=parked.get(name, 0),
                outbox_pending=outbox.get(name, 0),
                alerts_total=alerts.get(name, 0),
                last_error=mask(row["last_error"]) if row and row["last_error"] else None,
                last_push_at=row["last_push_at"] if row else None,
            )
        )
    return statuses


def _counts(tx: Any, sql: str) -> dict[str, int]:
    return {row["adapter"]: int(row["n"]) for row in tx.fetchall(sql)}


class AdapterCollector(Collector):
    def __init__(self, read: Callable[[], list[AdapterStatus]]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        statuses = self.read()
        gauges = {
            "position": GaugeMetricFamily(
                "ledger_adapter_position", "last log position pushed", labels=["adapter"]
            ),
            "lag": GaugeMetricFamily(
                "ledger_adapter_lag_events", "log entries not yet pushed", labels=["adapter"]
            ),
            "parked": GaugeMetricFamily(
                "ledger_adapter_parked_items", "items parked now", labels=["adapter"]
            ),
            "outbox": GaugeMetricFamily(
                "ledger_adapter_outbox_items", "outbox items waiting", labels=["adapter"]
            ),
        }
        counters = {
            "pushed": CounterMetricFamily("ledger_adapter_pushed_items", "items pushed", labels=["adapter"]),
            "failures": CounterMetricFamily(
                "ledger_adapter_failures", "failed requests and refused items", labels=["adapter"]
            ),
            "parked_total": CounterMetricFamily(
                "ledger_adapter_parked", "items ever parked", labels=["adapter"]
            ),
            "alerts": CounterMetricFamily(
                "ledger_adapter_alerts", "alerts raised (e.g. WMS picking errors)", labels=["adapter"]
            ),
        }
        for s in statuses:
            gauges["position"].add_metric([s.adapter], s.position)
            gauges["lag"].add_metric([s.adapter], s.lag_events)
            gauges["parked"].add_metric([s.adapter], s.parked_now)
            gauges["outbox"].add_metric([s.adapter], s.outbox_pending)
            counters["pushed"].add_metric([s.adapter], s.pushed_total)
            counters["failures"].add_metric([s.adapter], s.failures_total)
            counters["parked_total"].add_metric([s.adapter], s.parked_total)
            counters["alerts"].add_metric([s.adapter], s.alerts_total)
        yield from gauges.values()
        yield from counters.values()


def metrics_text(recorder: Any) -> bytes:
    return _metrics_text(lambda: read_status(recorder))


def metrics_text_of(statuses: list[AdapterStatus]) -> bytes:
    """The Prometheus text of statuses already read (none: a ledger no adapter has run on)."""
    return _metrics_text(lambda: statuses)


def _metrics_text(read: Callable[[], list[AdapterStatus]]) -> bytes:
    registry = CollectorRegistry()
    registry.register(AdapterCollector(read))
    return mask(generate_latest(registry).decode()).encode()


def status_table(statuses: list[AdapterStatus]) -> str:
    header = (
        "adapter",
        "position",
        "lag",
        "pushed",
        "failures",
        "parked",
        "outbox",
        "alerts",
        "last push",
        "last error",
    )
    rows = [header] + [
        (
            s.adapter,
            str(s.position),
            str(s.lag_events),
            str(s.pushed_total),
            str(s.failures_total),
            str(s.parked_now),
            str(s.outbox_pending),
            str(s.alerts_total),
            s.last_push_at or "-",
            (s.last_error or "-")[:60],
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
