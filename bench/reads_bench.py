"""Reads that must not grow with the log (issue #13): the same reads on a 10,000-event and a
1,000,000-event PostgreSQL ledger, each next to the plain current-level read, in one run.

The ledgers are loaded through the ledger's own batch recording path: envelopes read by the
intake's validation (`read_envelope`), recorded by the writer in batches of 1,000 events
(`Ledger.submit_and_wait`, the writer as a thread of this process), exactly as `POST /v1/events`
records an array; so every row is what production writes. Then `ANALYZE` (as autovacuum would,
a little later), `ledger serve` on the database, and each read sent one at a time on one
keep-alive connection. Every read varies its store and SKU (fixed seed); the figures are p50 and
p99 of the answer times seen by the client. It ends with PostgreSQL's EXPLAIN ANALYZE of each
read's statements on the largest ledger. Not a test: it asserts nothing about speed.

    python bench/reads_bench.py                      # 10,000 and 1,000,000 events, ~5 minutes on 2 cores
    python bench/reads_bench.py --sizes 10000 100000 --requests 100
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from frame import ledger_command
from plumbing import BenchError, Postgres, Server, free_port, wait_ready

STORES = 20
SKUS = 2000
BATCH_EVENTS = 1000
BUSINESS_START = datetime(2025, 1, 1, tzinfo=UTC)
BUSINESS_STEP_S = 30  # event times run over about a year at 1,000,000 events
BACKDATED_EVERY = 10  # one event in ten happened long before it was recorded (an import)
BACKDATED_DAYS_MAX = 90
HISTORY_PAGE = 100
# The keys the reads ask about: the same number of entries each at every log size (spread evenly
# over the log), so that a read returns as much at 10,000 events as at 1,000,000 and only the log
# around it grows. The other events go to random keys of STORES x SKUS.
TRACKED_KEYS = 50
TRACKED_ENTRIES = 40
RESULTS = Path(__file__).with_name("reads_results.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="events per ledger")
    parser.add_argument("--requests", type=int, default=300, help="requests per read and ledger")
    parser.add_argument("--warmup", type=int, default=30, help="requests per read before measuring")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--tmp-dir", default=None, help="where the temporary PostgreSQL lives (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    return parser.parse_args(argv)


# --- the ledger's events ----------------------------------------------------------------------------------


def _key(rng: random.Random) -> tuple[str, str]:
    return f"store-{rng.randrange(STORES):02d}", f"SKU-{rng.randrange(SKUS):04d}"


def _tracked_key(rng: random.Random) -> tuple[str, str]:
    number = rng.randrange(TRACKED_KEYS)
    return f"store-{number % STORES:02d}", f"TRACKED-{number:02d}"


def envelopes(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """A mix of receipts, reservations, sales, POS sales, counts and adjustments over STORES x SKUS;
    event times step forwards, one in BACKDATED_EVERY is dated up to BACKDATED_DAYS_MAX days back."""
    rng = random.Random(seed)
    tracked_every = max(1, count // (TRACKED_KEYS * TRACKED_ENTRIES))
    for i in range(count):
        store, _ = _key(rng)
        skus = sorted({_key(rng)[1] for _ in range(rng.randint(1, 3))})
        if i % tracked_every == 0:
            store, sku = _tracked_key(rng)
            skus = [sku]
        moment = BUSINESS_START + timedelta(seconds=i * BUSINESS_STEP_S)
        if i % BACKDATED_EVERY == 0:
            moment -= timedelta(days=rng.uniform(0, BACKDATED_DAYS_MAX))
        kind = rng.randrange(10)
        data: dict[str, Any]
        if kind < 4:
            event_type, data = (
                "stock.receipt",
                {"lines": [{"sku": s, "qty": rng.randint(5, 50)} for s in skus]},
            )
        elif kind < 6:
            event_type = "stock.reservation"
            data = {"reservation_id": f"R-{i}", "lines": [{"sku": skus[0], "qty": rng.randint(1, 3)}]}
        elif kind == 6:
            event_type, data = "stock.sale", {"lines": [{"sku": s, "qty": rng.randint(1, 4)} for s in skus]}
        elif kind == 7:
            event_type, data = (
                "stock.pos_sale",
                {"lines": [{"sku": s, "qty": rng.randint(1, 2)} for s in skus]},
            )
        elif kind == 8:
            event_type, data = "stock.count", {"lines": [{"sku": skus[0], "qty": rng.randint(0, 60)}]}
        else:
            event_type = "stock.adjustment"
            data = {"reason": "damage", "lines": [{"sku": skus[0], "qty": -rng.randint(1, 3)}]}
        yield {
            "specversion": "1.0",
            "id": f"e-{i}",
            "source": "bench/reads",
            "type": event_type,
            "time": moment.astimezone(UTC).isoformat(),
            "subject": store,
            "datacontenttype": "application/json",
            "data": data,
        }


def load(database_url: str, count: int, seed: int) -> float:
    """Records `count` events through the writer; returns the seconds it took."""
    from ledger.bootstrap import build_ledger, intake_limits
    from ledger.config import Settings
    from ledger.intake.envelope import read_envelope

    settings = Settings(database_url=database_url)
    limits = intake_limits(settings)
    ledger = build_ledger(settings)
    ledger.start()
    started = time.monotonic()
    source = envelopes(count, seed)

    def next_batch() -> list[Any]:
        return [read_envelope(envelope, limits) for envelope in itertools.islice(source, BATCH_EVENTS)]

    # The next batch is read while the writer records this one (PostgreSQL works meanwhile).
    with ThreadPoolExecutor(1) as reader:
        try:
            recorded = 0
            upcoming = reader.submit(next_batch)
            while batch := upcoming.result():
                upcoming = reader.submit(next_batch)
                results = ledger.submit_and_wait(batch)
                assert len(results) == len(batch)
                recorded += len(batch)
                if recorded % 100_000 == 0:
                    rate = recorded / (time.monotonic() - started)
                    print(f"    {recorded:,} events recorded ({rate:,.0f}/s)", flush=True)
        finally:
            ledger.stop()
    return time.monotonic() - started


# --- the reads -------------------------------------------------------------------------------------------


class Reader:
    """One keep-alive connection to the ledger; each request's answer time, in milliseconds."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[float, Any]:
        url = f"{path}?{urlencode(params, doseq=True)}" if params else path
        started = time.perf_counter()
        self.conn.request("GET", url)
        response = self.conn.getresponse()
        raw = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise BenchError(f"GET {url}: {response.status} {raw[:300]!r}")
        return elapsed_ms, json.loads(raw)


