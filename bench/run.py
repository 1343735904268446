"""The ledger's benchmark: each figure of the issue next to its plain-SQL or plain-FastAPI baseline, one run.

Usage: python bench/run.py [--seconds 10] [--serve-args="--workers 2"] [--only hot,batch,read]
See bench/README.md for what each figure measures and how to read the table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
from figures import Bench
from plumbing import BenchError, Postgres

FIGURES = ("hot", "batch", "read")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each run (default 10)")
    parser.add_argument(
        "--serve-args",
        default="",
        help='extra options for `ledger serve` (and the trivial app), e.g. --serve-args="--workers 2"',
    )
    parser.add_argument("--only", default=",".join(FIGURES), help="figures to run: hot,batch,read")
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
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench baselines")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the asyncio load generator even if wrk exists"
    )
    parser.add_argument("--wrk-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--pgbench-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="unmeasured load before each read run"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=90.0, help="seconds a server may take to be ready"
    )
    parser.add_argument("--tmp-dir", default=None, help="where the temporary PostgreSQL lives (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (logs, pgdata)")
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


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop what was started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.tmp_dir))
    pg = Postgres(workdir / "pg")
    bench = Bench(args, pg, workdir, nonce=uuid.uuid4().hex[:8])
    started = time.time()
    status = 0
    try:
        print(
            f"temporary directory: {workdir}; {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        pg.start()
        bench.check_postgres()
        for round_no in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"\n-- round {round_no} of {args.rounds}", flush=True)
            for name in args.figures:
                bench.run_figure(name)
                report.keep_round(bench, name)
        report.choose_median_rounds(bench)
        results = report.results(args, bench, started)
        report.print_tables(results)
        Path(args.output).write_text(report.to_json(results))
        print(f"\nwrote {args.output} ({time.time() - started:.0f} s in all)")
        if not all(check["ok"] for check in results["checks"]):
            print("SOME CHECKS FAILED: see the lines marked FAIL above", file=sys.stderr)
            status = 1
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        if bench.measured:
            partial = report.results(args, bench, started) | {"error": str(error)}
            Path(args.output).write_text(report.to_json(partial))
            print(f"wrote what was measured before the failure to {args.output}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what was started", file=sys.stderr)
        status = 130
    except SystemExit as stop:
        print(f"\nstopped by a signal ({stop.code}); stopping what was started", file=sys.stderr)
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # cleanup has its own deadlines; let it finish
        bench.stop_servers()
        pg.stop()
        leftovers = bench.kill_leftovers()
        if leftovers:
            print(f"killed {len(leftovers)} leftover process(es): {leftovers}", file=sys.stderr)
        if args.keep_tmp:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
