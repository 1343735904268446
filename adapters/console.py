"""The adapters' state for the ledger's console at /ui: the `stock_ledger.console` entry point.

The same rows as `ledger adapters status` and /metrics (adapters/status.py), masked there. A
database where no adapter ever ran has no adapter tables yet: then there is nothing to show, and
the console's read creates nothing.
"""

from __future__ import annotations

from typing import Any

from adapters.db import is_sqlite, transaction
from adapters.status import read_status
from ledger.api.console.adapter_states import AdapterState


def _has_adapter_tables(recorder: Any) -> bool:
    sql = (
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'adapter_positions'"
        if is_sqlite(recorder)
        else "SELECT COUNT(*) AS n FROM pg_tables WHERE tablename = 'adapter_positions'"
    )
    with transaction(recorder) as tx:
        row = tx.fetchone(sql)
    return row is not None and int(row["n"]) > 0


def adapter_states(recorder: Any) -> list[AdapterState]:
    if not _has_adapter_tables(recorder):
        return []
    return [
        AdapterState(
            adapter=status.adapter,
            position=status.position,
            lag_events=status.lag_events,
            parked_now=status.parked_now,
            outbox_pending=status.outbox_pending,
            failures_total=status.failures_total,
            last_error=status.last_error,
            last_push_at=status.last_push_at,
        )
        for status in read_status(recorder)
    ]
