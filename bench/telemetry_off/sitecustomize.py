"""The off side of bench/telemetry_bench.py: this tree with its outermost HTTP layer (request ids,
HTTP metrics, the access log: ledger/api/telemetry.py) replaced by a pass-through, so that the two
sides differ in that layer and the log format alone. Python imports `sitecustomize` at start from
the first directory on its path that has one; the bench puts this directory first on the off side's
PYTHONPATH only. Never on a production path."""

from __future__ import annotations

from typing import Any


class _PassThrough:
    def __init__(self, app: Any, *_: Any, **__: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _without_request_telemetry() -> None:
    import ledger.api.app

    ledger.api.app.RequestTelemetry = _PassThrough  # type: ignore[assignment,misc]


_without_request_telemetry()
