"""Two ledgers side by side, measured in alternation: the frame of token_bench.py and
telemetry_bench.py, which each compare a ledger with a change against one without it.

Separate runs on this machine drift by 15-40%, more than the 5% such a comparison looks for; so both
ledgers run at once and every round measures each figure on both, the order flipped every round, so
that a slow stretch of the machine falls on both alike. Each side's HTTP CPU per request is kept too:
it drifts less than a rate.

Two servers started alike differ by up to ~5% from one start to the next (memory layout, hash seeds:
measured with callgrind and /proc, bench/README.md), so one pair of servers fixes one such draw for a
whole run: its rounds agree with each other and not with another run's. `--fresh-servers` starts both
sides anew before every round after the first, so that the median is taken over as many draws as
rounds. `--control` starts the second side exactly as the first: the ratios it prints are the bench's
own spread on this machine, which the real comparison's ratios must be read against.

`--paired-draws` goes further: before every round, the first included, both sides start anew with
the same draw, a hash seed (PYTHONHASHSEED) new each round and the address space not randomised
(`setarch -R`). Each round then compares two servers laid out alike but for what the change itself
does, and the median is still taken over a draw per round.

`--one-server` takes the process out of the comparison altogether: one server, whose HTTP process
switches the compared layer off and on before each side's turn (bench/one_server/: a signal, and
the state acknowledged in a file), so both sides are the same process, laid out alike, started once.
`--control` with it measures the off state on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import cputime
import load
from frame import HOT_SKU, READ_SKU, STORE, Bench, receipt

FIGURES = ("read", "hot")


@dataclass(frozen=True)
class Side:
    port: int
    server: Any
    token: str | None = None  # sent with every request to this side
    switch: Callable[[], None] | None = None  # --one-server: puts the server in this side's state


ONE_SERVER_SWITCH = Path(__file__).resolve().parent / "one_server"  # its sitecustomize
# For the server's acknowledgement of a switch: it answers in the event loop's next turn, well
# within this unless the process is stuck.
SWITCH_WAIT_S = 10.0


WARM_UP_SECONDS = 1.0
PAIRED_DRAWS_SEED = 24  # the hash seeds of --paired-draws' rounds come from it: runs repeat them


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fresh-servers",
        action="store_true",
        help="start both sides anew (same databases) before every round after the first",
    )
    parser.add_argument(
        "--paired-draws",
        action="store_true",
        help="start both sides anew before every round with one hash seed and no address randomisation",
    )
    parser.add_argument(
        "--one-server",
        action="store_true",
        help="one server for both sides, the compared layer switched off and on in its process",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="start the second side exactly as the first: the ratios are the bench's own spread",
    )


def one_server_env(what: str, workdir: Path, tree: Path | None = None) -> dict[str, str]:
    """What a server started for --one-server needs in its environment: the switch's
    sitecustomize first on its path (then `tree`, the ledger measured, when given, then the path
    inherited), what it switches (`token` or `telemetry`), and its files."""
    inherited = filter(None, [os.environ.get("PYTHONPATH")])
    path = [str(ONE_SERVER_SWITCH), *([str(tree)] if tree else []), *inherited]
    return {
        "PYTHONPATH": os.pathsep.join(path),
        "LEDGER_BENCH_SWITCH": what,
        "LEDGER_BENCH_SWITCH_PID_FILE": str(workdir / "switch.pid"),
        "LEDGER_BENCH_SWITCH_STATE_FILE": str(workdir / "switch.state"),
    }


def one_server_sides(
    port: int, server: Any, workdir: Path, before: str, after: str, token: str | None, *, control: bool
) -> dict[str, Side]:
    """The two sides of --one-server: `before` switched off, `after` on (off too with --control).
    `token` is sent by the `after` side only, with --control too: the control differs from the
    comparison by the switch alone."""

    def switcher(on: bool) -> Callable[[], None]:
        wanted = "on" if on else "off"

        def switch() -> None:
            state = workdir / "switch.state"
            state.unlink(missing_ok=True)
            pid = int((workdir / "switch.pid").read_text())
            os.kill(pid, signal.SIGUSR2 if on else signal.SIGUSR1)
            deadline = time.monotonic() + SWITCH_WAIT_S
            while not (state.exists() and state.read_text() == wanted):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not switch {wanted} in {SWITCH_WAIT_S} s")
                time.sleep(0.01)

        return switch

    return {
        before: Side(port, server, None, switcher(False)),
        after: Side(port, server, token, switcher(not control)),
    }


def seed(bench: Bench, sides: dict[str, Side]) -> None:
    """The stock each figure draws on (once per server), and a second of reads to warm each side up."""
    seeded: set[int] = set()
    for side in sides.values():
        if side.switch is not None:
            side.switch()
        bench.token = side.token
        if side.port not in seeded:
            bench.post_events(
                side.port, [receipt(f"{bench.nonce}-seed", [(HOT_SKU, 1_000_000_000), (READ_SKU, 1000)])]
            )
            seeded.add(side.port)
        warm_up(bench, side)


def warm_up(bench: Bench, side: Side) -> None:
    load.http_load(side.port, "get", STORE, READ_SKU, 4, WARM_UP_SECONDS, bench.nonce, token=side.token)


def measure_side(bench: Bench, figure: str, side: Side, nonce: str) -> dict[str, Any]:
    """One figure on one side for --seconds: its rate, p99 and HTTP CPU µs per request."""
    args = bench.args
    if figure == "read":
        mode, sku, connections = "get", READ_SKU, args.read_connections
    else:
        mode, sku, connections = "reserve", HOT_SKU, args.clients
    if side.switch is not None:
        side.switch()
    meter = cputime.started(side.server)
    run = load.http_load(
        side.port,
        mode,
        STORE,
        sku,
        connections,
        args.seconds,
        nonce,
        wrk_threads=args.wrk_threads,
        token=side.token,
    )
    micros = cputime.per_event(meter.stop(), run.ok) or {}
    http_us = sum(value for part, value in micros.items() if part.startswith("ledger") and "http" in part)
    if run.other or run.socket_errors:
        bench.check(f"{figure}: every request answered", False, f"{run.other} other, {run.first_other}")
    return {
        "per_s": round(run.per_s, 1),
        "ok": run.ok,
        "p99_ms": run.latency_ms["p99"],
        "http_cpu_us": http_us,
        "cpu_us": micros,  # every part's (postgres, load, the writer, other people's work)
    }


def alternate(
    bench: Bench,
    sides: dict[str, Side],
    before: str,
    after: str,
    start: Callable[[str], Side] | None = None,
    rounds: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """--rounds rounds of every figure on both sides; each round's ratio is after / before. With
    --fresh-servers or --paired-draws, `start(name)` starts that side again on its database before
    each later round (--paired-draws: each round). Each round is appended to `rounds` as it ends
    (given by the caller, it keeps the rounds done if a later one fails)."""
    args = bench.args
    rounds = [] if rounds is None else rounds
    paired = getattr(args, "paired_draws", False)
    fresh = getattr(args, "fresh_servers", False) or paired
    assert not (fresh and getattr(args, "one_server", False)), "--one-server starts one server, once"
    assert start is not None or not fresh, "--fresh-servers and --paired-draws need a way to start a side"
    try:
        _alternate(bench, sides, before, after, start, rounds, fresh=fresh, paired=paired)
    finally:  # later servers of the caller's start as usual
        bench.launch_prefix, bench.launch_env = [], {}
    return rounds


def _alternate(
    bench: Bench,
    sides: dict[str, Side],
    before: str,
    after: str,
    start: Callable[[str], Side] | None,
    rounds: list[dict[str, Any]],
    *,
    fresh: bool,
    paired: bool,
) -> None:
    args = bench.args
    hash_seeds = random.Random(PAIRED_DRAWS_SEED)
    laid_out_alike = no_address_randomisation() if paired else []
    for round_no in range(1, args.rounds + 1):
        order = [before, after] if round_no % 2 else [after, before]
        draw: dict[str, Any] = {}
        if paired:
            draw = {"hash_seed": hash_seeds.randrange(1, 2**32), "address_randomisation": False}
            bench.launch_prefix = laid_out_alike
            bench.launch_env = {"PYTHONHASHSEED": str(draw["hash_seed"])}
        restart = fresh and (round_no > 1 or paired)
        if restart:
            for name in order:  # the side warmed last changes with the order
                bench.stop_server(sides[name].server)
                sides[name] = start(name)  # type: ignore[misc]  # checked by alternate
                warm_up(bench, sides[name])
        measured: dict[str, Any] = {
            "round": round_no,
            "order": order,
            "load_average": os.getloadavg(),
            "fresh_servers": restart,
            **draw,
        }
        for figure in args.figures:
            for name in order:
                nonce = f"{bench.nonce}-{name}-{round_no}"  # reservation ids are never reused
                measured[f"{figure}_{name}"] = measure_side(bench, figure, sides[name], nonce)
            b, a = measured[f"{figure}_{before}"], measured[f"{figure}_{after}"]
            measured[f"{figure}_ratio"] = round(a["per_s"] / b["per_s"], 3) if b["per_s"] else None
            print(
                f"round {round_no} {figure}: {before} {b['per_s']:,.0f}/s "
                f"({b['http_cpu_us']:.0f} µs http CPU), {after} {a['per_s']:,.0f}/s "
                f"({a['http_cpu_us']:.0f} µs), ratio {measured[f'{figure}_ratio']}, "
                f"load {measured['load_average'][0]:.2f}",
                flush=True,
            )
        rounds.append(measured)


def no_address_randomisation() -> list[str]:
    """The command that runs another with its address space laid out the same every time."""
    setarch = shutil.which("setarch")
    if setarch is None:
        raise RuntimeError("--paired-draws needs setarch (util-linux)")
    return [setarch, platform.machine(), "-R"]


def summary(rounds: list[dict[str, Any]], figures: list[str], before: str, after: str) -> dict[str, Any]:
    """Per figure: every round's ratio, their median, the ratio of the sums, the median CPU per request."""
    summaries = {}
    for figure in figures:
        done = [r for r in rounds if r.get(f"{figure}_ratio") is not None]
        if not done:
            continue
        before_ok = sum(r[f"{figure}_{before}"]["ok"] for r in done)
        after_ok = sum(r[f"{figure}_{after}"]["ok"] for r in done)
        summaries[figure] = {
            "ratios": [r[f"{figure}_ratio"] for r in done],
            "median_ratio": median(r[f"{figure}_ratio"] for r in done),
            "ratio_of_sums": round(after_ok / before_ok, 3) if before_ok else None,
            f"http_cpu_us_{before}_median": median(r[f"{figure}_{before}"]["http_cpu_us"] for r in done),
            f"http_cpu_us_{after}_median": median(r[f"{figure}_{after}"]["http_cpu_us"] for r in done),
        }
        print(f"{figure}: {json.dumps(summaries[figure])}")
    return summaries
