"""What sourcing costs (issue #12, CONTRACT §6): how fast the search answers, and sourcing with
`reserve` next to plain reservations in the same run.

Usage: python bench/sourcing_bench.py [--rounds 3] [--seconds 10] [--clients 32]

1. **The search alone** (in this process, no I/O): `ledger.domain.sourcing.choose` over 50 lines and
   100 candidate stores, in three shapes: the first store that serves alone is the 100th; no store
   serves alone and three are needed; nothing fits within max_stores=5 and every branch must be cut
   (the search's worst shape within its step bound). The issue's target: within 50 ms.
2. **The answer over HTTP**: `POST /v1/sourcing` with 50 lines over 100 candidate stores, asked
   only and with `reserve`, one request at a time: p50, p99, max.
3. **The throughput figure**: on two fresh ledgers side by side, 20 stores holding 30 SKUs (each store
   lacks a third of them, so an order often needs two stores), 32 connections sending for
   `--seconds`: sourcing with `reserve` (3-line orders, the 20 stores as candidates in an order of
   preference that turns with every request) on one, plain per-store reservations of 3-line orders
   without any policy on the other. The order of the two flips every round: what sourcing costs
   against reserving where the caller already knows the store; sourcing's p99 is quoted beside it.
   With `--policies`, a third ledger runs the same sourcing requests as `"channel": "online"`, where
   every store's default policy (`*`) holds a safety stock of 2 and an online quota of 30%: the
   issue's figure, sourcing with policies next to the same without them (target: at least 0.9x).
   The sides' orders then run through all six, so that each side follows each other side as often
   as it precedes it: `--rounds` is then a multiple of 6 (6 by default).

Checks: every request answered 200/201; on each side the levels' reserved units equal what the open
reservations hold, and no level is reserved beyond its on_hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cputime
import load
import session
from figures import HOT_POLICY
from frame import Bench, receipt
from plumbing import BenchError, http_json

STORES = 20
SKUS = 30
SEED_UNITS = 100_000_000  # far more than a run reserves: nothing is refused
SEARCH_LINES = 50
SEARCH_CANDIDATES = 100
SEARCH_REPEATS = 50
SOURCING_MODES = ("sourcing", "policies")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3; with --policies 6")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--http-requests", type=int, default=200, help="sequential requests of the HTTP answer time"
    )
    parser.add_argument(
        "--policies",
        action="store_true",
        help="a third side: the same sourcing, online, on stores with a safety stock and an online quota",
    )
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name("sourcing_results.json")))
    session.add_common_options(parser)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (6 if args.policies else 3)
    if args.policies and args.rounds % 6:
        parser.error("--policies runs the sides in six orders: --rounds must be a multiple of 6")
    args.serve_argv = __import__("shlex").split(args.serve_args)
    args.token = False
    return args


# -- 1. the search alone -----------------------------------------------------------------------------


def search_shapes() -> dict[str, tuple[Any, ...]]:
    """(lines, candidates, max_stores, figures) for each shape."""
    from ledger.domain.model import Line

    lines = tuple(Line(f"SKU-{n:02d}", 5) for n in range(SEARCH_LINES))
    candidates = tuple(f"store-{n:03d}" for n in range(SEARCH_CANDIDATES))
    last_serves: dict[tuple[str, str], int] = {}
    three_needed: dict[tuple[str, str], int] = {}
    nothing_fits: dict[tuple[str, str], int] = {}
    for index, store in enumerate(candidates):
        for number, line in enumerate(lines):
            # Every store lacks one line but the last, which holds them all.
            last_serves[(store, line.sku)] = (
                9 if index == SEARCH_CANDIDATES - 1 or number != index % SEARCH_LINES else 0
            )
            # Each store holds 2 of each line: three stores together hold enough (5 <= 6).
            three_needed[(store, line.sku)] = 2
            # Each store holds one line only: 5 stores never cover 50 lines.
            nothing_fits[(store, line.sku)] = 9 if number == index % SEARCH_LINES else 0
    return {
        "first_alone_is_the_100th": (lines, candidates, 3, last_serves),
        "three_stores_needed": (lines, candidates, 3, three_needed),
        "nothing_fits_max_stores_5": (lines, candidates, 5, nothing_fits),
    }


def time_search(steps_max: int) -> dict[str, Any]:
    from ledger.domain.sourcing import SearchTooLong, choose

    results: dict[str, Any] = {}
    for name, (lines, candidates, max_stores, table) in search_shapes().items():
        timings = []
        outcome = ""
        for _ in range(SEARCH_REPEATS):
            began = time.perf_counter()
            try:
                chosen = choose(lines, candidates, max_stores, lambda s, k, t=table: t[(s, k)], steps_max)
                outcome = type(chosen).__name__
            except SearchTooLong:
                outcome = "SearchTooLong"
            timings.append(time.perf_counter() - began)
        results[name] = {"outcome": outcome, **load.latency_summary_ms(timings)}
        print(
            f"  search {name}: {outcome}, p50 {results[name]['p50']:.2f} ms, "
            f"max {results[name]['max']:.2f} ms"
        )
    return results


# -- 2. the answer over HTTP -------------------------------------------------------------------------


def time_http_answers(bench: Bench, requests: int) -> dict[str, Any]:
    database = bench.database("ledger_search")
    server, port = bench.start_ledger(database)
    try:
        lines, candidates, _, table = search_shapes()["first_alone_is_the_100th"]
        events = []
        for store in candidates:
            held = [(line.sku, table[(store, line.sku)]) for line in lines if table[(store, line.sku)]]
            events.append(receipt(f"{bench.nonce}-search-{store}", held, store=store))
        bench.post_events(port, events)
        order = [{"sku": line.sku, "qty": 1} for line in lines]
        body: dict[str, Any] = {"lines": order, "stores": list(candidates), "max_stores": 3}
        results = {}
        for variant in ("ask", "reserve"):
            timings = []
            for number in range(requests):
                if variant == "reserve":
                    body["reserve"] = {"reservation_id": f"{bench.nonce}-search-{number}"}
                began = time.perf_counter()
                status, answer = http_json(port, "POST", "/v1/sourcing", body)
                timings.append(time.perf_counter() - began)
                if status != 200:
                    raise BenchError(f"sourcing answered {status}: {str(answer)[:300]}")
            results[variant] = load.latency_summary_ms(timings)
            shown = results[variant]
            print(
                f"  HTTP {variant}, 50 lines over 100 stores: p50 {shown['p50']:.1f} ms, "
                f"p99 {shown['p99']:.1f} ms"
            )
        return results
    finally:
        bench.stop_server(server)


# -- 3. the throughput figure ------------------------------------------------------------------------


def stores() -> list[str]:
    return [f"store-{n:02d}" for n in range(STORES)]


def holds(store_index: int, sku_index: int) -> bool:
    return (sku_index + store_index) % 3 != 0


def seed(bench: Bench, port: int, *, policies: bool) -> None:
    events = []
    for index, store in enumerate(stores()):
        lines = [(f"SKU-{k:02d}", SEED_UNITS) for k in range(SKUS) if holds(index, k)]
        events.append(receipt(f"{bench.nonce}-seed-{store}", lines, store=store))
    bench.post_events(port, events)
    for store in stores() if policies else ():
        # The hot-SKU figure's policy, as every store's default (CONTRACT §6); its quota (30% of
        # SEED_UNITS) is far above what a run reserves, so nothing is refused.
        status, body = http_json(port, "PUT", f"/v1/stores/{store}/policies/*", HOT_POLICY)
        if status != 200:
            raise BenchError(f"setting {store}'s policy failed: {status} {str(body)[:500]}")


def request_maker(mode: str, port: int, nonce: str) -> Any:
    chooser = random.Random(12)
    sequence = iter(range(1, 1 << 62))
    host = f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    all_stores = stores()

    def make_request() -> bytes:
        number = next(sequence)
        if mode in SOURCING_MODES:
            skus = chooser.sample(range(SKUS), 3)
            turn = number % STORES
            body: dict[str, Any] = {
                "lines": [{"sku": f"SKU-{k:02d}", "qty": chooser.randint(1, 3)} for k in skus],
                "stores": all_stores[turn:] + all_stores[:turn],
                "reserve": {"reservation_id": f"{nonce}-s-{number}"},
            }
            if mode == "policies":
                body["channel"] = "online"
            path = "/v1/sourcing"
        else:
            index = chooser.randrange(STORES)
            held = [k for k in range(SKUS) if holds(index, k)]
            skus = chooser.sample(held, 3)
            body = {
                "reservation_id": f"{nonce}-p-{number}",
                "lines": [{"sku": f"SKU-{k:02d}", "qty": chooser.randint(1, 3)} for k in skus],
            }
            path = f"/v1/stores/{all_stores[index]}/reservations"
        payload = json.dumps(body).encode()
        return f"POST {path} HTTP/1.1\r\n{host}Content-Length: {len(payload)}\r\n\r\n".encode() + payload

    return make_request


async def drive(port: int, mode: str, clients: int, seconds: float, nonce: str) -> load.HttpRun:
    tally = load._Tally()
    make_request = request_maker(mode, port, nonce)
    began = time.monotonic()
    deadline = began + seconds
    expected = 200 if mode in SOURCING_MODES else 201
    await asyncio.gather(
        *(load._connection(port, make_request, expected, deadline, tally) for _ in range(clients))
    )
    return load.HttpRun(
        tool="python-asyncio",
        connections=clients,
        ok=tally.ok,
        other=tally.other,
        socket_errors=tally.socket_errors,
        elapsed_s=time.monotonic() - began,
        latency_ms=load.latency_summary_ms(tally.latencies_s),
        unanswered_max=tally.socket_errors,
        first_other=tally.first_other,
    )


def check_exact(bench: Bench, database_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        levels = conn.execute(
            "SELECT COALESCE(SUM(reserved), 0), COUNT(*) FILTER (WHERE reserved > on_hand) FROM ledger_levels"
        ).fetchone()
        held = conn.execute("SELECT COALESCE(SUM(remaining), 0) FROM ledger_reservations").fetchone()
    assert levels is not None and held is not None
    bench.check(
        f"{name}: the levels' reserved units are what the reservations hold; nothing reserved beyond on_hand",
        int(levels[0]) == int(held[0]) and int(levels[1]) == 0,
        f"levels reserved {levels[0]:,}, reservations hold {held[0]:,}, over on_hand: {levels[1]}",
    )


def side_orders(modes: list[str]) -> list[list[str]]:
    """Every turn of the sides and of their reverse (two sides: AB, BA; three: the six orders), so
    that over as many rounds each side is first, in the middle and last, and comes right after
    each other side, equally often: the machine's drift within a round favours none."""
    orders: list[list[str]] = []
    for sequence in (modes, modes[::-1]):
        for turn in range(len(sequence)):
            order = sequence[turn:] + sequence[:turn]
            if order not in orders:
                orders.append(order)
    return orders


