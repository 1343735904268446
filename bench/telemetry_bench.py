"""What the logs and metrics cost (issue #15): the ledger with JSON logs, request ids and metrics
next to the same ledger without them, measured in alternation so that the machine's drift falls on
both alike.

Usage: python bench/telemetry_bench.py [--rounds 6] [--seconds 5] [--on-env LEDGER_ACCESS_LOG=on]
       [--fresh-servers] [--control]

Request ids and the HTTP metrics have no switch: they are always on. So the "off" side runs this
tree with its outermost HTTP layer (ledger/api/telemetry.py: request ids, HTTP metrics, the access
log) replaced by a pass-through, through a `sitecustomize` put first on that side's PYTHONPATH
(bench/telemetry_off/), and text logs; `--baseline COMMIT` runs another commit's ledger instead,
extracted from git (`first`: the parent of the commit that added ledger/telemetry, which lacks
everything added since, not only the telemetry). The "on" side runs this tree with
LEDGER_LOG_FORMAT=json (and whatever `--on-env` adds; the access log is off by default, and writes
one line per request when on). The writer's own metrics (a few per batch) are on in both. One
embedded PostgreSQL, two databases, two `ledger serve` started side by side. Each round measures
the GET figure and the hot-SKU reservation figure on both, the order flipped every round; it prints
every round's ratio (on / off), the ratio of the sums, and the HTTP processes' CPU µs per request on
each side.
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

import alternation
import session
from alternation import Side
from baseline_tree import extract, git, resolve_commit
from frame import READ_SKU, STORE, Bench, ledger_command, ledger_metrics
from plumbing import http_json
from token_bench import IDLE_SECONDS

FIGURES = ("read", "hot")
REPO = Path(__file__).resolve().parents[1]
# The off side's `sitecustomize`: this tree with its request telemetry replaced by a pass-through.
TELEMETRY_OFF = Path(__file__).resolve().parent / "telemetry_off"
SIDES = ("off", "on")


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
    parser.add_argument(
        "--baseline",
        default=None,
        help="git commit of the off side, or `first` for the parent of the commit that added "
        "ledger/telemetry (default: this tree without its request telemetry, see above)",
    )
    parser.add_argument(
        "--on-env",
        action="append",
        default=[],
        help="KEY=VALUE for the on side, besides LEDGER_LOG_FORMAT=json",
    )
    parser.add_argument("--check-iterations", type=int, default=200_000, help="requests timed in-process")
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("telemetry_results.json")))
    alternation.add_options(parser)
    session.add_common_options(parser)
    args = parser.parse_args(argv)
    args.serve_argv = __import__("shlex").split(args.serve_args)
    args.figures = [name.strip() for name in args.only.split(",") if name.strip()]
    if set(args.figures) - set(FIGURES) or args.rounds < 1 or args.seconds <= 0:
        parser.error("--only takes read,hot; --rounds >= 1; --seconds > 0")
    if any("=" not in pair for pair in args.on_env):
        parser.error("--on-env takes KEY=VALUE")
    args.token = False
    if args.one_server and (args.fresh_servers or args.paired_draws or args.baseline):
        parser.error("--one-server runs this tree in one server, started once: no --baseline or new servers")
    return args


def telemetry_us(iterations: int) -> dict[str, float]:
    """CPU µs per request of the outermost layer (ledger/api/telemetry.py: request id, metrics)
    around an app that answers at once, without and with an offered X-Request-ID, and of the app
    alone; CPU time (process_time), so that other processes on the machine do not count."""
    import asyncio

    from ledger.api.http_metrics import HttpMetrics
    from ledger.api.telemetry import ROUTE_KEY, RequestTelemetry

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        scope[ROUTE_KEY] = "/v1/stores/{store}/stock/{sku}"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def nowhere(message: Any) -> None:
        return None

    def timed(app: Any, headers: list[tuple[bytes, bytes]]) -> float:
        async def run() -> float:
            started = time.process_time()
            for _ in range(iterations):
                scope = {"type": "http", "method": "GET", "path": f"/v1/stores/{STORE}/stock/{READ_SKU}"}
                scope["headers"] = headers
                await app(scope, None, nowhere)
            return (time.process_time() - started) * 1e6 / iterations

        return asyncio.run(run())

    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    wrapped = RequestTelemetry(answer, [], HttpMetrics(), access_log_on=False)
    bare = timed(answer, headers)
    return {
        "app_alone_us": round(bare, 2),
        "telemetry_new_id_us": round(timed(wrapped, headers) - bare, 2),
        "telemetry_offered_id_us": round(
            timed(wrapped, [*headers, (b"x-request-id", b"till-7:42")]) - bare, 2
        ),
    }


def baseline_commit(given: str | None) -> str | None:
    """The commit of the off side, or None for this tree without its request telemetry."""
    if given == "first":  # the ledger before it had any: the same code only while nothing else moved
        added = git("log", "--diff-filter=A", "--format=%H", "--", "ledger/telemetry/__init__.py").split()
        return resolve_commit(f"{added[-1].decode()}^")
    return resolve_commit(given) if given else None


def start_side(
    bench: Bench,
    side: str,
    database: str,
    baseline: Path,
    on_env: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> tuple[Any, int]:
    env = dict(os.environ, LEDGER_DATABASE_URL=bench.pg.url(database), LEDGER_HTTP_HOST="127.0.0.1")
    env = {key: value for key, value in env.items() if key not in ("LEDGER_LOG_FORMAT", "LEDGER_ACCESS_LOG")}
    if side == "off":
        first = [str(TELEMETRY_OFF), str(REPO)] if baseline == TELEMETRY_OFF else [str(baseline)]
        env["PYTHONPATH"] = os.pathsep.join([*first, *filter(None, [os.environ.get("PYTHONPATH")])])
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.update({"LEDGER_LOG_FORMAT": "json", **on_env})
    env.update(extra_env or {})
    return bench.start_server(f"ledger-{database}", [*ledger_command(), "serve"], env)


def check_switch(bench: Bench, sides: dict[str, Side], *, control: bool) -> None:
    """--one-server: requests are counted while the layer is on, and not while it is off (with
    --control, on neither side)."""

    def counted_after_three_gets(side: Side) -> float:
        def answered() -> float:
            samples = ledger_metrics(side.port).items()
            return sum(value for name, value in samples if name.startswith("ledger_http_requests_total{"))

        assert side.switch is not None
        side.switch()
        before = answered()
        for _ in range(3):
            http_json(side.port, "GET", f"/v1/stores/{STORE}/stock/{READ_SKU}")
        return answered() - before

    on, off = counted_after_three_gets(sides["on"]), counted_after_three_gets(sides["off"])
    if control:
        bench.check("both sides switched off: the layer counts no request", on == off == 0, f"{on}, {off}")
    else:
        bench.check("switched on, the layer counts requests; off, none", on >= 3 and off == 0, f"{on}, {off}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    commit = baseline_commit(args.baseline)
    on_env = dict(pair.split("=", 1) for pair in args.on_env)
    results: dict[str, Any] = {
        "settings": vars(args) | {"serve_argv": args.serve_argv, "baseline_commit": commit, "on_env": on_env},
        "rounds": [],
    }

    def measure(bench: Bench) -> None:
        results["telemetry_layer"] = telemetry_us(args.check_iterations)
        print(f"the telemetry layer in-process, CPU µs per request: {results['telemetry_layer']}", flush=True)
        baseline = extract(commit, bench.workdir) if commit else TELEMETRY_OFF
        off = f"the ledger at {commit[:12]}" if commit else "this tree without its request telemetry"
        print(f"off side: {off}; on side: this tree with {on_env or 'JSON logs'}")
        databases = {name: bench.database(f"ledger_{name}") for name in SIDES}

        def start(name: str) -> Side:
            configuration = "off" if args.control else name  # --control: both sides as the off side
            server, port = start_side(bench, configuration, databases[name], baseline, on_env)
            return Side(port, server)

        if args.one_server:  # the on side's server; its layer switched off for the off side
            switch_env = alternation.one_server_env("telemetry", bench.workdir, REPO)
            server, port = start_side(bench, "on", databases["on"], baseline, on_env, switch_env)
            sides = alternation.one_server_sides(
                port, server, bench.workdir, "off", "on", None, control=args.control
            )
            alternation.seed(bench, sides)
            check_switch(bench, sides, control=args.control)
        else:
            sides = {name: start(name) for name in SIDES}
            alternation.seed(bench, sides)
        if not args.control:
            _, metrics = http_json(sides["on"].port, "GET", "/metrics")
            bench.check("the on side serves the HTTP metrics", "ledger_http_requests_total" in str(metrics))
        if commit is None and not args.control and not args.one_server:
            _, off_metrics = http_json(sides["off"].port, "GET", "/metrics")
            bench.check(
                "the off side counts no HTTP request (its request telemetry is a pass-through)",
                "ledger_http_requests_total{" not in str(off_metrics),
                str(off_metrics)[:200] if "ledger_http_requests_total{" in str(off_metrics) else "",
            )
        time.sleep(IDLE_SECONDS)
        results["rounds"] = alternation.alternate(bench, sides, "off", "on", start, results["rounds"])

    def write(bench: Bench, error: str | None) -> None:
        results["summary"] = alternation.summary(results["rounds"], args.figures, "off", "on")
        results["checks"] = bench.checks
        results["error"] = error
        results["elapsed_s"] = round(time.time() - started)
        Path(args.output).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")

    return session.run(args, measure, write, prefix="ledger-telemetry-bench-")


if __name__ == "__main__":
    sys.exit(main())
