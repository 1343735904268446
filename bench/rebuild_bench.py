"""`ledger rebuild` of a PostgreSQL ledger while it records (issue #15): rate, memory, longest pause.

Usage: python bench/rebuild_bench.py [--events 1000000] [--rounds 3] [--baseline COMMIT]

Builds one ledger once: the history file of import_bench.py (a chain's year: till sales, receipts,
reservations and their shipments and releases, counts, transfers over 50 stores), imported with
`ledger import` into an embedded PostgreSQL with fsync on. Then starts `ledger serve` on it and a
writer client that posts one event at a time throughout (a receipt, a reservation, its release:
the projections the rebuild swaps are written to), and, each round, runs `ledger rebuild` as an
operator would. Reports per round: the entries replayed per second of the rebuild's wall time,
next to a COPY of the same log rows (out of the events table and into a table like it, without
indexes); the rebuild's peak memory (its process's, and its fill's other process's, sampled:
peak_memory.py); how long it held the writers' lock
(its own report) and the longest gap between two acknowledgements of the writer client while it
ran, next to the longest gap in as long a time before it; the WAL it wrote; and the load average.
Before the next round it waits for autovacuum's visit of the rebuilt tables (at most
AUTOVACUUM_SETTLE_MAX_S), and reports how long it waited: a cost that follows every rebuild,
and that would otherwise fall inside the next round's. Checks that every
event the client had acknowledged is in the rebuilt projections (its event key). With `--baseline
COMMIT`, each round also rebuilds with that commit's `ledger` package (extracted by
baseline_tree.py), one after the other on the same ledger, the order turned every round (`ledger
serve` is always this tree's). Not a test: it asserts nothing about speed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import import_bench
from baseline_tree import extract, resolve_commit
from frame import ledger_command
from peak_memory import PeakMemory
from plumbing import BenchError, Postgres, Server, free_port, temporary_postgres, wait_ready
from steady_writer import WriterClient

TARGET_EVENTS_PER_S = 30_000
TARGET_PAUSE_S = 1.0
REBUILD_TIMEOUT_S = 3600
READY_TIMEOUT_S = 120
SOURCE = "bench/rebuild"  # the writer client's events
THIS_TREE = "this tree"
# After each rebuild, autovacuum visits the new tables (every row is new to it) and sets their pages
# all-visible, writing them into the WAL again: the next round waits for it, at most this long, so
# that it does not run inside the next rebuild.
AUTOVACUUM_SETTLE_MAX_S = 240
AUTOVACUUM_POLL_S = 2.0
REPORTED = re.compile(r"from (\d+) recorded events .* in ([\d.]+) s; writes waited ([\d.]+) s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events in the ledger before the rounds"
    )
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="rebuilds of the same ledger")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--tmp-dir", default=None, help="where PostgreSQL and the file live (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--baseline", default=None, help="a commit whose rebuild is measured too")
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("rebuild_results.json")))
    return parser.parse_args(argv)


def copy_rate(pg: Postgres, database: str) -> dict[str, Any]:
    """The log's rows copied out of the events table and into a table like it (no indexes)."""
    import psycopg

    with psycopg.connect(pg.conninfo(database), autocommit=True) as conn, conn.cursor() as cursor:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE ledger_events)")
        started = time.monotonic()
        chunks: list[bytes] = []
        with cursor.copy("COPY ledger_events TO STDOUT") as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
        copied_out = time.monotonic()
        with cursor.copy("COPY bench_copy FROM STDIN") as copy:
            for chunk in chunks:
                copy.write(chunk)
        done = time.monotonic()
        rows = conn.execute("SELECT COUNT(*) FROM bench_copy").fetchone()[0]  # type: ignore[index]
        conn.execute("DROP TABLE bench_copy")
    return {
        "rows": rows,
        "bytes": sum(len(c) for c in chunks),
        "out_s": round(copied_out - started, 2),
        "in_s": round(done - copied_out, 2),
        "rows_per_s": round(rows / (done - started)),
    }


