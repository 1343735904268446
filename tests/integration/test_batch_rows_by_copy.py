"""A one-statement batch's rows reach PostgreSQL as JSON or, in a batch of many rows, by COPY into
the session's staging tables (ledger/storage/one_statement.py). Both ways must write exactly the
same rows: the same batches, sent each way to a database of its own, leave every table equal,
byte for byte. And a staged batch that fails leaves nothing behind for the next one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from support import db
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_writer
from ledger.config import Settings
from ledger.domain.model import EventType, Line, Outcome, Policy, StockEvent
from ledger.storage import recorders
from ledger.storage.one_statement import BatchRows
from ledger.storage.recorders import PostgresLedgerRecorder, open_recorder
from ledger.writer.submission import Submission

SOURCE = "tests/by-copy"
SHOP, WAREHOUSE = "shop-1", "warehouse-1"
NEVER_BY_COPY = 1_000_000


def _event(
    event_id: str, event_type: str, store: str, pairs: list[tuple[str, int]], **data: Any
) -> StockEvent:
    return ev.stock_event(event_id, event_type, store, pairs, source=SOURCE, **data)


def _coded(sku: str, qty: int, *codes: str) -> list[dict[str, Any]]:
    return [{"sku": sku, "qty": qty, "codes": list(codes)}]


def _policy(event_id: str, store: str, sku: str, safety_stock: int) -> StockEvent:
    return StockEvent(
        event_id=event_id,
        source=SOURCE,
        type=EventType.POLICY_CHANGED,
        time=ev.stock_event("t", "stock.receipt", store, [("X", 1)]).time,
        store_id=store,
        lines=(Line(sku, 0),),
        policy=Policy(safety_stock_units=safety_stock),
    )


def batches() -> list[list[StockEvent]]:
    """Batches that write every table of a one-statement batch: history (with marking codes),
    levels, placed and changed reservations and their lines, event keys, policies; a refused
    event, a transfer, a count."""
    return [
        [
            _event("r1", "stock.receipt", SHOP, [("A", 10), ("B", 4)]),
            _event("r2", "stock.receipt", WAREHOUSE, [("A", 50)]),
        ],
        [
            _event("res1", "stock.reservation", SHOP, [("A", 3), ("B", 1)], reservation_id="R-1"),
            _event("res2", "stock.reservation", SHOP, [("B", 9)], reservation_id="R-2"),  # refused
            _policy("p1", SHOP, "A", 2),
        ],
        [
            _event(
                "ship1",
                "stock.shipment",
                SHOP,
                [],
                lines=_coded("A", 2, "CIS-1", "CIS-2"),
                reservation_id="R-1",
            ),
            _event("sale1", "stock.sale", SHOP, [], lines=_coded("B", 1, "CIS-3")),
            _event("t1", "stock.transfer", WAREHOUSE, [("A", 5)], to_store=SHOP, transfer_id="T-1"),
        ],
        [
            _event("rel1", "stock.reservation_release", SHOP, [("A", 1)], reservation_id="R-1"),
            _event("c1", "stock.count", SHOP, [("A", 7), ("C", 1)]),
            _event("r1", "stock.receipt", SHOP, [("A", 10), ("B", 4)]),  # a duplicate
        ],
    ]


def _settings(database_url: str, copy_rows_min: int, pool_size: int = 8) -> Settings:
    return Settings(
        database_url=database_url,
        writer_optimistic=True,
        db_copy_batch_rows_min=copy_rows_min,
        db_pool_size=pool_size,
    )


def _tables(database_url: str) -> dict[str, Any]:
    tables: dict[str, Any] = db.dump_projections(database_url)
    tables["ledger_history_codes"] = db.query(
        database_url, "SELECT * FROM ledger_history_codes ORDER BY store_id, code, position, line_no"
    )
    tables["ledger_events"] = db.query(database_url, "SELECT * FROM ledger_events ORDER BY notification_id")
    return tables


def test_the_same_batches_by_copy_and_as_json_write_the_same_rows(
    postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batches as the writer sends them (as JSON), kept to be sent again by COPY.
    sent: list[tuple[BatchRows, int, int]] = []
    write_collected = PostgresLedgerRecorder.write_collected

    def kept(self: PostgresLedgerRecorder, collected: BatchRows, head: int, last_position: int) -> None:
        assert not collected.by_copy
        sent.append((collected, head, last_position))
        write_collected(self, collected, head, last_position)

    monkeypatch.setattr(recorders.PostgresLedgerRecorder, "write_collected", kept)
    as_json = postgres.create_database("rows_as_json")
    writer = build_writer(_settings(as_json, NEVER_BY_COPY))
    outcomes: list[Outcome] = []
    try:
        for batch in batches():
            answered: list[Any] = []
            writer.process([Submission(batch, answered.append)])
            [results] = answered
            outcomes += [result.outcome for result in results]
    finally:
        writer.recorder.close()
    monkeypatch.undo()
    assert Outcome.REJECTED in outcomes and Outcome.DUPLICATE in outcomes
    # Every batch went as one statement, each on top of the one before.
    assert [head for _, head, _ in sent] == [0, *[last for _, _, last in sent[:-1]]]
    assert len(sent) == len(batches())

    by_copy = postgres.create_database("rows_by_copy")
    recorder = open_recorder(by_copy, 2, 30, copy_rows_min=1)
    try:
        for collected, head, last_position in sent:
            staged = recorder.batch_rows(collected.rows)
            assert staged.by_copy
            recorder.write_collected(staged, head, last_position)
    finally:
        recorder.close()
    json_tables, copy_tables = _tables(as_json), _tables(by_copy)
    assert all(json_tables[name] for name in json_tables), "every table has rows"
    assert copy_tables == json_tables


def test_a_staged_batch_that_failed_leaves_nothing_for_the_next(postgres: EmbeddedPostgres) -> None:
    database_url = postgres.create_database("staged_failure")
    # Two connections: the batches stage in the same sessions, on the tables the ones before used.
    writer = build_writer(_settings(database_url, 1, pool_size=2))
    recorder: Any = writer.recorder
    try:
        answered: list[Any] = []
        writer.process([Submission([_event("r1", "stock.receipt", SHOP, [("A", 10)])], answered.append)])
        assert answered[0][0].outcome is Outcome.ACCEPTED
        for sale, fails_first in (("s1", False), ("s2", True), ("s3", False)):
            statement = writer.decide_from_memory(
                [_event(sale, "stock.sale", SHOP, [("A", 3)])], "2026-01-01T00:00:00Z"
            )
            assert statement is not None and statement.collected.by_copy
            if fails_first:  # staged, then refused by the head check: the log is not at that head
                with pytest.raises(psycopg.errors.SerializationFailure):
                    recorder.send_collected(
                        statement.collected, statement.head + 1, statement.last_position + 1
                    ).wait()
                with recorder.datastore.get_connection() as conn:  # idle again
                    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
            # Sent right, each sale records its own rows once: none of an earlier batch's are left.
            recorder.send_collected(statement.collected, statement.head, statement.last_position).wait()
            writer.cache.install(statement.committed)
    finally:
        recorder.close()
    assert db.query(database_url, "SELECT event_id FROM ledger_history ORDER BY position") == [
        {"event_id": event_id} for event_id in ("r1", "s1", "s2", "s3")
    ]
    assert db.scalar(database_url, "SELECT COUNT(*) FROM ledger_event_keys") == 4
    assert db.scalar(database_url, "SELECT on_hand FROM ledger_levels WHERE sku = 'A'") == 1
