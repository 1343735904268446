"""Tracing as `ledger serve` runs it (issue #15): LEDGER_TRACING=console in the HTTP worker and in
the writer process (each turns it on from the environment), a reservation's server span naming its
request id, and the writer process's batch span linked to it across the socket. On both databases.

The console exporter writes each span as an indented JSON object on stdout, which the harness puts
in the server's log beside its log lines."""

from __future__ import annotations

import json
import time
from typing import Any

from support.api import reserve
from support.events import envelope, lines
from support.server import LedgerServer

ENV = {"LEDGER_TRACING": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}  # export every 0.1 s, not 5 s
SPAN_START = '{\n    "name": '
EXPORTED_DEADLINE_S = 30.0
POLL_S = 0.2


def _spans(server: LedgerServer) -> list[dict[str, Any]]:
    text = server.log_path.read_text(errors="replace")
    decoder = json.JSONDecoder()
    spans = []
    start = text.find(SPAN_START)
    while start >= 0:
        span, end = decoder.raw_decode(text, start)
        spans.append(span)
        start = text.find(SPAN_START, end)
    return spans


def _linked_batch(spans: list[dict[str, Any]], http_span_id: str) -> dict[str, Any] | None:
    for span in spans:
        if span["name"] == "writer batch" and any(
            link["context"]["span_id"] == http_span_id for link in span.get("links", [])
        ):
            return span
    return None


def test_the_writer_process_batch_span_is_linked_to_the_request_it_served(
    serve: Any, database_url: str
) -> None:
    server: LedgerServer = serve(database_url, ENV)
    store = "store-traced"
    with server.client() as client:
        receipt = envelope("stock.receipt", store, {"lines": lines(("SKU-1", 4))})
        assert client.post("/v1/events", json=receipt).status_code == 200
        client.headers["x-request-id"] = "traced-reservation-1"
        assert reserve(client, store, "r-traced", ("SKU-1", 1)).status_code == 201
    deadline = time.monotonic() + EXPORTED_DEADLINE_S
    while True:
        spans = _spans(server)
        https = [s for s in spans if s["attributes"].get("ledger.request_id") == "traced-reservation-1"]
        batch = _linked_batch(spans, https[0]["context"]["span_id"]) if https else None
        if batch is not None or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert batch is not None, server.log_tail()
    [http] = https
    assert http["name"] == "POST /v1/stores/{store}/reservations"
    assert http["kind"] == "SpanKind.SERVER"
    assert http["resource"]["attributes"]["ledger.process"] == "http"
    assert batch["resource"]["attributes"]["ledger.process"] == "writer"
    assert "traced-reservation-1" in batch["attributes"]["ledger.request_ids"]
    assert any(s["parent_id"] == batch["context"]["span_id"] and s["name"].startswith("db ") for s in spans)
