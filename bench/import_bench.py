"""`ledger import` into PostgreSQL: events per second from a generated history file (issue #13).

Usage: python bench/import_bench.py [--events 200000] [--rounds 3] [--stores 50] [--skus 20000]
                                   [--baseline COMMIT]

Generates one JSON Lines file of realistic envelopes (a year of a chain's history: receipts, till
sales, online sales, reservations and their shipments and releases, returns, counts, adjustments
and transfers over many stores and SKUs), then, each round, imports it with `ledger import` into a
new database of an embedded PostgreSQL with fsync on, as a user would run it (its own process, its
own writer). Reports each round's rate (events recorded / the import's own time, and / the
command's wall time), the CPU seconds of the import process and of PostgreSQL, the load average,
and checks that every line has exactly one entry in the log and that a second import of the same
file records nothing new. With `--baseline COMMIT`, each round also imports the file with that
commit's `ledger` package (bench/baseline_tree.py) into a database of its own, the order turned
every round. Not a test: it asserts nothing about speed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_tree import extract, resolve_commit
from frame import ledger_command
from plumbing import BenchError, Postgres, temporary_postgres

TARGET_EVENTS_PER_S = 10_000
THIS_TREE = "this tree"
IMPORT_TIMEOUT_S = 1800
START = datetime(2025, 1, 1, 5, 0, tzinfo=UTC)
MOSCOW = timezone(timedelta(hours=3))  # 1C exports carry the shop's offset
# The share of each kind of event in the generated history (a chain's year, roughly).
MIX = (
    ("stock.pos_sale", 0.55),
    ("stock.receipt", 0.08),
    ("stock.sale", 0.08),
    ("stock.reservation", 0.10),
    ("stock.shipment", 0.07),
    ("stock.reservation_release", 0.02),
    ("stock.return", 0.03),
    ("stock.count", 0.02),
    ("stock.adjustment", 0.03),
    ("stock.transfer", 0.02),
)
# Orders ship (or are cancelled) this many events after they were reserved, oldest first: a day or
# so of the chain's history, as a warehouse works through its queue.
SHIP_AFTER_EVENTS = 3000
ASSORTMENT_SKUS = 1000  # SKUs each store stocks, of --skus in all (one opening count's lines at most)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="lines of the generated file")
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="imports of the file, each into a new database")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--tmp-dir", default=None, help="where PostgreSQL and the file live (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--baseline", default=None, help="a commit whose import is measured too")
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("import_results.json")))
    return parser.parse_args(argv)


class History:
    """Generates envelopes that a real export would hold, in time order."""

    def __init__(self, stores: int, skus: int, seed: int) -> None:
        self.random = random.Random(seed)
        self.stores = [f"store-{n:03d}" for n in range(1, stores + 1)]
        self.skus = [f"SKU-{n:06d}" for n in range(1, skus + 1)]
        # Each store stocks its own assortment, and the history starts with its opening balances.
        self.assortment = {
            store: self.random.sample(self.skus, min(ASSORTMENT_SKUS, skus)) for store in self.stores
        }
        self.opening = deque(self.stores)
        self.open_reservations: deque[tuple[int, str, str, list[dict[str, Any]]]] = deque()
        self.count = 0
        self.kinds = [kind for kind, _ in MIX]
        self.weights = [weight for _, weight in MIX]

    def _due(self) -> bool:
        return bool(self.open_reservations) and self.open_reservations[0][0] <= self.count - SHIP_AFTER_EVENTS

    def lines(self, store: str, most: int, qty_max: int) -> list[dict[str, Any]]:
        skus = self.random.sample(self.assortment[store], self.random.randint(1, most))
        return [{"sku": sku, "qty": self.random.randint(1, qty_max)} for sku in skus]

    def opening_count(self, n: int) -> dict[str, Any]:
        """A store's opening balances: a count of its whole assortment (one line per SKU)."""
        store = self.opening.popleft()
        lines = [{"sku": sku, "qty": self.random.randint(20, 200)} for sku in self.assortment[store]]
        return {"type": "stock.count", "store": store, "data": {"lines": lines, "reference": f"OPEN-{n}"}}

    def envelope(self) -> dict[str, Any]:
        self.count += 1
        n = self.count
        kind = self.random.choices(self.kinds, self.weights)[0]
        store = self.random.choice(self.stores)
        data: dict[str, Any]
        if self.opening:
            opening = self.opening_count(n)
            kind, store, data = opening["type"], opening["store"], opening["data"]
        elif kind == "stock.receipt":
            data = {"lines": self.lines(store, 10, 100), "reference": f"PN-{n}"}
        elif kind in ("stock.pos_sale", "stock.return"):
            data = {"lines": self.lines(store, 3, 3), "reference": f"CHK-{n}"}
        elif kind == "stock.sale":
            data = {"lines": self.lines(store, 3, 2), "order_id": f"ORD-{n}"}
        elif kind == "stock.reservation":
            lines = self.lines(store, 3, 2)
            data = {"reservation_id": f"R-{n}", "order_id": f"ORD-{n}", "lines": lines}
            self.open_reservations.append((n, store, f"R-{n}", lines))
        elif kind in ("stock.shipment", "stock.reservation_release") and self._due():
            _, store, reservation, lines = self.open_reservations.popleft()
            data = {"reservation_id": reservation}
            if kind == "stock.shipment":
                data["lines"] = lines
        elif kind == "stock.count":
            data = {"lines": self.lines(store, 20, 100), "reference": f"INV-{n}"}
        elif kind == "stock.adjustment":
            data = {
                "lines": [
                    {"sku": self.random.choice(self.assortment[store]), "qty": -self.random.randint(1, 3)}
                ]
            }
            data["reason"] = "damaged"
        else:  # a transfer, or a shipment or release when no order is due: a transfer
            kind = "stock.transfer"
            to_store = self.random.choice([s for s in self.stores[:8] if s != store])
            data = {"lines": self.lines(store, 5, 10), "to_store": to_store, "transfer_id": f"TR-{n}"}
        moment = START + timedelta(seconds=n * 90)
        return {
            "specversion": "1.0",
            "id": f"1c-{n:09d}",
            "source": f"1c/{store}",
            "type": kind,
            "time": moment.astimezone(MOSCOW).isoformat(timespec="seconds"),
            "subject": store,
            "datacontenttype": "application/json",
            "data": data,
        }