def check_channel_holds_all(bench: Bench, port: int) -> None:
    """On the policies side every reservation named the online channel: at each store and SKU, the
    channel's reserved units are the level's (and some were reserved)."""
    query = "&".join(f"sku=SKU-{k:02d}" for k in range(SKUS))
    differ = []
    reserved = 0
    for store in stores():
        status, body = http_json(port, "GET", f"/v1/stores/{store}/stock?{query}")
        if status != 200:
            raise BenchError(f"reading {store}'s levels failed: {status} {str(body)[:500]}")
        for item in body["items"]:
            reserved += item["reserved"]
            online = item["channels"].get("online", {}).get("reserved")
            if online != item["reserved"]:
                differ.append(f"{store} {item['sku']}: reserved {item['reserved']}, online {online}")
    bench.check(
        "policies: the online channel holds every reserved unit",
        reserved > 0 and not differ,
        f"{reserved:,} units reserved; " + "; ".join(differ[:5]),
    )


def measure_round(
    bench: Bench, sides: dict[str, tuple[Any, int, str]], order: list[str], number: int
) -> dict[str, Any]:
    args = bench.args
    result: dict[str, Any] = {"order": order, "load_average": [round(x, 2) for x in os.getloadavg()]}
    for mode in order:
        server, port, _ = sides[mode]
        bench.pg.checkpoint()
        meter = cputime.started(server)
        run = asyncio.run(drive(port, mode, args.clients, args.seconds, f"{bench.nonce}-{number}"))
        cpu = cputime.report(meter.stop(), run.ok, unit="request")
        print(
            f"  round {number} {mode}: {run.per_s:,.0f}/s ({run.ok:,} ok, {run.other} other, "
            f"{run.socket_errors} socket errors; p50 {run.latency_ms['p50']:.1f} ms, "
            f"p99 {run.latency_ms['p99']:.1f} ms)",
            flush=True,
        )
        bench.check(
            f"round {number} {mode}: every request answered as expected",
            run.other == 0 and run.socket_errors == 0,
            run.first_other,
        )
        result[mode] = run.as_dict() | cpu | {"per_s": round(run.per_s, 1)}
    result["ratio"] = round(result["sourcing"]["per_s"] / result["plain"]["per_s"], 3)
    policies = ""
    if "policies" in result:
        result["policies_ratio"] = round(result["policies"]["per_s"] / result["sourcing"]["per_s"], 3)
        policies = f", with policies / without = {result['policies_ratio']:.2f}x"
    print(
        f"  round {number}: sourcing / plain = {result['ratio']:.2f}x{policies}; "
        f"load average {result['load_average']}",
        flush=True,
    )
    return result


