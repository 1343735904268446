"""What explain's index of reservation lines (ledger_reservation_lines) adds to recording reservations.

A batch of N one-line reservations writes N more rows: the Python rows and their JSON, as
`write_batch` makes them, timed in-process; and on PostgreSQL the very statements the batch
function runs for them (a placed reservation's lines inserted, a changed one's upserted), each sent
alone in autocommit with `synchronous_commit = off` (the statement's cost, not the disk's), next to
the reservations' own insert and an empty statement (the round trip and the call, which a real
batch does not pay per table: its inserts run inside one function). Rounds alternate. Not a test:
it asserts nothing about speed.

With `--fill N` it also times migration 11's fill (the index made from every reservation's lines,
under the log's write lock) over N two-line reservations, on PostgreSQL and on SQLite.

    python bench/reservation_lines_bench.py                  # 5 rounds of 400 batches of 16
    python bench/reservation_lines_bench.py --fill 400000    # and the migration's fill
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg
from plumbing import Postgres

from ledger.domain.model import Reservation, ReservationLine
from ledger.projections import tables
from ledger.projections.schema import PG_RESERVATION_LINES_FILL, SQLITE_RESERVATION_LINES_FILL
from ledger.storage.opening import open_recorder


def reservations(start: int, count: int) -> list[tuple[Reservation, int]]:
    return [
        (Reservation("hot", f"R{n}", None, None, {"HOT": ReservationLine(1)}, placed_at_position=n), n)
        for n in range(start, start + count)
    ]


# N reservations of two lines each, spread over 20 stores and 2,000 SKUs (the second line shipped).
FILL_ROWS = """INSERT INTO ledger_reservations (store_id, reservation_id, lines, status, remaining,
    placed_at_position, position) SELECT 'store-' || (n % 20), 'R' || n,
    '[["SKU-' || (n % 2000) || '",2,0,0],["SKU-' || ((n + 7) % 2000) || '",1,1,0]]', 'active', 2, n, n
    FROM {numbers}"""


def time_fill(pg: Postgres, directory: Path, reservations: int) -> None:
    url = pg.url(pg.create_database("fill"))
    open_recorder(url, 2, 30).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL_ROWS.format(numbers=f"generate_series(1, {reservations}) AS n"))  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE ledger_reservations")
        conn.execute("DELETE FROM ledger_reservation_lines")
        started = time.perf_counter()
        conn.execute(PG_RESERVATION_LINES_FILL)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        print(f"postgres: migration 11's fill of {reservations:,} reservations: {elapsed:.1f} s")
    path = directory / "fill.db"
    open_recorder(f"sqlite:///{path}", 2, 30).close()
    with contextlib.closing(sqlite3.connect(path)) as lite:
        numbers = (
            "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
            f"WHERE n < {reservations}) SELECT n FROM s)"
        )
        lite.execute(FILL_ROWS.format(numbers=numbers))
        lite.commit()
        started = time.perf_counter()
        lite.execute(SQLITE_RESERVATION_LINES_FILL)
        lite.commit()
        elapsed = time.perf_counter() - started
        print(f"sqlite: migration 11's fill of {reservations:,} reservations: {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-batch", type=int, default=16, help="reservations a batch")
    parser.add_argument("--batches", type=int, default=400, help="batches a round and statement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--fill", type=int, default=0, metavar="N", help="time migration 11's fill of N reservations"
    )
    args = parser.parse_args()
    per_batch = args.per_batch
    print(f"load average {os.getloadavg()}")

    batch = reservations(0, per_batch)
    python_s = (
        min(
            timeit.repeat(
                lambda: orjson.dumps(tables._reservation_line_rows(batch)), number=2000, repeat=args.rounds
            )
        )
        / 2000
    )
    print(f"python: the lines' rows and JSON, {per_batch} reservations: {python_s * 1e6:.1f} µs")

    directory = Path(tempfile.mkdtemp(prefix="ledger-lines-bench-"))
    pg = Postgres(directory / "pg")
    try:
        pg.start()
        url = pg.url(pg.create_database("lines"))
        open_recorder(url, 2, 30).close()  # the schema, by the migrations
        numbers = itertools.count(0, per_batch)

        def rows_of(make: Callable[[list[tuple[Reservation, int]]], list[tuple[object, ...]]]) -> str:
            return orjson.dumps(make(reservations(next(numbers), per_batch))).decode()

        def lines(held: list[tuple[Reservation, int]]) -> list[tuple[object, ...]]:
            return tables._reservation_line_rows(held)

        def reservation_rows(held: list[tuple[Reservation, int]]) -> list[tuple[object, ...]]:
            return [tables._reservation_row(reservation, position) for reservation, position in held]

        statements = {
            "placed lines (insert)": (tables._NEW_RESERVATION_LINES.json_sql, lambda: rows_of(lines)),
            "changed lines (upsert)": (tables._RESERVATION_LINES.json_sql, lambda: rows_of(lines)),
            "the reservations' own insert": (
                tables._NEW_RESERVATIONS.json_sql,
                lambda: rows_of(reservation_rows),
            ),
            "an empty statement": ("SELECT jsonb_array_length(%s::jsonb)", lambda: "[]"),
        }
        figures: dict[str, list[float]] = {name: [] for name in statements}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            for _ in range(args.rounds):
                for name, (sql, argument) in statements.items():
                    arguments = [argument() for _ in range(args.batches)]
                    started = time.perf_counter()
                    for text in arguments:
                        conn.execute(sql, (text,), prepare=True)
                    figures[name].append((time.perf_counter() - started) / args.batches * 1e6)
        for name, values in figures.items():
            rounds = ", ".join(f"{value:.0f}" for value in values)
            print(f"postgres: {name}, {per_batch} rows: median {statistics.median(values):.0f} µs ({rounds})")
        if args.fill:
            time_fill(pg, directory, args.fill)
        print(f"load average {os.getloadavg()}")
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
