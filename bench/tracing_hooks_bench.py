"""What tracing costs while it is off (issue #15), in CPU time in-process, where a rate measured
over HTTP on a shared machine cannot see a fraction of a microsecond: the outermost HTTP layer
(ledger/api/telemetry.py: request id, metrics, and now the tracing switch) and a writer batch's
step (writer/batch_logging.py) of this tree next to the same of `--baseline` (the code before
tracing), each side in a process of its own, in alternation; then the two hooks that are new
calls (what a write carries to the writer, the writer's batch) on their own.

Usage: python bench/tracing_hooks_bench.py [--baseline COMMIT] [--rounds 6] [--iterations 200000]

It writes bench/tracing_hooks_results.json.

The GET and hot-SKU figures over HTTP (tracing off against the code before it) come from
telemetry_bench.py: `--baseline COMMIT --on-env LEDGER_LOG_FORMAT=text --on-env LEDGER_TRACING=off`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from telemetry_bench import REPO, baseline_commit, extract

LAYER = """
import json, sys, time
sys.path.insert(0, {bench!r})
from telemetry_bench import telemetry_us
from ledger.writer.batch_logging import batch_logged
from ledger.writer.submission import Submission

batch = [Submission([], lambda result: None, "req")]
started = time.process_time()
for _ in range({iterations}):
    with batch_logged(batch):
        pass
step_us = (time.process_time() - started) * 1e6 / {iterations}
print(json.dumps({{**telemetry_us({iterations}), "batch_step_us": round(step_us, 3)}}))
"""


def layer_us(pythonpath: str, iterations: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=pythonpath, LEDGER_TRACING="off")
    code = LAYER.format(bench=str(REPO / "bench"), iterations=iterations)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def hooks_ns(iterations: int) -> dict[str, float]:
    """Nanoseconds of CPU per call of each write-path hook, tracing off."""
    from ledger.writer.batch_tracing import caller_trace_parent, traced
    from ledger.writer.submission import Submission

    batch = [Submission([], lambda result: None, "req")]

    def timed(call: object) -> float:
        started = time.process_time()
        for _ in range(iterations):
            call()  # type: ignore[operator]
        return round((time.process_time() - started) * 1e9 / iterations, 1)

    return {
        "caller_trace_parent_ns": timed(caller_trace_parent),
        "traced_batch_ns": timed(lambda: traced(batch)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default="HEAD~2", help="the commit before tracing (default HEAD~2)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().with_name("tracing_hooks_results.json"))
    )
    args = parser.parse_args()
    commit = baseline_commit(args.baseline)
    with tempfile.TemporaryDirectory(prefix="ledger-tracing-hooks-") as directory:
        baseline = str(extract(commit, Path(directory)))
        sides = {"before": baseline, "tracing_off": str(REPO)}
        rounds = []
        for round_no in range(1, args.rounds + 1):
            order = list(sides) if round_no % 2 else list(reversed(sides))
            measured = {"round": round_no, "load_average": os.getloadavg()}
            for side in order:
                measured[side] = layer_us(sides[side], args.iterations)
            before, off = measured["before"], measured["tracing_off"]
            print(
                f"round {round_no}: CPU µs, HTTP layer (new id / offered id) and a writer batch step: "
                f"before {before['telemetry_new_id_us']} / {before['telemetry_offered_id_us']} and "
                f"{before['batch_step_us']}, tracing off {off['telemetry_new_id_us']} / "
                f"{off['telemetry_offered_id_us']} and {off['batch_step_us']}, "
                f"load {measured['load_average'][0]:.2f}",
                flush=True,
            )
            rounds.append(measured)
    hooks = hooks_ns(args.iterations * 5)
    print(f"write-path hooks, tracing off, CPU ns per call: {hooks}")
    results = {"baseline_commit": commit, "iterations": args.iterations, "rounds": rounds, "hooks_ns": hooks}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
