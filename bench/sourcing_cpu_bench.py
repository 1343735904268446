"""What a sourcing request costs the writer and the HTTP worker in CPU, beside a plain reservation's,
in this process (issue #12): the load of other processes on the machine does not count, so small
changes show where the throughput figure (sourcing_bench.py) drowns them.

Usage: python bench/sourcing_cpu_bench.py [--batches 60] [--repeats 15]

1. **The writer's decision**: a writer on a fresh PostgreSQL database (the throughput figure's 20
   stores holding two thirds of 30 SKUs), its memory warmed by 100 recorded batches; then batches of
   16 requests, sourcing with reserve (3-line orders over the 20 stores, their order turning with
   each request) or plain 3-line reservations, each decided from memory and encoded as its one
   statement (`Writer.decide_from_memory`, not sent) `--repeats` times: the best time, per request.
2. **The HTTP handler**: `source_order` against `reserve` (the functions the fast path calls), with
   a writer that answers at once (the request and its answer still cross the wire's pickling):
   the best of 7 passes over 2,000 bodies, CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import session
from frame import Bench

STORES = [f"store-{n:02d}" for n in range(20)]
SKUS = 30
BATCH = 16
WARM_BATCHES = 100
HTTP_BODIES = 2_000
HTTP_PASSES = 7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=60, help="batches of 16 timed per side")
    parser.add_argument("--repeats", type=int, default=15, help="decisions of each batch; the best counts")
    parser.add_argument("--output", default=None, help="a JSON file for the figures")
    session.add_common_options(parser)
    args = parser.parse_args(argv)
    args.serve_argv = []
    args.token = False
    return args


def holds(store_index: int, sku_index: int) -> bool:
    return (sku_index + store_index) % 3 != 0  # as sourcing_bench.py: each store lacks a third


def bodies(mode: str, count: int, nonce: str) -> list[dict[str, Any]]:
    chooser = random.Random(12)
    made = []
    for number in range(1, count + 1):
        if mode == "sourcing":
            turn = number % len(STORES)
            made.append(
                {
                    "lines": [
                        {"sku": f"SKU-{k:02d}", "qty": chooser.randint(1, 3)}
                        for k in chooser.sample(range(SKUS), 3)
                    ],
                    "stores": STORES[turn:] + STORES[:turn],
                    "reserve": {"reservation_id": f"{nonce}-s-{number}"},
                }
            )
        else:
            index = chooser.randrange(len(STORES))
            held = [k for k in range(SKUS) if holds(index, k)]
            made.append(
                {
                    "store": STORES[index],
                    "reservation_id": f"{nonce}-p-{number}",
                    "lines": [
                        {"sku": f"SKU-{k:02d}", "qty": chooser.randint(1, 3)} for k in chooser.sample(held, 3)
                    ],
                }
            )
    return made


def events_of(mode: str, count: int, nonce: str) -> list[Any]:
    """The events the HTTP side would hand the writer for these bodies."""
    from ledger.api.reservations_across import across_limits
    from ledger.config import Settings
    from ledger.intake.across_body import read_sourcing, sourcing_command
    from ledger.intake.envelope import IntakeLimits, read_envelope

    limits = IntakeLimits()
    across = across_limits(Settings(), limits)
    made = []
    for body in bodies(mode, count, nonce):
        now = datetime.now(UTC)
        if mode == "sourcing":
            ask = read_sourcing(body, across, "ledger/sourcing", now)
            assert ask.candidates is not None
            made.append(sourcing_command(ask, ask.candidates, across, "ledger/sourcing", now, None))
        else:
            envelope = {
                "specversion": "1.0",
                "id": os.urandom(16).hex(),
                "source": "bench/cpu",
                "type": "stock.reservation",
                "time": now.isoformat(),
                "subject": body["store"],
                "data": {"reservation_id": body["reservation_id"], "lines": body["lines"]},
            }
            made.append(read_envelope(envelope, limits, None))
    return made


def writer_decisions(bench: Bench, mode: str) -> float:
    """The best decide+encode time of each batch, summed, per request (µs)."""
    from ledger.bootstrap import build_writer
    from ledger.config import Settings
    from ledger.intake.envelope import IntakeLimits, read_envelope
    from ledger.writer.submission import Submission

    url = bench.pg.url(bench.database(f"cpu_{mode}"))
    writer = build_writer(Settings(database_url=url, writer_optimistic=True))
    try:
        seed = [
            read_envelope(
                {
                    "specversion": "1.0",
                    "id": f"seed-{store}",
                    "source": "bench/seed",
                    "type": "stock.receipt",
                    "time": datetime.now(UTC).isoformat(),
                    "subject": store,
                    "data": {
                        "lines": [
                            {"sku": f"SKU-{k:02d}", "qty": 100_000_000} for k in range(SKUS) if holds(i, k)
                        ]
                    },
                },
                IntakeLimits(),
                None,
            )
            for i, store in enumerate(STORES)
        ]
        writer.process([Submission(seed, lambda _: None)])
        warm = events_of(mode, BATCH * WARM_BATCHES, f"{bench.nonce}-warm")
        for start in range(0, len(warm), BATCH):
            writer.process([Submission(warm[start : start + BATCH], lambda _: None)])
        timed = events_of(mode, BATCH * bench.args.batches, f"{bench.nonce}-timed")
        total = 0.0
        for start in range(0, len(timed), BATCH):
            batch = timed[start : start + BATCH]
            best = float("inf")
            for _ in range(bench.args.repeats):
                began = time.perf_counter()
                statement = writer.decide_from_memory(batch, "2026-12-03T00:00:00+00:00", fetch=False)
                best = min(best, time.perf_counter() - began)
                if statement is None:
                    raise RuntimeError("the batch could not be decided from memory")
            total += best
        return total / len(timed) * 1e6
    finally:
        writer.recorder.close()


class _AnsweringWriter:
    """A ledger whose writer answers every event at once as placed (the wire's pickling included)."""

    async def submit(self, events: list[Any]) -> list[Any]:
        from ledger.domain.model import Outcome
        from ledger.results import EventResult
        from ledger.writer.wire import Replies, Reply, WriteRequest, decode_from_writer, encode

        encode(WriteRequest(1, events))
        results = []
        for event in events:
            placed: tuple[Any, ...] = ()
            if hasattr(event, "candidates"):  # two parts, as a pair of stores would place it
                lines = tuple((line.sku, line.qty_units) for line in event.lines)
                placed = ((event.candidates[0], lines[:2]), (event.candidates[1], lines[2:]))
            results.append(
                EventResult(
                    event.event_id, event.source, event.store_id, Outcome.ACCEPTED, position=1, placed=placed
                )
            )
        reply = decode_from_writer(encode(Replies([Reply(1, results)]))[4:])
        assert isinstance(reply, Replies)
        return reply.replies[0].results  # type: ignore[return-value]


async def http_handlers() -> dict[str, float]:
    from ledger.api.reservations import reserve
    from ledger.api.reservations_across import across_limits
    from ledger.api.sourcing import source_order
    from ledger.config import Settings
    from ledger.intake.envelope import IntakeLimits

    limits = IntakeLimits()
    across = across_limits(Settings(), limits)
    ledger: Any = _AnsweringWriter()
    figures = {}
    for mode in ("sourcing", "plain"):
        raw = []
        for body in bodies(mode, HTTP_BODIES, "http"):
            store = body.pop("store", None)
            raw.append((store, json.dumps(body).encode()))
        best = float("inf")
        for _ in range(HTTP_PASSES):
            began = time.process_time()
            for store, payload in raw:
                if store is None:
                    await source_order(ledger, across, payload, None)
                else:
                    await reserve(ledger, limits, store, payload, None)
            best = min(best, time.process_time() - began)
        figures[mode] = best / len(raw) * 1e6
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "serve_argv"}}

    def measure(bench: Bench) -> None:
        results["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        decisions = {mode: round(writer_decisions(bench, mode), 1) for mode in ("sourcing", "plain")}
        results["writer_decide_encode_us_per_request"] = decisions
        print(f"writer, decide + encode from memory, best of {args.repeats}, µs per request: {decisions}")
        handlers = {mode: round(value, 1) for mode, value in asyncio.run(http_handlers()).items()}
        results["http_handler_cpu_us_per_request"] = handlers
        print(f"HTTP handler, best of {HTTP_PASSES} passes, CPU µs per request: {handlers}")
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    def write(bench: Bench, error: str | None) -> None:
        results["error"] = error
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(f"wrote {args.output}")

    return session.run(args, measure, write, prefix="ledger-sourcing-cpu-bench-")


if __name__ == "__main__":
    sys.exit(main())