def ratio_summary(rounds: list[dict[str, Any]], side: str, against: str, key: str) -> dict[str, float | None]:
    """The rounds' median ratio of `side` to `against`, and the ratio of their requests summed."""
    side_ok, against_ok = (sum(r[name]["ok"] for r in rounds) for name in (side, against))
    of_sums = round(side_ok / against_ok, 3) if against_ok else None
    return {f"{key}_median": median(r[key] for r in rounds), f"{key}_of_sums": of_sums}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results: dict[str, Any] = {"settings": vars(args), "rounds": []}

    def measure(bench: Bench) -> None:
        from ledger.config import Settings

        steps_max = Settings().sourcing_search_steps_max
        print(
            "\n== the search alone (50 lines, 100 candidates, "
            f"LEDGER_SOURCING_SEARCH_STEPS_MAX={steps_max}) =="
        )
        results["search"] = time_search(steps_max)
        print("\n== the answer over HTTP, one request at a time ==")
        results["http"] = time_http_answers(bench, args.http_requests)
        print(f"\n== sourcing with reserve against plain reservations, {args.clients} connections ==")
        modes = ["sourcing", "plain", *(["policies"] if args.policies else [])]
        sides = {}
        for mode in modes:
            database = bench.database(f"ledger_{mode}")
            server, port = bench.start_ledger(database)
            seed(bench, port, policies=mode == "policies")
            sides[mode] = (server, port, bench.pg.url(database))
        orders = side_orders(modes)
        for number in range(1, args.rounds + 1):
            order = orders[(number - 1) % len(orders)]
            results["rounds"].append(measure_round(bench, sides, order, number))
        for mode, (_, _, url) in sides.items():
            check_exact(bench, url, mode)
        if "policies" in sides:
            check_channel_holds_all(bench, sides["policies"][1])

    def write(bench: Bench, error: str | None) -> None:
        rounds = results["rounds"]
        if rounds:
            results["summary"] = {
                "ratios": [r["ratio"] for r in rounds],
                **ratio_summary(rounds, "sourcing", "plain", "ratio"),
                "sourcing_per_s": [round(r["sourcing"]["per_s"]) for r in rounds],
                "plain_per_s": [round(r["plain"]["per_s"]) for r in rounds],
                "sourcing_p99_ms": [r["sourcing"]["latency_ms"]["p99"] for r in rounds],
                **(
                    {
                        "policies_ratios": [r["policies_ratio"] for r in rounds],
                        **ratio_summary(rounds, "policies", "sourcing", "policies_ratio"),
                        "policies_per_s": [round(r["policies"]["per_s"]) for r in rounds],
                        "policies_p99_ms": [r["policies"]["latency_ms"]["p99"] for r in rounds],
                    }
                    if args.policies
                    else {}
                ),
                "load_average": [r["load_average"] for r in rounds],
            }
            print(f"summary: {json.dumps(results['summary'])}")
        results["checks"] = bench.checks
        results["error"] = error
        results["elapsed_s"] = round(time.time() - started)
        Path(args.output).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")

    return session.run(args, measure, write, prefix="ledger-sourcing-bench-")


if __name__ == "__main__":
    sys.exit(main())