def wal_bytes(pg: Postgres, database: str) -> int:
    return int(pg.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn", database)[0][0])


def autovacuum_settled(pg: Postgres, database: str, since: float) -> dict[str, Any]:
    """Waits until autovacuum has vacuumed the rebuilt history table (its last autovacuum after
    `since`, a time.time()) and no autovacuum worker runs, at most AUTOVACUUM_SETTLE_MAX_S."""
    started = time.monotonic()
    vacuumed = False
    while time.monotonic() - started < AUTOVACUUM_SETTLE_MAX_S:
        last, running = pg.execute(
            "SELECT (SELECT EXTRACT(EPOCH FROM last_autovacuum) FROM pg_stat_user_tables "
            "WHERE relname = 'ledger_history'), "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')",
            database,
        )[0]
        vacuumed = last is not None and float(last) > since
        if vacuumed and not running:
            break
        time.sleep(AUTOVACUUM_POLL_S)
    return {
        "autovacuum_after_s": round(time.monotonic() - started, 1),
        "autovacuum_after_done": vacuumed,
    }


def rebuild_round(
    pg: Postgres, database: str, url: str, number: int, client: WriterClient, side: str, tree: str | None
) -> dict[str, Any]:
    env = {**os.environ, "LEDGER_DATABASE_URL": url}
    env.pop("LEDGER_WRITER_SOCKET", None)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([tree, *filter(None, [os.environ.get("PYTHONPATH")])])
    load = os.getloadavg()
    wal_before = wal_bytes(pg, database)
    started = time.monotonic()
    process = subprocess.Popen(
        [*ledger_command(), "rebuild", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # wait4: this child's own CPU, not every child's so far. Its memory is sampled: wait4's
    # ru_maxrss would be this benchmark's own at the fork (peak_memory.py).
    with PeakMemory(process.pid) as peak:
        _, status, usage = os.wait4(process.pid, 0)
    ended = time.monotonic()
    wal_mb = round((wal_bytes(pg, database) - wal_before) / 1e6)  # the client's writes' too (a little)
    stdout = process.stdout.read().decode() if process.stdout else ""
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"ledger rebuild exited {status}: {stderr[-2000:]}")
    found = REPORTED.search(stdout)
    if not found:
        raise BenchError(f"ledger rebuild said {stdout!r}")
    entries, elapsed_s, paused_s = int(found[1]), float(found[2]), float(found[3])
    wall_s = ended - started
    before = client.longest_gap(started - wall_s, started)
    during = client.longest_gap(started, ended)
    result = {
        "round": number,
        "side": side,
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "entries": entries,
        "rebuild_s": elapsed_s,
        "wall_s": round(wall_s, 2),
        "entries_per_s": round(entries / elapsed_s),
        "entries_per_s_wall": round(entries / wall_s),
        "peak_rss_mb": peak.own_mb,
        "peak_rss_part_mb": peak.children_mb,  # the largest of its fill's other processes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "wal_mb": wal_mb,
        "writes_paused_s": paused_s,
        "longest_write_gap_s": round(during, 3),
        "longest_write_gap_before_s": round(before, 3),
        "said": stdout.strip(),
    }
    print(
        f"  round {number}, {side}: {entries:,} entries in {elapsed_s:.1f} s = {result['entries_per_s']:,}/s "
        f"({result['entries_per_s_wall']:,}/s over the command's {wall_s:.1f} s); peak memory "
        f"{result['peak_rss_mb']} MB (its other process {result['peak_rss_part_mb']} MB); "
        f"the rebuild held the writers' lock {paused_s:.3f} s; longest gap "
        f"between two writes {during:.3f} s (before it: {before:.3f} s); {wal_mb:,} MB of WAL; load average "
        f"{' '.join(f'{x:.2f}' for x in load)} before, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after",
        flush=True,
    )
    return result


def measure(pg: Postgres, workdir: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    path = workdir / "history.jsonl"
    size, lines = import_bench.generate(path, args)
    database = pg.create_database("rebuild")
    url = pg.url(database)
    print(
        f"importing {args.events:,} events ({lines / args.events:.2f} lines an event, {size / 1e6:.0f} MB)",
        flush=True,
    )
    summary = import_bench.import_file(path, url)
    path.unlink()
    results["ledger"] = {
        "events": args.events,
        "lines": lines,
        "entries": int(pg.execute("SELECT MAX(notification_id) FROM ledger_events", database)[0][0]),
        "history_rows": int(pg.execute("SELECT COUNT(*) FROM ledger_history", database)[0][0]),
        "import_events_per_s": summary["events_per_s"],
    }
    print(f"  ledger: {results['ledger']}", flush=True)
    sides: dict[str, str | None] = {THIS_TREE: None}
    if args.baseline:
        commit = resolve_commit(args.baseline)
        sides = {commit[:12]: str(extract(commit, workdir)), THIS_TREE: None}
    pg.checkpoint()
    copied = copy_rate(pg, database)
    results["copy"] = copied
    print(f"  COPY of the log's rows: {copied}", flush=True)
    port = free_port()
    server = Server(
        "ledger serve",
        [*ledger_command(), "serve", "--port", str(port)],
        {**os.environ, "LEDGER_DATABASE_URL": url},
        workdir / "serve.log",
    )
    server.start()
    client = WriterClient(port, SOURCE)
    try:
        wait_ready(server, port, "/readyz", READY_TIMEOUT_S)
        client.start()
        time.sleep(2.0)
        for number in range(1, args.rounds + 1):
            for side in list(sides) if number % 2 else list(reversed(sides)):
                pg.checkpoint()
                result = rebuild_round(pg, database, url, number, client, side, sides[side])
                result["copy_rows_per_s"] = copied["rows_per_s"]
                result.update(autovacuum_settled(pg, database, time.time() - result["wall_s"]))
                print(
                    f"    then autovacuum's visit: {result['autovacuum_after_s']} s"
                    f"{'' if result['autovacuum_after_done'] else ' (not done: gave up waiting)'}",
                    flush=True,
                )
                results["rounds"].append(result)
                if client.error:
                    raise BenchError(f"the writer client failed during round {number}: {client.error}")
    finally:
        client.stop()
        server.stop()
    keys = {
        row[0]
        for row in pg.execute(f"SELECT event_id FROM ledger_event_keys WHERE source = '{SOURCE}'", database)
    }
    missing = [event_id for event_id in client.ids if event_id not in keys]
    results["writes_acknowledged"] = len(client.ids)
    results["check_every_acknowledged_write_kept"] = not missing
    print(
        f"  the writer client's {len(client.ids):,} acknowledged writes: "
        f"{'all kept' if not missing else f'CHECK FAILED, {len(missing)} missing'}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count(), "rounds": []}
    status = 0
    try:
        with temporary_postgres("ledger-rebuild-bench-", args.tmp_dir, args.keep_tmp) as temporary:
            results["postgres"] = temporary.settings
            measure(temporary.pg, temporary.workdir, args, results)
        status = 0 if results["check_every_acknowledged_write_kept"] else 1
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        results["error"] = str(error)
        status = 1
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
