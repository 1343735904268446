"""The ledger's benchmark: each figure of the issue next to its plain-SQL or plain-FastAPI baseline, one run.

Usage: python bench/run.py [--seconds 10] [--serve-args="--workers 2"] [--only hot,batch,read]
See bench/README.md for what each figure measures and how to read the table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures
import report
import session
from frame import Bench

FIGURES = ("hot", "batch", "read", "hot_policy")
DEFAULT_FIGURES = ("hot", "batch", "read")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each run (default 10)")
    parser.add_argument(
        "--only", default=",".join(DEFAULT_FIGURES), help="figures to run: hot,batch,read,hot_policy"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the write figures")
    parser.add_argument("--read-connections", type=int, default=16)
    parser.add_argument("--skus", type=int, default=10_000, help="SKUs of the batch figure")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per POST /v1/events")
    parser.add_argument("--batch-senders", type=int, default=4, help="concurrent batch senders")
    parser.add_argument(
        "--process-baseline",
        action="store_true",
        help="also run the Python baseline as separate processes (one connection each)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each figure this many times, its baseline and the ledger back to back each time; "
        "the table shows the round with the median ratio and lists every round's",
    )
    parser.add_argument(
        "--token",
        action="store_true",
        help="create an admin token in each ledger database before `ledger serve` starts (access control "
        "on) and send `Authorization: Bearer <token>` with every request to the ledger; baselines unchanged",
    )
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench baselines")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the asyncio load generator even if wrk exists"
    )
    parser.add_argument("--wrk-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--pgbench-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="unmeasured load before each read run"
    )
    session.add_common_options(
        parser,
        'extra options for `ledger serve` (and the trivial app), e.g. --serve-args="--workers 2"',
    )
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("results.json")))
    args = parser.parse_args(argv)
    args.serve_argv = shlex.split(args.serve_args)
    args.figures = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.figures) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(FIGURES)}")
    if args.seconds <= 0 or args.clients < 1 or args.batch_senders < 1 or not 1 <= args.batch_size <= 1000:
        parser.error("--seconds must be > 0, --clients and --batch-senders >= 1, --batch-size 1..1000")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()

    def measure(bench: Bench) -> None:
        for round_no in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"\n-- round {round_no} of {args.rounds}", flush=True)
            for name in args.figures:
                figures.run_figure(bench, name)
                report.keep_round(bench, name)
        report.choose_median_rounds(bench)

    def write(bench: Bench, error: str | None) -> None:
        if error is not None:
            if bench.measured:
                partial = report.results(args, bench, started) | {"error": error}
                Path(args.output).write_text(report.to_json(partial))
                print(f"wrote what was measured before the failure to {args.output}", file=sys.stderr)
            return
        results = report.results(args, bench, started)
        report.print_tables(results)
        Path(args.output).write_text(report.to_json(results))
        print(f"\nwrote {args.output} ({time.time() - started:.0f} s in all)")

    return session.run(args, measure, write)


if __name__ == "__main__":
    sys.exit(main())
