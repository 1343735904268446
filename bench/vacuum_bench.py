"""Writes while the log is vacuumed (PostgreSQL): how long a full vacuum of `ledger_events` stops them.

Usage: python bench/vacuum_bench.py [--events 200000] [--rounds 2] [--baseline COMMIT]

An anti-wraparound vacuum, which PostgreSQL starts by itself once a table's oldest transaction id
is old enough (`autovacuum_freeze_max_age`, 200 million by default) and never cancels, scans the
whole table and freezes it, holding SHARE UPDATE EXCLUSIVE for as long. This bench runs the same
scan by hand, `VACUUM (FREEZE, DISABLE_PAGE_SKIPPING) ledger_events`, while a client writes one
event at a time to `ledger serve` (bench/steady_writer.py), and reports how long the vacuum took and
the longest gap between two acknowledged writes during it, next to the longest gap in as long a
time just before it.

The ledger is built once: import_bench.py's history file (a chain's year over 50 stores), imported
with `ledger import` into an embedded PostgreSQL with fsync on. With `--baseline COMMIT`, each round
runs that commit's `ledger serve` too (its `ledger` package first on the server's PYTHONPATH,
baseline_tree.py) on the same database, one after the other, the order turned every round. The
check: every write acknowledged is in the log. Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import import_bench
from baseline_tree import extract, resolve_commit
from frame import ledger_command
from plumbing import BenchError, Postgres, Server, free_port, temporary_postgres, wait_ready
from steady_writer import WriterClient

SOURCE = "bench/vacuum"  # the writer client's events
READY_TIMEOUT_S = 120
QUIET_S = 3.0  # the client writes this long before the vacuum (and the gap before is measured over it)
VACUUM = "VACUUM (FREEZE, DISABLE_PAGE_SKIPPING) ledger_events"
THIS_TREE = "this tree"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events in the ledger's log")
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="vacuums per side")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--baseline", default=None, help="a commit whose ledger is measured too")
    parser.add_argument("--tmp-dir", default=None, help="where PostgreSQL and the file live (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("vacuum_results.json")))
    return parser.parse_args(argv)


def vacuum_round(
    pg: Postgres, database: str, side: str, pythonpath: str | None, workdir: Path
) -> dict[str, Any]:
    """One `ledger serve` of a side, the client writing, one full vacuum of the log."""
    port = free_port()
    env = {**os.environ, "LEDGER_DATABASE_URL": pg.url(database)}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])])
    server = Server(
        f"ledger serve ({side})",
        [*ledger_command(), "serve", "--port", str(port)],
        env,
        workdir / f"serve-{side.replace(' ', '-')}.log",
    )
    server.start()
    client = WriterClient(port, SOURCE)
    try:
        wait_ready(server, port, "/readyz", READY_TIMEOUT_S)
        client.start()
        time.sleep(QUIET_S)
        load = os.getloadavg()
        started = time.monotonic()
        pg.execute(VACUUM, database)
        ended = time.monotonic()
        time.sleep(0.5)  # a write waiting behind the vacuum is acknowledged just after it
    finally:
        try:
            client.stop()
        finally:
            server.stop()
    if client.error:
        raise BenchError(f"the writer client failed ({side}): {client.error}")
    vacuum_s = ended - started
    return {
        "side": side,
        "load_average_before": load,
        "vacuum_s": round(vacuum_s, 3),
        "longest_gap_during_s": round(client.longest_gap(started, ended + 0.5), 3),
        "longest_gap_before_s": round(client.longest_gap(started - QUIET_S + 0.5, started), 3),
        "writes_acknowledged": len(client.ids),
        "ids": client.ids,
    }


def measure(pg: Postgres, workdir: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    path = workdir / "history.jsonl"
    import_bench.generate(path, args)
    database = pg.create_database("vacuum")
    print(f"importing {args.events:,} events", flush=True)
    import_bench.import_file(path, pg.url(database))
    path.unlink()
    pages = pg.execute("SELECT pg_relation_size('ledger_events') / 8192", database)[0][0]
    entries = pg.execute("SELECT MAX(notification_id) FROM ledger_events", database)[0][0]
    results["ledger"] = {"events": args.events, "entries": int(entries), "log_pages": int(pages)}
    print(f"  the log: {entries:,} entries in {pages:,} pages", flush=True)
    sides: dict[str, str | None] = {THIS_TREE: None}
    if args.baseline:
        commit = resolve_commit(args.baseline)
        sides = {commit[:12]: str(extract(commit, workdir)), THIS_TREE: None}
    acknowledged: list[str] = []
    for number in range(1, args.rounds + 1):
        order = list(sides) if number % 2 else list(reversed(sides))
        for side in order:
            pg.checkpoint()
            result = vacuum_round(pg, database, side, sides[side], workdir)
            acknowledged.extend(result.pop("ids"))
            result["round"] = number
            results["rounds"].append(result)
            print(
                f"round {number}, {side}: the vacuum took {result['vacuum_s']:.2f} s; longest gap between "
                f"writes during it {result['longest_gap_during_s'] * 1000:,.1f} ms "
                f"(in {QUIET_S - 0.5:.1f} s before it: {result['longest_gap_before_s'] * 1000:,.1f} ms); "
                f"{result['writes_acknowledged']:,} writes acknowledged; load average before "
                f"{' '.join(f'{x:.2f}' for x in result['load_average_before'])}",
                flush=True,
            )
    kept = {
        row[0]
        for row in pg.execute(f"SELECT event_id FROM ledger_event_keys WHERE source = '{SOURCE}'", database)
    }
    missing = [event_id for event_id in acknowledged if event_id not in kept]
    results["check_every_acknowledged_write_kept"] = not missing
    print(
        "every acknowledged write in the log: "
        + ("yes" if not missing else f"CHECK FAILED, {len(missing)} missing"),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"args": vars(args), "vacuum": VACUUM, "rounds": []}
    try:
        with temporary_postgres("ledger-vacuum-bench-", args.tmp_dir, args.keep_tmp) as temporary:
            results["postgres"] = temporary.settings
            measure(temporary.pg, temporary.workdir, args, results)
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        results["error"] = str(error)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        return 1
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if results.get("check_every_acknowledged_write_kept") else 1


if __name__ == "__main__":
    sys.exit(main())
