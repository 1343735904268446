"""One benchmark run's frame, shared by the scripts: a temporary directory, an embedded PostgreSQL that
must be durable, signals turned into a clean stop, and everything started stopped again whatever happens.

The script's `measure(bench)` does the work; `write(bench, error)` writes what was measured (with the
error, when a step broke). The exit status is 0 when every check passed (whether or not a target was
met), 1 when a check failed or a step broke, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frame import Bench
from plumbing import BenchError, Postgres


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop what was started


def run(
    args: argparse.Namespace,
    measure: Callable[[Bench], None],
    write: Callable[[Bench, str | None], None],
    prefix: str = "ledger-bench-",
) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=args.tmp_dir))
    pg = Postgres(workdir / "pg")
    bench = Bench(args, pg, workdir, nonce=uuid.uuid4().hex[:8])
    status = 0
    try:
        print(
            f"temporary directory: {workdir}; {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        pg.start()
        bench.check_postgres()
        measure(bench)
        write(bench, None)
        if not all(check["ok"] for check in bench.checks):
            print("SOME CHECKS FAILED: see the lines marked FAIL above", file=sys.stderr)
            status = 1
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        write(bench, str(error))
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


def add_common_options(
    parser: argparse.ArgumentParser,
    serve_args_help: str = 'extra options for `ledger serve`, e.g. --serve-args="--workers 2"',
) -> None:
    """The options every script's frame reads (--serve-args is written with `=`)."""
    parser.add_argument("--serve-args", default="", help=serve_args_help)
    parser.add_argument(
        "--ready-timeout", type=float, default=90.0, help="seconds a server may take to be ready"
    )
    parser.add_argument("--tmp-dir", default=None, help="where the temporary PostgreSQL lives (not tmpfs!)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (logs, pgdata)")
