"""Two `ledger serve` instances on one PostgreSQL database, each taking half of the batched writes, next
to one instance taking all of them: issue #10's second closing figure (target: two give at least 1.0x).

Usage: python bench/instances_bench.py [--seconds 10] [--rounds 3]
See bench/README.md for what is measured and the checks.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cputime
import load
import pgstats
import report
import session
import sqlbaseline
from frame import SEED_UNITS, STORE, Bench, chunks, ledger_command, ledger_metrics, metrics_delta, receipt
from plumbing import BenchError, Server

TARGET_RATIO = 1.0
LABELS = "abcdefgh"
PEER_SECRET = "the-instances-bench-peers-secret"  # instance names in the output: ledger a, ledger b, ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each run (default 10)")
    parser.add_argument("--skus", type=int, default=10_000, help="SKUs the reservations pick from")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per POST /v1/events")
    parser.add_argument(
        "--senders", type=int, default=4, help="concurrent senders in all, shared out between the instances"
    )
    parser.add_argument("--instances", type=int, default=2, help="instances of the scaled-out run")
    parser.add_argument("--rounds", type=int, default=1, help="each run this many times, back to back")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give every instance a writer peer address (LEDGER_WRITER_PEER_ADDRESS), so that one writer "
        "records for all; --no-peers: each instance's writer records itself, under the writers' lock",
    )
    session.add_common_options(parser)
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("instances_results.json")))
    args = parser.parse_args(argv)
    args.serve_argv = shlex.split(args.serve_args)
    if not 2 <= args.instances <= len(LABELS) or args.senders % args.instances:
        parser.error(f"--instances 2..{len(LABELS)}, and --senders a multiple of it")
    if args.seconds <= 0 or args.rounds < 1 or not 1 <= args.batch_size <= 1000:
        parser.error("--seconds > 0, --rounds >= 1, --batch-size 1..1000")
    return args


class InstancesBench:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args
        self.skus = [sqlbaseline.sku_name(i) for i in range(1, self.args.skus + 1)]
        self.rounds: list[dict[str, Any]] = []
        self.versions_at_start = report.versions(bench)  # others may change the tree during a run

    def round(self, number: int) -> None:
        # Turn about (one first in odd rounds, many first in even ones): a machine whose speed
        # drifts within a run then favours neither side.
        if number % 2:
            one = self.run(number, 1)
            many = self.run(number, self.args.instances)
        else:
            many = self.run(number, self.args.instances)
            one = self.run(number, 1)
        ratio = round(many["accepted_per_s"] / one["accepted_per_s"], 3) if one["accepted_per_s"] else None
        self.rounds.append({"round": number, "one": one, "many": many, "ratio": ratio})
        print(f"  round {number}: {round_line(self.rounds[-1])}", flush=True)

    def run(self, number: int, instances: int) -> dict[str, Any]:
        bench, args = self.bench, self.args
        senders_each = args.senders // instances
        print(
            f"\n== {instances} instance{'s' if instances > 1 else ''} on one database: POST /v1/events, "
            f"{senders_each} sender{'s' if senders_each > 1 else ''} each x {args.batch_size:,} reservation "
            f"events, {args.skus:,} SKUs, {args.seconds:.0f} s ==",
            flush=True,
        )
        database = bench.database(f"instances_{instances}")
        env = dict(os.environ, LEDGER_DATABASE_URL=bench.pg.url(database), LEDGER_HTTP_HOST="127.0.0.1")
        started: list[tuple[str, Server, int]] = []
        try:
            for label in LABELS[:instances]:
                name = f"ledger-{instances}x-{label}-round{number}"
                if args.peers:
                    env["LEDGER_WRITER_PEER_ADDRESS"] = f"127.0.0.1:{free_port()}"
                    env["LEDGER_WRITER_PEER_SECRET"] = PEER_SECRET
                server, port = bench.start_server(name, [*ledger_command(), "serve"], env)
                started.append((label, server, port))
                if len(started) == 1:
                    self.seed(port)
            warm = {
                label: self.warm_up(port, f"{number}-{label}", index)
                for index, (label, _, port) in enumerate(started)
            }
            bench.pg.checkpoint()
            before = {label: ledger_metrics(port) for label, _, port in started}
            pids = {
                label if instances > 1 else "": server.process.pid
                for label, server, _ in started
                if server.process
            }
            meter = cputime.CpuMeter(None, servers=pids)
            meter.start()
            waits = pgstats.WaitSampler(bench.pg, [database]).start()
            runs = self.send_all(number, started, senders_each)
            elapsed = max(run.elapsed_s for run in runs.values())
            accepted = sum(run.accepted for run in runs.values())
            cpu = cputime.report(meter.stop(), accepted)
            wait_summary = waits.stop()
            pgstats.print_waits(wait_summary)
            after = {label: ledger_metrics(port) for label, _, port in started}
            metrics = {
                label: {
                    "before": before[label],
                    "after": after[label],
                    "delta": metrics_delta(before[label], after[label], f"ledger {label}"),
                }
                for label in after
            }
            for label, run in runs.items():
                print(
                    f"    ledger {label}: {run.per_s:,.0f} reservations/s ({run.accepted:,} accepted in "
                    f"{run.requests} requests, {run.elapsed_s:.1f} s; request p99 "
                    f"{run.latency_ms['p99']:.0f} ms; outcomes {run.outcomes})"
                )
            print(f"    in all: {accepted / elapsed:,.0f} reservations/s", flush=True)
            self.check(instances, started, runs, warm)
        finally:
            for _, server, _ in started:
                bench.stop_server(server)
        pgstats.after_clients_left()
        counters = pgstats.counters(bench.pg, database)
        pgstats.print_counters(counters, accepted)
        return {
            "instances": instances,
            "senders_per_instance": senders_each,
            "accepted": accepted,
            "elapsed_s": round(elapsed, 3),
            "accepted_per_s": round(accepted / elapsed, 1),
            "per_instance": {label: run.as_dict() for label, run in runs.items()},
            "warmup_accepted": {label: run.accepted for label, run in warm.items()},
            "ledger_metrics": metrics,
            "postgres_waits": wait_summary,
            "postgres_counters": counters,
            **cpu,
        }

    def seed(self, port: int) -> None:
        """Plenty of every SKU, so that every reservation is accepted."""
        self.bench.post_events(
            port,
            [
                receipt(f"{self.bench.nonce}-seed-{n}", [(sku, SEED_UNITS) for sku in chunk])
                for n, chunk in enumerate(chunks(self.skus, 1000))
            ],
        )

    def warm_up(self, port: int, name: str, index: int) -> load.BatchRun:
        """One batch, so that the instance has loaded what it needs before it is measured."""
        return load.send_batches(
            port,
            STORE,
            self.skus,
            1,
            self.args.batch_size,
            0.0,
            f"{self.bench.nonce}-{name}-warm",
            requests_max=1,
            seed=1000 + index,
        )

    def send_all(
        self, number: int, started: list[tuple[str, Server, int]], senders_each: int
    ) -> dict[str, load.BatchRun]:
        """Every instance's senders at once, for the same time; each its own SKU choices."""
        runs: dict[str, load.BatchRun] = {}
        failures: list[BaseException] = []

        def drive(label: str, port: int, index: int) -> None:
            try:
                runs[label] = load.send_batches(
                    port,
                    STORE,
                    self.skus,
                    senders_each,
                    self.args.batch_size,
                    self.args.seconds,
                    f"{self.bench.nonce}-{number}-{label}",
                    seed=100 * index,
                )
            except BenchError as error:
                failures.append(error)

        threads = [
            threading.Thread(target=drive, args=(label, port, index), daemon=True)
            for index, (label, _, port) in enumerate(started)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.args.seconds + 600)
        if failures or len(runs) != len(started):
            raise BenchError(f"a sender group failed: {failures[:1] or 'did not finish in time'}")
        return runs

    def check(
        self,
        instances: int,
        started: list[tuple[str, Server, int]],
        runs: dict[str, load.BatchRun],
        warm: dict[str, load.BatchRun],
    ) -> None:
        bench = self.bench
        counted = sum(run.accepted for run in runs.values()) + sum(run.accepted for run in warm.values())
        seen = {label: bench.settled_levels(port, self.skus) for label, _, port in started}
        first = next(iter(seen.values()))
        reserved = sum(level["reserved"] for level in first.values())
        on_hand = sum(level["on_hand"] for level in first.values())
        bench.check(
            f"{instances} instance(s): reserved levels add up to the accepted events",
            reserved == counted,
            f"sum(reserved) over {len(first):,} SKUs = {reserved:,}, accepted = {counted:,} (with warm-up)",
        )
        bench.check(
            f"{instances} instance(s): on hand is untouched by reservations",
            on_hand == SEED_UNITS * len(self.skus),
            f"sum(on_hand) = {on_hand:,}",
        )
        bench.check(
            f"{instances} instance(s): every event was accepted",
            all(set(run.outcomes) <= {"accepted"} for run in [*runs.values(), *warm.values()]),
            "; ".join(f"{label}: {run.outcomes}" for label, run in runs.items()),
        )
        if instances > 1:
            bench.check(
                f"{instances} instances: every instance reads the same levels",
                all(levels == first for levels in seen.values()),
                ", ".join(
                    f"{label}: sum(reserved) {sum(level['reserved'] for level in levels.values()):,}"
                    for label, levels in seen.items()
                ),
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def round_line(measured: dict[str, Any]) -> str:
    one, many = measured["one"], measured["many"]
    ratio = "-" if measured["ratio"] is None else f"{measured['ratio']:.2f}x"
    return (
        f"one instance {one['accepted_per_s']:,.0f}/s, {many['instances']} instances "
        f"{many['accepted_per_s']:,.0f}/s: {ratio} (target >= {TARGET_RATIO}x)"
    )


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [measured["ratio"] for measured in rounds if measured["ratio"] is not None]
    if not ratios:
        return {}
    median = sorted(ratios)[(len(ratios) - 1) // 2]
    return {
        "median": median,
        "median_round": next(m["round"] for m in rounds if m["ratio"] == median),
        "target": TARGET_RATIO,
        "met": median >= TARGET_RATIO,
        "every_round": ratios,
    }


def print_summary(instances: InstancesBench) -> None:
    print("\n=== instances on one database: every round ===")
    for measured in instances.rounds:
        print(f"  round {measured['round']}: {round_line(measured)}")
    found = summary(instances.rounds)
    if found:
        print(
            f"  median {found['median']:.2f}x (round {found['median_round']}; target >= {TARGET_RATIO}x: "
            f"{'met' if found['met'] else 'NOT met'}); every round "
            + ", ".join(f"{ratio:.2f}x" for ratio in found["every_round"])
        )
    checks = instances.bench.checks
    failed = [check for check in checks if not check["ok"]]
    print(
        f"\nchecks: {len(checks) - len(failed)} of {len(checks)} ok"
        + "".join(f"\n  FAIL: {check['check']}: {check['detail']}" for check in failed)
    )


def results(
    args: argparse.Namespace, instances: InstancesBench, started: float, error: str | None
) -> dict[str, Any]:
    bench = instances.bench
    return {
        "figure": f"{args.instances} ledger serve instances on one PostgreSQL, against one (issue #10)",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "machine": report.machine(bench),
        "versions": report.versions(bench)
        | {
            "at_start": {
                key: instances.versions_at_start[key] for key in ("ledger_commit", "ledger_worktree_changes")
            }
        },
        "postgres_settings": bench.postgres_settings,
        "settings": {
            key: getattr(args, key)
            for key in (
                "seconds",
                "skus",
                "batch_size",
                "senders",
                "instances",
                "rounds",
                "peers",
                "serve_argv",
            )
        }
        | {"ledger_env": {k: v for k, v in os.environ.items() if k.startswith("LEDGER_")}},
        "target": f">= {TARGET_RATIO}x",
        "summary": summary(instances.rounds),
        "rounds": instances.rounds,
        "checks": bench.checks,
    } | ({"error": error} if error else {})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    holder: dict[str, InstancesBench] = {}

    def measure(bench: Bench) -> None:
        instances = holder["instances"] = InstancesBench(bench)
        for number in range(1, args.rounds + 1):
            print(f"\n-- round {number} of {args.rounds}", flush=True)
            bench.load_average[f"round {number}"] = [round(x, 2) for x in os.getloadavg()]
            instances.round(number)
        print_summary(instances)

    def write(bench: Bench, error: str | None) -> None:
        instances = holder.get("instances")
        if instances is None:
            return
        Path(args.output).write_text(report.to_json(results(args, instances, started, error)))
        print(f"\nwrote {args.output} ({time.time() - started:.0f} s in all)")

    return session.run(args, measure, write, prefix="instances-bench-")


if __name__ == "__main__":
    sys.exit(main())