def generate(path: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Writes the file; its size in bytes and its event lines in all (a transfer's count twice:
    it changes two stores)."""
    history = History(args.stores, args.skus, args.seed)
    lines = 0
    with path.open("wb") as file:
        for _ in range(args.events):
            envelope = history.envelope()
            lines += len(envelope["data"].get("lines", ())) * (
                2 if envelope["type"] == "stock.transfer" else 1
            )
            file.write(orjson.dumps(envelope) + b"\n")
    return path.stat().st_size, lines


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process, and of those that have ended (the backends of a
    finished import: counted in their parent's children times)."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name", "ppid"]):
        if not (process.info["name"] or "").startswith("postgres"):
            continue
        try:
            times = process.cpu_times()
            parent = psutil.Process(process.info["ppid"]).name()
        except psutil.Error:
            continue
        total += times.user + times.system
        if not parent.startswith("postgres"):  # the postmaster: it reaps the backends
            total += times.children_user + times.children_system
    return total


def import_file(path: Path, url: str, tree: str | None = None) -> dict[str, Any]:
    """`ledger import` of the file; with `tree`, that directory's `ledger` package first on the path."""
    env = {**os.environ, "LEDGER_DATABASE_URL": url}
    env.pop("LEDGER_WRITER_SOCKET", None)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([tree, *filter(None, [os.environ.get("PYTHONPATH")])])
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg_before = postgres_cpu_s()
    started = time.monotonic()
    done = subprocess.run(
        [*ledger_command(), "import", str(path), "--json", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
        check=False,
    )
    wall_s = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg_cpu = postgres_cpu_s() - pg_before
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise BenchError(f"ledger import exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["exit"] = done.returncode
    summary["wall_s"] = round(wall_s, 2)
    summary["import_cpu_s"] = round(
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime, 2
    )
    summary["postgres_cpu_s"] = round(pg_cpu, 2)
    return summary


def entries(pg: Postgres, database: str) -> int:
    """Events with an entry in the log (a transfer has two entries, one event key)."""
    return int(pg.execute("SELECT COUNT(*) FROM ledger_event_keys", database)[0][0])


def measure(
    pg: Postgres, path: Path, args: argparse.Namespace, results: dict[str, Any], sides: dict[str, str | None]
) -> None:
    for number in range(1, args.rounds + 1):
        for side in list(sides) if number % 2 else list(reversed(sides)):
            measure_round(pg, path, args, results, number, side, sides[side])


def measure_round(
    pg: Postgres,
    path: Path,
    args: argparse.Namespace,
    results: dict[str, Any],
    number: int,
    side: str,
    tree: str | None,
) -> None:
    database = pg.create_database(f"import_{number}_{len(results['rounds'])}")
    pg.execute("CHECKPOINT")
    load = os.getloadavg()
    wal_before = pg.execute("SELECT pg_current_wal_lsn()")[0][0]
    summary = import_file(path, pg.url(database), tree)
    wal_bytes = int(pg.execute(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal_before}')")[0][0])
    recorded = summary["accepted"] + summary["rejected"]
    rate, wall_rate = recorded / summary["elapsed_s"], recorded / summary["wall_s"]
    round_result = {
        "round": number,
        "side": side,
        "load_average_before": [round(x, 2) for x in load],
        "events_per_s": round(rate),
        "events_per_s_wall": round(wall_rate),
        "cpu_us_per_event": {
            "import": round(summary["import_cpu_s"] / recorded * 1e6, 1),
            "postgres": round(summary["postgres_cpu_s"] / recorded * 1e6, 1),
        },
        # What PostgreSQL wrote to its WAL per event (the import's alone: nothing else writes):
        # the rows and index entries of each event, and the pages a checkpoint made it write whole.
        "wal_bytes_per_event": round(wal_bytes / recorded),
        "summary": summary,
    }
    in_log = entries(pg, database)
    ok = in_log == recorded == args.events - summary["invalid"] and summary["exit"] == 0
    round_result["check_one_entry_per_line"] = ok
    results["rounds"].append(round_result)
    line_rate = results["file"]["lines"] / summary["elapsed_s"]
    round_result["event_lines_per_s"] = round(line_rate)
    cpu = round_result["cpu_us_per_event"]
    print(
        f"  round {number} ({side}): {rate:,.0f} events/s, {line_rate:,.0f} event lines/s ({wall_rate:,.0f} "
        f"events/s over the command's {summary['wall_s']} s); accepted {summary['accepted']:,}, "
        f"rejected {summary['rejected']:,}; CPU per event: import {cpu['import']} µs, PostgreSQL "
        f"{cpu['postgres']} µs; WAL {round_result['wal_bytes_per_event']:,} bytes an event; "
        f"load average before {' '.join(f'{x:.2f}' for x in load)}; "
        f"{'ok' if ok else 'CHECK FAILED'}: {in_log:,} events in the log",
        flush=True,
    )
    if number == 1 and tree is None:
        again = import_file(path, pg.url(database))
        nothing_new = again["duplicate"] == recorded and entries(pg, database) == in_log
        results["second_import_records_nothing"] = nothing_new
        print(
            f"  the same file again: {again['duplicate']:,} duplicates, {again['accepted']} accepted, "
            f"{again['events_per_s']:,.0f} lines/s; {'ok' if nothing_new else 'CHECK FAILED'}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count(), "rounds": []}
    try:
        with temporary_postgres("ledger-import-bench-", args.tmp_dir, args.keep_tmp) as temporary:
            results["postgres"] = temporary.settings
            path = temporary.workdir / "history.jsonl"
            size, lines = generate(path, args)
            results["file"] = {"bytes": size, "events": args.events, "lines": lines}
            print(
                f"{args.events:,} events over {args.stores} stores and {args.skus:,} SKUs, "
                f"{lines / args.events:.2f} lines an event: {size / 1e6:.1f} MB"
            )
            sides: dict[str, str | None] = {THIS_TREE: None}
            if args.baseline:
                commit = resolve_commit(args.baseline)
                sides = {commit[:12]: str(extract(commit, temporary.workdir)), THIS_TREE: None}
            measure(temporary.pg, path, args, results, sides)
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    rates = [r["events_per_s"] for r in results["rounds"] if r["side"] == THIS_TREE]
    results["target_events_per_s"] = TARGET_EVENTS_PER_S
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    shown = ", ".join(f"{r:,}" for r in rates)
    print(f"rounds: {shown} events/s (target {TARGET_EVENTS_PER_S:,}); {args.output}")
    for side in {r["side"] for r in results["rounds"]} - {THIS_TREE}:
        baseline = ", ".join(f"{r['events_per_s']:,}" for r in results["rounds"] if r["side"] == side)
        print(f"  {side}: {baseline} events/s")
    checks = [r["check_one_entry_per_line"] for r in results["rounds"]]
    return 0 if all(checks) and results.get("second_import_records_nothing", False) else 1


if __name__ == "__main__":
    sys.exit(main())
