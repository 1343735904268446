"""The import's own writer on PostgreSQL decides each batch while the one before is recorded, even
when every batch brings keys memory has never held (a new SKU at a store, the shipment of a
reservation that was refused), and records exactly what the ordinary way records."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from support import db
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_writer, intake_limits
from ledger.config import Settings
from ledger.importer.pipeline import PipelinedWriter
from ledger.importer.reading import FileProgress, ValidLine, read_lines
from ledger.writer import in_flight

BATCH_EVENTS = 4
BATCHES = 12


def a_history() -> bytes:
    """Each batch: a receipt of a SKU never seen, the sale of it, a refused reservation of it, and
    that reservation's shipment (recorded plain, flagged unknown)."""
    events = []
    for n in range(BATCHES):
        sku = f"NEW-{n}"
        events += [
            ev.receipt("s-1", (sku, 5)),
            ev.sale("s-1", (sku, 1)),
            ev.reservation("s-1", f"R-{n}", (sku, 99)),
            ev.shipment("s-1", (sku, 1), reservation_id=f"R-{n}"),
        ]
    lines = [{**event, "id": f"h-{number}", "source": "1c/overlap"} for number, event in enumerate(events)]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def run_import(database_url: str, text: bytes, pipelined: bool) -> dict[str, Any]:
    """The file's batches through the import's writer, each call told the next two batches, as
    the importer tells it when they are read already (or the ordinary way: no one-statement
    batches at all)."""
    settings = Settings(database_url=database_url, writer_optimistic=pipelined)
    lines = list(read_lines(io.BytesIO(text), intake_limits(settings), 100_000, FileProgress()))
    events = [line.event for line in lines if isinstance(line, ValidLine)]
    assert len(events) == len(lines)
    batches = [events[i : i + BATCH_EVENTS] for i in range(0, len(events), BATCH_EVENTS)]
    writer = build_writer(settings)
    own = PipelinedWriter(writer)
    outcomes: list[str] = []
    try:
        for number, batch in enumerate(batches):
            upcoming = batches[number + 1] if number + 1 < len(batches) else None
            later = batches[number + 2] if number + 2 < len(batches) else None
            outcomes += [result.outcome.value for result in own.submit_and_wait(batch, upcoming, later)]
    finally:
        own.stop()
        writer.recorder.close()
    rows = db.query(
        database_url,
        "SELECT event_id, type, outcome, reason, sku, on_hand, reserved, unknown_reservation "
        "FROM ledger_history ORDER BY position, line_no",
    )
    return {"outcomes": outcomes, "rows": rows}


def test_each_batch_is_decided_while_the_one_before_is_in_flight_and_records_the_same(
    postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided_in_flight: list[bool] = []
    prepare = in_flight.prepare

    def counted(writer: Any, batch: Any, *, in_flight: bool = False) -> Any:
        ready = prepare(writer, batch, in_flight=in_flight)
        if in_flight:
            decided_in_flight.append(ready is not None)
        return ready

    monkeypatch.setattr(in_flight, "prepare", counted)
    text = a_history()
    pipelined = run_import(postgres.create_database("overlap"), text, pipelined=True)
    # The second batch is decided while the first is in flight only if the first call read ahead
    # for it; every later one is read ahead for, before the batch before it is sent.
    assert len(decided_in_flight) == BATCHES - 1
    assert all(decided_in_flight[1:]), decided_in_flight

    ordinary = run_import(postgres.create_database("ordinary"), text, pipelined=False)
    assert pipelined == ordinary
    assert pipelined["outcomes"] == ["accepted", "accepted", "rejected", "accepted"] * BATCHES
    shipments = [row for row in pipelined["rows"] if row["type"] == "stock.shipment"]
    assert len(shipments) == BATCHES and all(row["unknown_reservation"] for row in shipments)
