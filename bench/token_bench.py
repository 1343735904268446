"""What access control costs (issue #11): the ledger with a token on every request next to the same
ledger open, measured in alternation so that the machine's drift falls on both alike.

Usage: python bench/token_bench.py [--rounds 6] [--seconds 5] [--fresh-servers] [--control]

One embedded PostgreSQL, two databases, two `ledger serve` started side by side: one open (no token
exists), one closed (an admin token created before it starts; every request carries it). Each round
measures the GET figure and the hot-SKU reservation figure on both, the order flipped every round
(open first, then closed first), so a slow stretch of the machine does not favour either. It prints
every round's ratio (closed / open), the ratio of the sums, and the HTTP processes' CPU µs per request
on each side, which drifts less than a rate. It also times one token check in this process: the gate
(ledger/api/gate.py) around an app that does nothing, with and without a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alternation
import cputime
import session
from alternation import FIGURES, Side
from frame import READ_SKU, STORE, Bench

IDLE_SECONDS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each measures both sides (default 6)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time of each side (default 5)")
    parser.add_argument("--clients", type=int, default=32, help="connections of the hot-SKU figure")
    parser.add_argument("--read-connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", default=",".join(FIGURES), help="figures: read,hot")
    parser.add_argument("--check-iterations", type=int, default=200_000, help="token checks timed in-process")
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("token_results.json")))
    alternation.add_options(parser)
    session.add_common_options(parser)
    args = parser.parse_args(argv)
    args.serve_argv = __import__("shlex").split(args.serve_args)
    args.figures = [name.strip() for name in args.only.split(",") if name.strip()]
    if set(args.figures) - set(FIGURES) or args.rounds < 1 or args.seconds <= 0:
        parser.error("--only takes read,hot; --rounds >= 1; --seconds > 0")
    args.token = False  # Bench.start_ledger reads it; the closed side is started by hand below
    if args.one_server and (args.fresh_servers or args.paired_draws):
        parser.error("--one-server runs this tree in one server, started once: no new servers each round")
    return args


def gate_check_us(iterations: int) -> dict[str, float]:
    """µs per request through the gate, open (no token exists) and with a valid token; µs of one
    token check, the first time a header value is seen and once it is remembered."""
    from ledger.access.book import TokenBook, _Known
    from ledger.access.limiter import RateLimiter
    from ledger.access.scopes import Grant, Role
    from ledger.access.tokens import new_token, token_digest
    from ledger.api.gate import AuthGate

    async def nothing(scope: Any, receive: Any, send: Any) -> None:
        return None

    token = new_token()
    book = TokenBook(database=None, refresh_interval_s=0.5, last_use_flush_s=1.0)  # type: ignore[arg-type]
    grant = Grant(name="bench", role=Role.ADMIN)
    digest = token_digest(token)
    scope_headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]

    def timed(gate: AuthGate) -> float:
        async def run() -> float:
            scope = {"type": "http", "path": f"/v1/stores/{STORE}/stock/{READ_SKU}", "headers": scope_headers}
            started = time.perf_counter()
            for _ in range(iterations):
                await gate(scope, None, None)  # type: ignore[arg-type]
            return (time.perf_counter() - started) * 1e6 / iterations

        return asyncio.run(run())

    open_gate = AuthGate(nothing, book, RateLimiter(), required=False, metrics_open=True)
    open_us = timed(open_gate)
    book._by_digest = {digest: _Known(digest, grant)}
    book.any_tokens = True
    closed_us = timed(AuthGate(nothing, book, RateLimiter(), required=False, metrics_open=True))
    started = time.perf_counter()
    for _ in range(iterations):
        book.grant_for(token)
    grant_for_us = (time.perf_counter() - started) * 1e6 / iterations
    header = scope_headers[1][1]
    started = time.perf_counter()
    for _ in range(iterations):
        book.grant_for_header(header)
    remembered_us = (time.perf_counter() - started) * 1e6 / iterations
    return {
        "gate_open_us": round(open_us, 2),
        "gate_with_token_us": round(closed_us, 2),
        "token_check_first_us": round(grant_for_us, 2),  # parse, SHA-256, lookup, compare
        "token_check_remembered_us": round(remembered_us, 2),  # the header value seen before
    }


def idle_cpu(sides: dict[str, Side]) -> dict[str, dict[str, float]]:
    """Each side's CPU while nothing is asked of it, ms per s: at once for separate servers; one after
    the other, each in its own state, for --one-server's one."""

    def ms_per_s(meter: Any) -> dict[str, float]:
        return {
            part: round(seconds * 1000 / IDLE_SECONDS, 2)
            for part, seconds in (meter.stop() or {}).items()
            if part.startswith("ledger")
        }

    if all(side.switch is None for side in sides.values()):
        meters = {name: cputime.started(side.server) for name, side in sides.items()}
        time.sleep(IDLE_SECONDS)
        return {name: ms_per_s(meter) for name, meter in meters.items()}
    idle = {}
    for name, side in sides.items():
        assert side.switch is not None
        side.switch()
        meter = cputime.started(side.server)
        time.sleep(IDLE_SECONDS)
        idle[name] = ms_per_s(meter)
    return idle


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results: dict[str, Any] = {"settings": vars(args) | {"serve_argv": args.serve_argv}, "rounds": []}

    def measure(bench: Bench) -> None:
        results["gate"] = gate_check_us(args.check_iterations)
        print(f"token check in-process: {results['gate']}", flush=True)
        # Names of one length, so that the two servers' environments are too (--paired-draws).
        databases = {"open": bench.database("ledger_open"), "token": bench.database("ledger_shut")}

        tokens: dict[str, str | None] = {}

        def start(name: str) -> Side:
            # The token is made at the side's first start (--control: none, the side stays open)
            # and kept in its database: a later start (--fresh-servers) serves it again.
            first = name not in tokens
            bench.args.token = first and name == "token" and not args.control
            server, port = bench.start_ledger(databases[name])
            if first:
                tokens[name] = bench.token
            bench.args.token = False
            return Side(port, server, tokens[name])

        if args.one_server:  # the closed side's server; its tokens hidden for the open side
            bench.args.token = True
            bench.launch_env = alternation.one_server_env("token", bench.workdir)
            try:
                server, port = bench.start_ledger(databases["token"])
            finally:
                bench.launch_env, bench.args.token = {}, False
            sides = alternation.one_server_sides(
                port, server, bench.workdir, "open", "token", bench.token, control=args.control
            )
        else:
            sides = {name: start(name) for name in databases}
        alternation.seed(bench, sides)
        # What each side spends doing nothing (its threads that keep the tokens and the cache current).
        results["idle_cpu_ms_per_s"] = idle_cpu(sides)
        print(f"idle CPU, ms per s: {results['idle_cpu_ms_per_s']}", flush=True)
        results["rounds"] = alternation.alternate(bench, sides, "open", "token", start, results["rounds"])

    def write(bench: Bench, error: str | None) -> None:
        results["summary"] = alternation.summary(results["rounds"], args.figures, "open", "token")
        results["checks"] = bench.checks
        results["error"] = error
        results["elapsed_s"] = round(time.time() - started)
        Path(args.output).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")

    return session.run(args, measure, write, prefix="ledger-token-bench-")


if __name__ == "__main__":
    sys.exit(main())
