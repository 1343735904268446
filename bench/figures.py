"""The three figures of the issue, each measured on the ledger and on its baseline, with their checks
(bench/run.py runs them in a frame.Bench)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cputime
import load
import sqlbaseline
from frame import (
    HOT_SKU,
    READ_SKU,
    SEED_UNITS,
    STORE,
    Bench,
    chunks,
    ledger_metrics,
    metrics_delta,
    receipt,
)
from plumbing import BenchError, http_json

WARMUP_RESERVATIONS = 50
# The policy of the hot figure with a policy: the quota is far above what a run reserves, so that
# every reservation is decided under the policy and none is refused (refusals would be cheaper).
HOT_POLICY = {"safety_stock": 2, "channels": {"online": {"quota_pct": 30}}}


def run_figure(bench: Bench, name: str) -> None:
    """One figure by its --only name; the load average before it is kept, as noise on the figure."""
    bench.load_average[f"before {name}"] = [round(x, 2) for x in os.getloadavg()]
    {
        "hot": figure_hot,
        "hot_policy": figure_hot_policy,
        "batch": figure_batch,
        "read": figure_read,
    }[name](bench)


def sql_baselines(bench: Bench, figure: str, rows: int) -> dict[str, Any]:
    args, runs = bench.args, {}
    kinds = [
        "python-threads",
        *(["python-processes"] if args.process_baseline else []),
        *([] if args.no_pgbench else ["pgbench"]),
    ]
    for kind in kinds:
        database = bench.database(f"base_{figure}_{kind.replace('-', '_')}")
        sqlbaseline.prepare_table(bench.pg, database, rows)
        print(
            f"  baseline {kind}: {args.clients} clients, UPDATE over {rows} row(s), {args.seconds:.0f} s ...",
            flush=True,
        )
        if kind == "python-threads":
            run = sqlbaseline.run_threads(bench.pg, database, args.clients, rows, args.seconds)
        elif kind == "python-processes":
            run = sqlbaseline.run_processes(bench.pg, database, args.clients, rows, args.seconds)
        else:
            run = sqlbaseline.run_pgbench(
                bench.pg, database, args.clients, rows, args.seconds, bench.workdir, args.pgbench_threads
            )
        print(f"    {run.per_s:,.0f} UPDATEs/s ({run.successes:,} in {run.elapsed_s:.1f} s)")
        bench.check(
            f"{figure}: {kind} baseline's table matches its successes",
            run.consistent,
            f"sum(reserved) = {run.reserved_in_table:,}, successful UPDATEs = {run.successes:,}",
        )
        runs[kind] = run.as_dict()
    return runs


def figure_hot(bench: Bench) -> None:
    args = bench.args
    print(f"\n== hot SKU: one SKU, {args.clients} concurrent clients ==", flush=True)
    baselines = sql_baselines(bench, "hot", 1)
    database = bench.database("ledger_hot")
    server, port = bench.start_ledger(database)
    try:
        bench.post_events(port, [receipt(f"{bench.nonce}-seed", [(HOT_SKU, SEED_UNITS)])])
        warm = sum(
            1
            for i in range(WARMUP_RESERVATIONS)
            if http_json(
                port,
                "POST",
                f"/v1/stores/{STORE}/reservations",
                {"reservation_id": f"{bench.nonce}-warm-{i}", "lines": [{"sku": HOT_SKU, "qty": 1}]},
                token=bench.token,
            )[0]
            == 201
        )
        bench.pg.checkpoint()
        metrics_before = ledger_metrics(port, bench.token)
        print(
            f"  ledger: POST /v1/stores/{STORE}/reservations, {args.clients} connections, "
            f"{args.seconds:.0f} s ...",
            flush=True,
        )
        meter = cputime.started(server)
        run = load.http_load(
            port,
            "reserve",
            STORE,
            HOT_SKU,
            args.clients,
            args.seconds,
            bench.nonce,
            prefer_wrk=not args.no_wrk,
            wrk_threads=args.wrk_threads,
            token=bench.token,
        )
        cpu = cputime.report(meter.stop(), run.ok)
        print(
            f"    {run.per_s:,.0f} reservations/s ({run.ok:,} answered 201 in {run.elapsed_s:.1f} s by "
            f"{run.tool}; {run.other} other answers, {run.socket_errors} socket errors; "
            f"p99 {run.latency_ms['p99']:.1f} ms)"
        )
        if run.first_other:
            print(f"    first other answer: {run.first_other}")
        reserved = bench.settled_levels(port, [HOT_SKU])[HOT_SKU]["reserved"]
        metrics = metrics_delta(metrics_before, ledger_metrics(port, bench.token))
        counted = warm + run.ok
        bench.check(
            "hot: the ledger's reserved level matches the 201 answers",
            0 <= reserved - counted <= run.unanswered_max,
            f"reserved = {reserved:,}, 201 answers = {counted:,} ({warm} of them warm-up); the "
            f"{reserved - counted} more were in flight when {run.tool} stopped "
            f"(at most {run.unanswered_max} can be)",
        )
        bench.check(
            "hot: every reservation answered 201",
            run.other == 0 and run.socket_errors == 0,
            f"{run.other} other answers, {run.socket_errors} socket errors",
        )
    finally:
        bench.stop_server(server)
    token_used = bench.token is not None
    bench.measured["hot"] = {
        "ledger": run.as_dict(),
        "baselines": baselines,
        "warmup_reservations": warm,
        "ledger_reserved_after": reserved,
        "ledger_metrics_delta": metrics,
        "ledger_token": token_used,
        **cpu,
    }


def figure_hot_policy(bench: Bench) -> None:
    """Hot-SKU online reservations (`"channel": "online"`) on two fresh ledgers back to back: one
    without a policy, one with a safety stock and an online quota on that SKU (CONTRACT §6)."""
    args = bench.args
    print(f"\n== hot SKU with a policy: online reservations, {args.clients} clients ==", flush=True)
    runs = {}
    for variant, policy in (("without_policy", None), ("with_policy", HOT_POLICY)):
        runs[variant] = hot_online_run(bench, f"ledger_hot_{variant}", policy)
    bench.measured["hot_policy"] = runs | {"policy": HOT_POLICY}


def hot_online_run(bench: Bench, database_name: str, policy: dict[str, Any] | None) -> dict[str, Any]:
    args = bench.args
    database = bench.database(database_name)
    server, port = bench.start_ledger(database)
    try:
        bench.post_events(port, [receipt(f"{bench.nonce}-seed", [(HOT_SKU, SEED_UNITS)])])
        if policy is not None:
            status, body = http_json(
                port, "PUT", f"/v1/stores/{STORE}/policies/{HOT_SKU}", policy, token=bench.token
            )
            if status != 200:
                raise BenchError(f"setting the policy failed: {status} {str(body)[:500]}")
        warm = sum(
            1
            for i in range(WARMUP_RESERVATIONS)
            if http_json(
                port,
                "POST",
                f"/v1/stores/{STORE}/reservations",
                {
                    "reservation_id": f"{bench.nonce}-warm-{i}",
                    "channel": "online",
                    "lines": [{"sku": HOT_SKU, "qty": 1}],
                },
                token=bench.token,
            )[0]
            == 201
        )
        bench.pg.checkpoint()
        print(f"  {database_name}: {args.clients} connections, {args.seconds:.0f} s ...", flush=True)
        meter = cputime.started(server)
        run = load.http_load(
            port,
            "reserve-online",
            STORE,
            HOT_SKU,
            args.clients,
            args.seconds,
            bench.nonce,
            prefer_wrk=not args.no_wrk,
            wrk_threads=args.wrk_threads,
            token=bench.token,
        )
        cpu = cputime.report(meter.stop(), run.ok)
        print(
            f"    {run.per_s:,.0f} reservations/s ({run.ok:,} answered 201 by {run.tool}; "
            f"{run.other} other answers, {run.socket_errors} socket errors; "
            f"p99 {run.latency_ms['p99']:.1f} ms)"
        )
        reserved = bench.settled_levels(port, [HOT_SKU])[HOT_SKU]["reserved"]
        status, level = http_json(port, "GET", f"/v1/stores/{STORE}/stock/{HOT_SKU}", token=bench.token)
        counted = warm + run.ok
        bench.check(
            f"{database_name}: the reserved level matches the 201 answers",
            0 <= reserved - counted <= run.unanswered_max,
            f"reserved = {reserved:,}, 201 answers = {counted:,}",
        )
        bench.check(
            f"{database_name}: every reservation answered 201",
            run.other == 0 and run.socket_errors == 0,
            f"{run.other} other answers, {run.socket_errors} socket errors; first: {run.first_other}",
        )
        if policy is not None:
            online = level.get("channels", {}).get("online", {}) if status == 200 else {}
            bench.check(
                f"{database_name}: the online channel holds every reserved unit; safety stock kept",
                online.get("reserved") == reserved and level.get("safety_stock") == policy["safety_stock"],
                f"{str(level)[:300]}",
            )
    finally:
        bench.stop_server(server)
    return {
        "ledger": run.as_dict(),
        "warmup_reservations": warm,
        "ledger_reserved_after": reserved,
        **cpu,
    }


def figure_batch(bench: Bench) -> None:
    args = bench.args
    print(f"\n== {args.skus:,} SKUs: batched reservation events ==", flush=True)
    baselines = sql_baselines(bench, "batch", args.skus)
    database = bench.database("ledger_batch")
    skus = [sqlbaseline.sku_name(i) for i in range(1, args.skus + 1)]
    server, port = bench.start_ledger(database)
    try:
        bench.post_events(
            port,
            [
                receipt(f"{bench.nonce}-seed-{n}", [(sku, SEED_UNITS) for sku in chunk])
                for n, chunk in enumerate(chunks(skus, 1000))
            ],
        )
        warm = load.send_batches(
            port,
            STORE,
            skus,
            1,
            args.batch_size,
            0.0,
            f"{bench.nonce}-warm",
            requests_max=1,
            token=bench.token,
        )
        bench.pg.checkpoint()
        metrics_before = ledger_metrics(port, bench.token)
        print(
            f"  ledger: POST /v1/events, {args.batch_senders} senders x {args.batch_size} reservation "
            f"events per request, {args.seconds:.0f} s ...",
            flush=True,
        )
        meter = cputime.started(server)
        run = load.send_batches(
            port,
            STORE,
            skus,
            args.batch_senders,
            args.batch_size,
            args.seconds,
            bench.nonce,
            token=bench.token,
        )
        cpu = cputime.report(meter.stop(), run.accepted)
        print(
            f"    {run.per_s:,.0f} reservations/s ({run.accepted:,} accepted in {run.requests} requests, "
            f"{run.elapsed_s:.1f} s; request p99 {run.latency_ms['p99']:.0f} ms; outcomes {run.outcomes})"
        )
        if run.first_other:
            print(f"    first other result: {run.first_other}")
        levels = bench.settled_levels(port, skus)
        metrics = metrics_delta(metrics_before, ledger_metrics(port, bench.token))
        reserved = sum(level["reserved"] for level in levels.values())
        on_hand = sum(level["on_hand"] for level in levels.values())
        counted = warm.accepted + run.accepted
        bench.check(
            "batch: the ledger's reserved levels add up to the accepted events",
            reserved == counted,
            f"sum(reserved) over {len(levels):,} SKUs = {reserved:,}, accepted = {counted:,} "
            f"({warm.accepted} of them warm-up)",
        )
        bench.check(
            "batch: on hand is untouched by reservations",
            on_hand == SEED_UNITS * len(skus),
            f"sum(on_hand) = {on_hand:,}",
        )
        bench.check(
            "batch: every event was accepted",
            set(run.outcomes) <= {"accepted"},
            f"outcomes {run.outcomes}",
        )
    finally:
        bench.stop_server(server)
    token_used = bench.token is not None
    bench.measured["batch"] = {
        "ledger": run.as_dict(),
        "baselines": baselines,
        "warmup_accepted": warm.accepted,
        "ledger_reserved_after": reserved,
        "ledger_metrics_delta": metrics,
        "ledger_token": token_used,
        **cpu,
    }


def figure_read(bench: Bench) -> None:
    args = bench.args
    print(f"\n== GET /v1/stores/{{s}}/stock/{{sku}}: {args.read_connections} connections ==", flush=True)
    trivial_script = Path(__file__).with_name("trivial_app.py")
    server, port = bench.start_server(
        "trivial-fastapi", [sys.executable, str(trivial_script)], dict(os.environ)
    )
    try:
        print(f"  baseline: trivial FastAPI endpoint, {args.seconds:.0f} s ...", flush=True)
        trivial = read_load(bench, port, token=None)  # the baseline has no access control
    finally:
        bench.stop_server(server)
    database = bench.database("ledger_read")
    server, port = bench.start_ledger(database)
    try:
        bench.post_events(port, [receipt(f"{bench.nonce}-seed", [(READ_SKU, 1000)])])
        print(f"  ledger: GET /v1/stores/{STORE}/stock/{READ_SKU}, {args.seconds:.0f} s ...", flush=True)
        ledger = read_load(bench, port, token=bench.token)
        status, body = http_json(port, "GET", f"/v1/stores/{STORE}/stock/{READ_SKU}", token=bench.token)
        bench.check(
            "read: the ledger answers the seeded level",
            status == 200 and body.get("on_hand") == 1000,
            f"{status} {body}",
        )
    finally:
        bench.stop_server(server)
    bench.measured["read"] = {
        "ledger": ledger.as_dict(),
        "trivial": trivial.as_dict(),
        "ledger_token": bench.token is not None,
    }


def read_load(bench: Bench, port: int, token: str | None) -> load.HttpRun:
    args = bench.args
    if args.warmup_seconds > 0:
        load.http_load(
            port,
            "get",
            STORE,
            READ_SKU,
            args.read_connections,
            args.warmup_seconds,
            bench.nonce,
            prefer_wrk=not args.no_wrk,
            wrk_threads=args.wrk_threads,
            token=token,
        )
    run = load.http_load(
        port,
        "get",
        STORE,
        READ_SKU,
        args.read_connections,
        args.seconds,
        bench.nonce,
        prefer_wrk=not args.no_wrk,
        wrk_threads=args.wrk_threads,
        token=token,
    )
    print(
        f"    {run.per_s:,.0f} requests/s by {run.tool}; latency p50 {run.latency_ms['p50']:.2f} ms, "
        f"p99 {run.latency_ms['p99']:.2f} ms; {run.other} other answers, "
        f"{run.socket_errors} socket errors"
    )
    if run.first_other:
        print(f"    first other answer: {run.first_other}")
    return run
