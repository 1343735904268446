"""The embedded default's write rate as its log grows: `ledger serve` on SQLite, arrays of 1,000
reservations POSTed by 2 senders into a fresh ledger until it holds `--arrays` thousand events,
the rate quoted for every 20,000 of them, so that a cost that grows with the tables shows as a
falling line. It is not a test: it asserts nothing about speed.

    python bench/sqlite_growth_bench.py                                # this tree, 200,000 events, 2 rounds
    python bench/sqlite_growth_bench.py --baseline 8be1eec~2 --rounds 2  # beside the code of a commit

With `--baseline`, each round runs both trees on fresh ledgers, the order turned every round (this
machine drifts by 15-40% between runs). Checks (a failed one makes the exit status 1): every event
of every array answered `accepted`, and the SKUs' reserved units summed over the API equal them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from baseline_tree import extract, resolve_commit
from load import dumps, loads, reservation_batch
from plumbing import BenchError, Server, free_port, wait_ready

STORE = "store-1"
SKUS = 10_000
ARRAY_SIZE = 1000
SENDERS = 2
SLICE_EVENTS = 20_000  # the rate is quoted for each slice of this many events
REQUEST_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0


def _post(connection: http.client.HTTPConnection, body: bytes) -> list[dict[str, Any]]:
    connection.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    if response.status != 200:
        raise BenchError(f"POST /v1/events answered {response.status}: {raw[:300]!r}")
    results: list[dict[str, Any]] = loads(raw)["results"]
    return results


def _seed(port: int, skus: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    for start in range(0, len(skus), ARRAY_SIZE):
        receipts = [
            {
                "specversion": "1.0",
                "id": f"seed-{n}",
                "source": "bench/seed",
                "type": "stock.receipt",
                "time": "2026-12-06T00:00:00Z",
                "subject": STORE,
                "data": {"lines": [{"sku": skus[n], "qty": 1_000_000}]},
            }
            for n in range(start, min(start + ARRAY_SIZE, len(skus)))
        ]
        _post(connection, dumps(receipts))
    connection.close()


def _reserved_sum(port: int, skus: list[str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    total = 0
    for start in range(0, len(skus), 100):
        query = "&".join(f"sku={sku}" for sku in skus[start : start + 100])
        connection.request("GET", f"/v1/stores/{STORE}/stock?{query}")
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise BenchError(f"reading levels answered {response.status}: {raw[:300]!r}")
        total += sum(item["reserved"] for item in loads(raw)["items"])
    connection.close()
    return total


def _send(port: int, bodies: list[bytes]) -> tuple[list[int], float, dict[str, int]]:
    """Every array sent by SENDERS connections, each next array to whichever is free: the rate of
    each slice of SLICE_EVENTS, the whole time, and the outcomes counted."""
    lock = threading.Lock()
    next_array = [0]
    answered: list[float] = []
    outcomes: dict[str, int] = {}
    failures: list[str] = []

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        try:
            while True:
                with lock:
                    n = next_array[0]
                    next_array[0] += 1
                if n >= len(bodies):
                    return
                results = _post(connection, bodies[n])
                with lock:
                    answered.append(time.perf_counter())
                    for result in results:
                        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise BenchError(f"a sender failed: {failures[0]}")
    answered.sort()
    per_slice = SLICE_EVENTS // ARRAY_SIZE
    rates, previous = [], started
    for end in range(per_slice, len(bodies) + 1, per_slice):
        rates.append(round(SLICE_EVENTS / (answered[end - 1] - previous)))
        previous = answered[end - 1]
    return rates, answered[-1] - started, outcomes


def run_side(tree: Path | None, arrays: int, workdir: Path, seed: int) -> dict[str, Any]:
    """One fresh ledger on `tree` (None: this checkout): the rate of each slice, and the checks."""
    directory = Path(tempfile.mkdtemp(prefix="side-", dir=workdir))
    port = free_port()
    env = dict(
        os.environ, LEDGER_DATABASE_URL=f"sqlite:///{directory / 'ledger.db'}", LEDGER_LOG_LEVEL="WARNING"
    )
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    ledger = str(Path(sys.executable).with_name("ledger"))
    server = Server("ledger", [ledger, "serve", "--port", str(port)], env, directory / "serve.log")
    server.start()
    try:
        wait_ready(server, port, "/readyz", READY_TIMEOUT_S)
        skus = [f"SKU-{n}" for n in range(SKUS)]
        _seed(port, skus)
        chooser = random.Random(seed)
        bodies = [reservation_batch(STORE, skus, chooser, f"a{n}", ARRAY_SIZE) for n in range(arrays)]
        rates, total_s, outcomes = _send(port, bodies)
        accepted = outcomes.get("accepted", 0)
        reserved = _reserved_sum(port, skus)
        return {
            "events_per_s_by_slice": rates,
            "events_per_s": round(arrays * ARRAY_SIZE / total_s),
            "outcomes": outcomes,
            "checks": {
                "every event accepted": accepted == arrays * ARRAY_SIZE,
                "reserved equals the accepted": reserved == accepted,
            },
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arrays", type=int, default=200, help="arrays of 1,000 events per ledger (200)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="a commit whose code runs beside this tree's")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("sqlite_growth_results.json"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.arrays < SLICE_EVENTS // ARRAY_SIZE:
        parser.error(f"--arrays must be at least {SLICE_EVENTS // ARRAY_SIZE}")
    with tempfile.TemporaryDirectory(prefix="ledger-sqlite-growth-") as tmp:
        workdir = Path(tmp)
        sides: dict[str, Path | None] = {"this tree": None}
        if args.baseline:
            commit = resolve_commit(args.baseline)
            sides[f"baseline {commit[:7]}"] = extract(commit, workdir)
        rounds: list[dict[str, Any]] = []
        ok = True
        for number in range(1, args.rounds + 1):
            order = list(sides) if number % 2 else list(reversed(sides))
            measured: dict[str, Any] = {"load_average": os.getloadavg()}
            for name in order:
                side = run_side(sides[name], args.arrays, workdir, args.seed)
                measured[name] = side
                ok = ok and all(side["checks"].values())
                print(
                    f"round {number} {name}: {side['events_per_s']:,} events/s in all; by "
                    f"{SLICE_EVENTS:,}: {', '.join(f'{rate:,}' for rate in side['events_per_s_by_slice'])}; "
                    f"checks {'ok' if all(side['checks'].values()) else side['checks']}",
                    flush=True,
                )
            rounds.append(measured)
    args.output.write_text(json.dumps({"arrays": args.arrays, "rounds": rounds}, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