def _scalar(pg: Postgres, database: str, sql: str) -> Any:
    return pg.execute(sql, database)[0][0]


def read_plan(
    pg: Postgres, database: str, seed: int
) -> dict[str, Callable[[random.Random], tuple[str, dict[str, Any]]]]:
    """Each read: a function from a random source to (path, query)."""
    head = int(_scalar(pg, database, "SELECT MAX(position) FROM ledger_history"))

    def recorded_at(fraction_back: float) -> str:
        position = max(1, int(head * (1 - fraction_back)))
        found = _scalar(
            pg, database, f"SELECT MIN(recorded_at) FROM ledger_history WHERE position >= {position}"
        )
        return str(found).replace("Z", "+00:00")

    occurred_first = _scalar(pg, database, "SELECT MIN(occurred_at) FROM ledger_history")
    occurred_last = _scalar(pg, database, "SELECT MAX(occurred_at) FROM ledger_history")
    first = datetime.fromisoformat(occurred_first.replace("Z", "+00:00"))
    last = datetime.fromisoformat(occurred_last.replace("Z", "+00:00"))
    occurred_middle = (first + (last - first) / 2).isoformat()
    as_of = {fraction: recorded_at(fraction) for fraction in (0.1, 0.5, 0.9)}
    deep = int(head * 0.9)

    def level(params: dict[str, Any] | None = None) -> Callable[[random.Random], tuple[str, dict[str, Any]]]:
        def make(rng: random.Random) -> tuple[str, dict[str, Any]]:
            store, sku = _tracked_key(rng)
            return f"/v1/stores/{store}/stock/{sku}", dict(params or {})

        return make

    def history(by_sku: bool) -> Callable[[random.Random], tuple[str, dict[str, Any]]]:
        def make(rng: random.Random) -> tuple[str, dict[str, Any]]:
            store, sku = _tracked_key(rng)
            params: dict[str, Any] = {"after": deep, "limit": HISTORY_PAGE}
            if by_sku:
                params["sku"] = sku
            return f"/v1/stores/{store}/history", params

        return make

    def timeline(axis: str) -> Callable[[random.Random], tuple[str, dict[str, Any]]]:
        def make(rng: random.Random) -> tuple[str, dict[str, Any]]:
            store, sku = _tracked_key(rng)
            return f"/v1/stores/{store}/stock/{sku}/timeline", {"axis": axis}

        return make

    def explained(rng: random.Random) -> tuple[str, dict[str, Any]]:
        store, sku = _tracked_key(rng)
        return f"/v1/stores/{store}/stock/{sku}/explain", {}

    return {
        "current level": level(),
        "as_of 10% back": level({"as_of": as_of[0.1]}),
        "as_of 50% back": level({"as_of": as_of[0.5]}),
        "as_of 90% back": level({"as_of": as_of[0.9]}),
        "occurred_as_of (middle)": level({"occurred_as_of": occurred_middle}),
        "history page of a store at 90%": history(by_sku=False),
        "history page of a SKU at 90%": history(by_sku=True),
        "timeline (recorded)": timeline("recorded"),
        "timeline (occurred)": timeline("occurred"),
        "explain": explained,
    }


