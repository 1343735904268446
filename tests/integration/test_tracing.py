"""Tracing (issue #15, LEDGER_TRACING): an HTTP write is a server span naming its request id; the
writer's batch is a span of its own, linked to the spans of the requests it served (one batch,
many requests: links, not a parent), naming their request ids, with the batch's database calls
as its children. With the writer in its own process (the trace context crosses its socket) and as
a thread. Tracing off: nothing of it is imported, and a write's frame is what it was. On both
databases."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
from opentelemetry import trace
from support import events as ev
from support.server import free_port
from support.tracing import child_of, exporter_provider, linked_to, named, traced_into_memory

from ledger.api.app import create_asgi
from ledger.bootstrap import build_ledger, build_writer, intake_limits
from ledger.config import Settings
from ledger.writer.server import WriterServer

STOP_WAIT_S = 15.0
OUTBOX_BYTES_MAX = 1 << 20
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
RESERVATIONS_ROUTE = "POST /v1/stores/{store}/reservations"


def _http_writes(
    settings: Settings, requests: list[tuple[str, str, dict[str, object], dict[str, str]]]
) -> list[int]:
    ledger = build_ledger(settings)
    ledger.start()
    app = create_asgi(ledger, settings, intake_limits(settings))

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            statuses = []
            for method, path, body, headers in requests:
                response = await client.request(method, path, json=body, headers=headers)
                statuses.append(response.status_code)
            return statuses

    try:
        return asyncio.run(send_all())
    finally:
        ledger.stop()


def test_an_http_write_and_the_writer_process_batch_that_recorded_it_are_linked_spans(
    database_url: str, tmp_path: Path
) -> None:
    with traced_into_memory() as exporter:
        writer = build_writer(Settings(database_url=database_url))
        path = str(tmp_path / "writer.sock")
        server = WriterServer(writer, path, writer.limits.batch_events_max, OUTBOX_BYTES_MAX, None)
        server.listen()
        thread = threading.Thread(target=server.run, name="test-writer-server", daemon=True)
        thread.start()
        try:
            store = "store-traced"
            statuses = _http_writes(
                Settings(database_url=database_url, writer_socket=path),
                [
                    (
                        "POST",
                        "/v1/events",
                        ev.envelope("stock.receipt", store, {"lines": ev.lines(("SKU-1", 5))}),
                        {"x-request-id": "trace-receipt-1"},
                    ),
                    (
                        "POST",
                        f"/v1/stores/{store}/reservations",
                        {"reservation_id": "r-traced", "lines": [{"sku": "SKU-1", "qty": 2}]},
                        {
                            "x-request-id": "trace-reserve-1",
                            "traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01",
                        },
                    ),
                ],
            )
        finally:
            server.stop_soon()
            thread.join(STOP_WAIT_S)
            server.close()
            writer.recorder.close()
        spans = exporter.get_finished_spans()
    assert statuses == [200, 201], statuses
    [http] = [
        s
        for s in named(spans, RESERVATIONS_ROUTE)
        if s.attributes.get("ledger.request_id") == "trace-reserve-1"
    ]
    assert http.kind == trace.SpanKind.SERVER
    assert http.attributes["http.response.status_code"] == 201
    assert http.context.trace_id == int(CALLER_TRACE_ID, 16)  # the caller's trace goes on
    assert http.parent is not None and http.parent.span_id == int(CALLER_SPAN_ID, 16)
    [batch] = [s for s in named(spans, "writer batch") if linked_to(s, http)]
    assert "trace-reserve-1" in batch.attributes["ledger.request_ids"]
    assert [
        link.attributes["ledger.request_id"]
        for link in batch.links
        if link.context.span_id == http.context.span_id
    ] == ["trace-reserve-1"]
    assert batch.context.trace_id != http.context.trace_id  # a root of its own: links, not a parent
    database_calls = [s for s in spans if s.name.startswith("db write") and child_of(s, batch)]
    assert database_calls, [(s.name, s.parent) for s in spans]


def test_a_write_to_the_writer_thread_is_linked_from_its_batch_span(database_url: str) -> None:
    with traced_into_memory() as exporter:
        ledger = build_ledger(Settings(database_url=database_url))
        ledger.start()
        tracer = trace.get_tracer("test", tracer_provider=exporter_provider(exporter))
        try:
            with tracer.start_as_current_span("caller") as caller:
                ledger.submit_and_wait(
                    [ev.stock_event("thread-1", "stock.receipt", "store-t", [("SKU-1", 1)])]
                )
        finally:
            ledger.stop()
        spans = exporter.get_finished_spans()
    [caller_span] = named(spans, "caller")
    assert caller_span.context.span_id == caller.get_span_context().span_id
    [batch] = [s for s in named(spans, "writer batch") if linked_to(s, caller_span)]
    assert [s.name for s in spans if child_of(s, batch)], "the batch's database calls are its children"


NOTHING_IMPORTED = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from ledger.api.app import create_asgi
    from ledger.bootstrap import build_ledger, intake_limits
    from ledger.config import Settings
    from ledger.telemetry import tracing
    from ledger.writer.wire import WriteRequest, encode

    settings = Settings(database_url=sys.argv[1])
    ledger = build_ledger(settings)
    ledger.start()
    app = create_asgi(ledger, settings, intake_limits(settings))

    async def write() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = {"reservation_id": "r-off", "lines": [{"sku": "SKU-1", "qty": 1}]}
            response = await client.post("/v1/stores/store-off/reservations", json=body)
            return response.status_code

    status = asyncio.run(write())
    ledger.stop()
    assert status == 409, status  # nothing received: refused, after a decision by the writer
    assert tracing.active is None
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "ledger.telemetry.spans")))
    assert not loaded, loaded
    assert encode(WriteRequest(1, [], "req")) == encode(WriteRequest(1, [], "req", None))
    print("nothing of tracing was imported")
    """
)


def test_with_tracing_off_nothing_of_it_is_imported_and_a_write_makes_no_span(database_url: str) -> None:
    """In a process of its own: this one's tests import the SDK. A span is made only by
    ledger/telemetry/spans.py (or by OpenTelemetry's SDK): neither is ever imported."""
    run = subprocess.run(
        [sys.executable, "-c", NOTHING_IMPORTED, database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LEDGER_TRACING": "off"},
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nothing of tracing was imported" in run.stdout


WITHOUT_THE_SDK = textwrap.dedent(
    """
    import importlib.abc, sys

    class WithoutTheSdk(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith("opentelemetry.sdk"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, WithoutTheSdk())
    from ledger.cli import main

    sys.exit(main(["serve", "--port", sys.argv[1]]))
    """
)


def test_tracing_asked_for_without_the_extra_is_told_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SDK, str(free_port())],  # a port it could listen on
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "LEDGER_TRACING": "otlp",
            "LEDGER_WRITER_PROCESS": "false",
            "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        },
        check=False,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    [told] = [line for line in run.stderr.splitlines() if line.startswith("ledger serve: ")]
    assert "LEDGER_TRACING=otlp needs OpenTelemetry's SDK" in told
    assert "pip install 'stock-ledger[tracing]'" in told
    assert "Traceback" not in run.stderr
