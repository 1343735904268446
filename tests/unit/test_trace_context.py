"""The trace context a request brings (its W3C traceparent header) is continued when sound and
ignored when not: a malformed header starts a new trace, never an error."""

from __future__ import annotations

import pytest
from support.tracing import traced_into_memory

from ledger.telemetry import tracing

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _scope(traceparent: bytes | None) -> dict[str, object]:
    headers = [(b"host", b"localhost")] + ([(b"traceparent", traceparent)] if traceparent else [])
    return {"type": "http", "method": "GET", "path": "/v1/stores/s/stock/k", "headers": headers}


@pytest.mark.parametrize(
    "offered", [b"not-a-traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", b"\xff"]
)
def test_a_malformed_traceparent_starts_a_new_trace(offered: bytes) -> None:
    with traced_into_memory() as exporter:
        assert tracing.active is not None
        tracing.active.http_started(_scope(offered), "req-1").finished("GET", "/r", 200)
        [span] = exporter.get_finished_spans()
    assert span.parent is None
    assert span.attributes is not None and span.attributes["ledger.request_id"] == "req-1"


def test_a_sound_traceparent_is_continued_and_the_span_is_current_until_finished() -> None:
    with traced_into_memory() as exporter:
        active = tracing.active
        assert active is not None
        assert active.current_trace_parent() is None
        http = active.http_started(_scope(CALLER.encode()), "req-2")
        carried = active.current_trace_parent()
        http.finished("GET", "/v1/stores/{store}/stock/{sku}", 404)
        assert active.current_trace_parent() is None
        [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == CALLER.split("-")[1]
    assert f"{span.parent.span_id:016x}" == CALLER.split("-")[2]
    assert carried == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    assert span.name == "GET /v1/stores/{store}/stock/{sku}"
