"""The intake figure's second baseline: the consumer an integrator would write by hand, without the ledger.

kafka-python and psycopg on a plain `stock` table (one row per store and SKU, as in the seed's
integrations): each poll is one transaction of conditional UPDATEs, and its offsets are committed after
the transaction. No history, no idempotency (a producer's retry is applied again), no results topic.

- receipt: on_hand += qty
- POS sale: on_hand -= qty (it happened at the till)
- sale: on_hand -= qty WHERE on_hand - reserved >= qty, every line or none
- reservation: reserved += qty WHERE on_hand - reserved >= qty, every line or none, and its lines kept
  in `reservation_line` for the shipment and the release
- shipment: on_hand -= qty, and reserved -= what the reservation still holds of it
- release: reserved -= what the reservation still holds

Run by bench/intake_bench.py; it writes what it did as JSON to --report.
Usage: python bench/handwritten_consumer.py --bootstrap HOST:PORT --topic T --group G --conninfo DSN
       --ends 0:500,1:480,... --report out.json [--poll-records 2000] [--started-file F] [--hold-s S]
(the tables: prepare_table() below, called by the benchmark)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from kafka import KafkaConsumer

DEADLINE_S = 1800.0
POLL_TIMEOUT_MS = 500
FETCH_PARTITION_BYTES_MAX = 4 * 1024 * 1024  # as the ledger's intake (LEDGER_KAFKA_FETCH_PARTITION_BYTES_MAX)
HANDLED_TYPES = (
    "stock.receipt",
    "stock.pos_sale",
    "stock.sale",
    "stock.reservation",
    "stock.shipment",
    "stock.reservation_release",
)

SCHEMA = """
CREATE TABLE stock (
    store text NOT NULL, sku text NOT NULL,
    on_hand bigint NOT NULL DEFAULT 0, reserved bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (store, sku)
);
CREATE TABLE reservation_line (
    store text NOT NULL, reservation_id text NOT NULL, sku text NOT NULL, remaining bigint NOT NULL,
    PRIMARY KEY (store, reservation_id, sku)
);
"""

ADD_ON_HAND = "UPDATE stock SET on_hand = on_hand + %s WHERE store = %s AND sku = %s"
TAKE_ON_HAND = (
    "UPDATE stock SET on_hand = on_hand - %s WHERE store = %s AND sku = %s AND on_hand - reserved >= %s"
)
RESERVE = (
    "UPDATE stock SET reserved = reserved + %s WHERE store = %s AND sku = %s AND on_hand - reserved >= %s"
)
KEEP_LINE = (
    "INSERT INTO reservation_line VALUES (%s, %s, %s, %s) ON CONFLICT (store, reservation_id, sku) "
    "DO UPDATE SET remaining = reservation_line.remaining + excluded.remaining"
)
HELD = (
    "SELECT remaining FROM reservation_line WHERE store = %s AND reservation_id = %s AND sku = %s FOR UPDATE"
)
TAKE_HELD = (
    "UPDATE reservation_line SET remaining = remaining - %s "
    "WHERE store = %s AND reservation_id = %s AND sku = %s"
)
SHIP = "UPDATE stock SET on_hand = on_hand - %s, reserved = reserved - %s WHERE store = %s AND sku = %s"
RELEASE = (
    "UPDATE stock s SET reserved = s.reserved - r.remaining FROM reservation_line r "
    "WHERE r.store = %s AND r.reservation_id = %s AND r.remaining > 0 "
    "AND s.store = r.store AND s.sku = r.sku "
    "RETURNING r.remaining"
)
EMPTY_HELD = "UPDATE reservation_line SET remaining = 0 WHERE store = %s AND reservation_id = %s"
KNOWN = "SELECT 1 FROM reservation_line WHERE store = %s AND reservation_id = %s LIMIT 1"


@dataclass
class Report:
    """What the consumer did; the benchmark checks the table against the deltas."""

    records: int = 0
    applied: int = 0
    refused: int = 0  # a conditional UPDATE found too little available (or an unknown reservation)
    skipped: int = 0  # not an event this consumer can read
    on_hand_delta: int = 0
    reserved_delta: int = 0
    statements: int = 0
    polls: int = 0
    first_polled_at: float = 0.0
    last_committed_at: float = 0.0
    applied_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return self.last_committed_at - self.first_polled_at


class Refused(Exception):
    """A conditional UPDATE changed no row: the event is rolled back to its savepoint."""


class Applier:
    """Applies one event in the open transaction; counts its effect only once it has stuck."""

    def __init__(self, conn: psycopg.Connection[Any], report: Report) -> None:
        self.conn = conn
        self.report = report
        self.on_hand = 0
        self.reserved = 0

    def run(self, sql: str, params: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        self.report.statements += 1
        return self.conn.execute(sql, params)  # type: ignore[arg-type]

    def must(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.run(sql, params).rowcount != 1:
            raise Refused

    def apply(self, event: dict[str, Any]) -> None:
        kind, store, data = event["type"], event["subject"], event["data"]
        lines = [(line["sku"], int(line["qty"])) for line in data.get("lines", [])]
        self.on_hand = self.reserved = 0
        if kind in ("stock.sale", "stock.reservation") and len(lines) > 1:
            try:
                with self.conn.transaction():  # a savepoint: every line or none
                    self._apply(kind, store, data, lines)
            except Refused:
                self.report.refused += 1
                return
        else:
            try:
                self._apply(kind, store, data, lines)
            except Refused:  # one conditional line that changed nothing: nothing to undo
                self.report.refused += 1
                return
        self.report.applied += 1
        self.report.applied_by_type[kind] = self.report.applied_by_type.get(kind, 0) + 1
        self.report.on_hand_delta += self.on_hand
        self.report.reserved_delta += self.reserved

    def _apply(self, kind: str, store: str, data: dict[str, Any], lines: list[tuple[str, int]]) -> None:
        if kind == "stock.receipt":
            for sku, qty in lines:
                self.must(ADD_ON_HAND, (qty, store, sku))
                self.on_hand += qty
        elif kind == "stock.pos_sale":
            for sku, qty in lines:
                self.must(ADD_ON_HAND, (-qty, store, sku))
                self.on_hand -= qty
        elif kind == "stock.sale":
            for sku, qty in lines:
                self.must(TAKE_ON_HAND, (qty, store, sku, qty))
                self.on_hand -= qty
        elif kind == "stock.reservation":
            for sku, qty in lines:
                self.must(RESERVE, (qty, store, sku, qty))
                self.run(KEEP_LINE, (store, data["reservation_id"], sku, qty))
                self.reserved += qty
        elif kind == "stock.shipment":
            self._ship(store, data.get("reservation_id"), lines)
        elif kind == "stock.reservation_release":
            self._release(store, data["reservation_id"])
        else:
            raise ValueError(f"no UPDATE for {kind}")

    def _ship(self, store: str, reservation_id: str | None, lines: list[tuple[str, int]]) -> None:
        for sku, qty in lines:
            taken = 0
            if reservation_id is not None:
                row = self.run(HELD, (store, reservation_id, sku)).fetchone()
                taken = min(qty, int(row[0])) if row else 0
                if taken:
                    self.run(TAKE_HELD, (taken, store, reservation_id, sku))
            self.must(SHIP, (qty, taken, store, sku))
            self.on_hand -= qty
            self.reserved -= taken

    def _release(self, store: str, reservation_id: str) -> None:
        released = [int(row[0]) for row in self.run(RELEASE, (store, reservation_id)).fetchall()]
        if not released and self.run(KNOWN, (store, reservation_id)).fetchone() is None:
            raise Refused
        if released:
            self.run(EMPTY_HELD, (store, reservation_id))
        self.reserved -= sum(released)


def consume(args: argparse.Namespace, ends: dict[int, int]) -> Report:
    report = Report()
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=args.poll_records,
        max_partition_fetch_bytes=FETCH_PARTITION_BYTES_MAX,
        key_deserializer=None,
        value_deserializer=None,
    )
    consumed = {partition: 0 for partition in ends}
    deadline = time.monotonic() + DEADLINE_S
    with psycopg.connect(args.conninfo, autocommit=False) as conn:
        applier = Applier(conn, report)
        try:
            while any(consumed[p] < end for p, end in ends.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumed {consumed} of {ends} within {DEADLINE_S:.0f} s")
                polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=args.poll_records)
                if not polled:
                    continue
                if not report.first_polled_at:
                    report.first_polled_at = time.monotonic()
                    if args.started_file:
                        Path(args.started_file).touch()  # the benchmark starts its CPU meter
                for tp, records in polled.items():
                    for record in records:
                        event = readable(record.value)
                        report.records += 1
                        if event is None:
                            report.skipped += 1
                        else:
                            applier.apply(event)
                    consumed[tp.partition] = records[-1].offset + 1
                conn.commit()
                consumer.commit()  # the positions after this poll, once its transaction is durable
                report.polls += 1
            report.last_committed_at = time.monotonic()
            write_report(args.report, report)
            time.sleep(args.hold_s)  # still connected: the benchmark reads every part's CPU time now
        finally:
            consumer.close(autocommit=False)
    return report


def write_report(path: str, report: Report) -> None:
    written = Path(path)
    partial = written.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(report) | {"elapsed_s": report.elapsed_s}, indent=2))
    partial.rename(written)  # whole or not at all: the benchmark waits for this file


def readable(value: bytes | None) -> dict[str, Any] | None:
    """The event in a record, or None for what this consumer cannot use (it skips it)."""
    try:
        event = orjson.loads(value or b"")
        usable = (
            isinstance(event, dict)
            and event.get("type") in HANDLED_TYPES
            and isinstance(event.get("subject"), str)
            and all(int(line["qty"]) > 0 for line in event["data"].get("lines", []))
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return event if usable else None


def prepare_table(conninfo: str, stores: list[str], skus: list[str]) -> None:
    """The tables, and a row of zeros for every store and SKU of the catalogue."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy("COPY stock (store, sku) FROM STDIN") as copy:
            for store in stores:
                for sku in skus:
                    copy.write_row((store, sku))
        conn.execute("VACUUM ANALYZE stock")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--conninfo", required=True, help="libpq connection string of the database")
    parser.add_argument("--ends", required=True, help="partition:end offset,... (where to stop)")
    parser.add_argument("--report", required=True, help="where to write what was done (JSON)")
    parser.add_argument("--poll-records", type=int, default=2000, help="max_poll_records")
    parser.add_argument("--started-file", help="created when the first records are polled")
    parser.add_argument(
        "--hold-s", type=float, default=0.0, help="seconds to stay (connected) after the report is written"
    )
    args = parser.parse_args()
    ends = {int(p): int(end) for p, end in (pair.split(":") for pair in args.ends.split(","))}
    consume(args, ends)


if __name__ == "__main__":
    main()