def measure(targets: dict[int, tuple[int, dict[str, Any]]], args: argparse.Namespace) -> dict[int, Any]:
    """Each read on every ledger in turn, request by request (10,000, 1,000,000, 10,000, ...), so that
    whatever else the machine does meanwhile falls on both alike."""
    readers = {size: Reader(port) for size, (port, _) in targets.items()}
    figures: dict[int, dict[str, dict[str, float]]] = {size: {} for size in targets}
    names = list(next(iter(targets.values()))[1])
    for name in names:
        makers = {size: (random.Random(args.seed), plan[name]) for size, (_, plan) in targets.items()}
        times: dict[int, list[float]] = {size: [] for size in targets}
        rows: dict[int, list[int]] = {size: [] for size in targets}
        for number in range(args.warmup + args.requests):
            for size, (rng, make) in makers.items():
                elapsed_ms, body = readers[size].get(*make(rng))
                if number >= args.warmup:
                    times[size].append(elapsed_ms)
                    rows[size].append(
                        len(body.get("entries", body.get("points", body.get("reserved_by", ()))))
                    )
        line = [f"    {name:32s}"]
        for size in targets:
            ordered = sorted(times[size])
            figures[size][name] = {
                "p50_ms": round(statistics.median(ordered), 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
                "rows_mean": round(statistics.fmean(rows[size]), 1),
            }
            figure = figures[size][name]
            line.append(f"{size:>9,}: p50 {figure['p50_ms']:6.2f} ms p99 {figure['p99_ms']:6.2f} ms")
        print("  ".join(line), flush=True)
    return figures


def explain(database_url: str, seed: int) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of each read's statements, as the query functions send them."""
    from ledger.bootstrap import build_ledger
    from ledger.config import Settings
    from ledger.projections import queries
    from ledger.projections.explain import explain as explain_level
    from ledger.projections.queries import HistoryFilter
    from ledger.projections.timeline import TimelineWindow, timeline_points
    from ledger.sql import SqlTx

    class RecordingTx(SqlTx):
        """Runs every statement as asked, and keeps it to be EXPLAINed (as in test_read_plans.py)."""

        def __init__(self, tx: SqlTx) -> None:
            super().__init__(tx.cursor, qmark=tx.qmark, connection=tx.connection)
            self.statements: list[tuple[str, list[Any]]] = []

        def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
            self.statements.append((sql, list(params)))
            return super().fetchall(sql, params)

        def fetchone(self, sql: str, params: Any = ()) -> Any:
            self.statements.append((sql, list(params)))
            return super().fetchone(sql, params)

    ledger = build_ledger(Settings(database_url=database_url))
    plans: dict[str, list[str]] = {}
    try:
        with ledger.recorder.read_transaction() as tx:
            head = int(tx.fetchone("SELECT MAX(position) AS head FROM ledger_history")["head"])  # type: ignore[index]

            def first_from(position: int) -> Any:
                sql = "SELECT * FROM ledger_history WHERE position >= %s AND sku IS NOT NULL LIMIT 1"
                return tx.fetchone(sql, (position,))

            moment, middle = first_from(head // 10), first_from(head // 2)
        store, sku = _tracked_key(random.Random(seed))
        reads: dict[str, Callable[[Any], Any]] = {
            "as_of 90% back": lambda tx: queries.levels_at(
                tx,
                store,
                [sku],
                queries.position_at(tx, moment["recorded_at"]),  # type: ignore[index]
            ),
            "occurred_as_of": lambda tx: queries.levels_occurred_at(tx, store, [sku], middle["occurred_at"]),  # type: ignore[index]
            "history page of a store at 90%": lambda tx: queries.history_page(
                tx, HistoryFilter(store, after_position=head * 9 // 10, after_line_no=10**9), HISTORY_PAGE
            ),
            "history page of a SKU at 90%": lambda tx: queries.history_page(
                tx,
                HistoryFilter(store, sku=sku, after_position=head * 9 // 10, after_line_no=10**9),
                HISTORY_PAGE,
            ),
            "timeline (recorded)": lambda tx: timeline_points(tx, TimelineWindow(store, sku), 500),
            "timeline (occurred)": lambda tx: timeline_points(
                tx, TimelineWindow(store, sku, "occurred"), 500
            ),
            "explain": lambda tx: explain_level(tx, store, sku, head, 10_000),
        }
        for name, read in reads.items():
            with ledger.recorder.read_transaction() as tx:
                recording = RecordingTx(tx)
                read(recording)
                lines: list[str] = []
                for sql, params in recording.statements:
                    rows = tx.fetchall(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
                    lines += [row["QUERY PLAN"] for row in rows] + [""]
            plans[name] = lines
    finally:
        ledger.recorder.close()
    return plans


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ledger-reads-bench-", dir=args.tmp_dir))
    pg = Postgres(workdir / "pg")
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "keep_tmp"},
        "sizes": {},
    }
    servers: list[Server] = []
    try:
        pg.start()
        print(f"PostgreSQL in {workdir}; {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
        targets: dict[int, tuple[int, dict[str, Any]]] = {}
        for size in args.sizes:
            database = pg.create_database(f"reads_{size}")
            url = pg.url(database)
            print(f"  loading {size:,} events through the writer ...", flush=True)
            load_s = load(url, size, args.seed)
            pg.execute("ANALYZE", database)
            rows = int(_scalar(pg, database, "SELECT COUNT(*) FROM ledger_history"))
            print(f"  {size:,} events, {rows:,} history rows, loaded in {load_s:.0f} s", flush=True)
            results["sizes"][str(size)] = {
                "history_rows": rows,
                "load_s": round(load_s, 1),
                "load_events_per_s": round(size / load_s),
            }
        for size in args.sizes:
            port = free_port()
            env = dict(os.environ, LEDGER_DATABASE_URL=pg.url(f"reads_{size}"), LEDGER_HTTP_HOST="127.0.0.1")
            server = Server(
                f"ledger-{size}",
                [*ledger_command(), "serve", "--port", str(port)],
                env,
                workdir / f"ledger-{size}.log",
            )
            servers.append(server)
            server.start()
            wait_ready(server, port, "/readyz", args.ready_timeout)
            targets[size] = (port, read_plan(pg, f"reads_{size}", args.seed))
        results["load_average_before_reads"] = os.getloadavg()
        print(f"  reads (load average {os.getloadavg()}):", flush=True)
        for size, figures in measure(targets, args).items():
            results["sizes"][str(size)]["reads"] = figures
        results["load_average_after_reads"] = os.getloadavg()
        for server in servers:
            server.stop()
        servers = []
        largest = max(args.sizes)
        results["explain_largest"] = explain(pg.url(f"reads_{largest}"), args.seed)
        for name, lines in results["explain_largest"].items():
            print(f"\n  EXPLAIN ANALYZE at {largest:,} events: {name}")
            print("\n".join(f"    {line}" for line in lines if line))
        results["load_average_end"] = os.getloadavg()
        print_table(results)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {RESULTS}")
        return 0
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        pg.stop()
        if not args.keep_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(results: dict[str, Any]) -> None:
    sizes = list(results["sizes"])
    reads = list(results["sizes"][sizes[0]]["reads"])
    header = " | ".join(f"{int(size):,} events p50 / p99 ms" for size in sizes)
    print(f"\n| read | {header} | p99 ratio |")
    print("| --- |" + " --- |" * (len(sizes) + 1))
    for name in reads:
        cells = []
        for size in sizes:
            figure = results["sizes"][size]["reads"][name]
            cells.append(f"{figure['p50_ms']:.2f} / {figure['p99_ms']:.2f}")
        first, last = (results["sizes"][s]["reads"][name]["p99_ms"] for s in (sizes[0], sizes[-1]))
        print(f"| {name} | {' | '.join(cells)} | {last / first:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
