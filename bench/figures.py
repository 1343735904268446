"""The three figures of the issue, each measured on the ledger and on its baseline, with their checks."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cputime
import load
import sqlbaseline
from plumbing import BenchError, Postgres, Server, free_port, http_json, wait_ready

STORE = "store-1"
HOT_SKU = "HOT-1"
READ_SKU = "READ-1"
SEED_UNITS = 1_000_000_000  # the most one event line may carry (CONTRACT §1)
WARMUP_RESERVATIONS = 50
SETTLE_TIMEOUT_S = 30.0
LOOKUP_CHUNK = 250
# The policy of the hot figure with a policy: the quota is far above what a run reserves, so that
# every reservation is decided under the policy and none is refused (refusals would be cheaper).
HOT_POLICY = {"safety_stock": 2, "channels": {"online": {"quota_pct": 30}}}


@dataclass
class Bench:
    """Holds what was started (to stop it) and what was measured (to report it)."""

    args: argparse.Namespace
    pg: Postgres
    workdir: Path
    nonce: str
    postgres_settings: dict[str, str] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # --rounds: every round's
    databases: set[str] = field(default_factory=set)
    checks: list[dict[str, Any]] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    load_average: dict[str, list[float]] = field(default_factory=dict)  # before each figure: noise on it
    token: str | None = None  # --token: the admin token of the ledger started last; sent on every request

    # --- PostgreSQL ---------------------------------------------------------------------------------------

    def check_postgres(self) -> None:
        self.postgres_settings = self.pg.show()
        shown = ", ".join(f"{k}={v}" for k, v in self.postgres_settings.items())
        print(f"PostgreSQL (SHOW): {shown}")
        durable = (
            self.postgres_settings["fsync"] == "on" and self.postgres_settings["synchronous_commit"] == "on"
        )
        self.check("PostgreSQL commits are durable (fsync on, synchronous_commit on)", durable)
        if not durable:
            raise BenchError("PostgreSQL is not running with fsync and synchronous_commit on")

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"check": what, "ok": ok, "detail": detail})
        print(f"  check {'ok  ' if ok else 'FAIL'}: {what}{': ' + detail if detail else ''}", flush=True)

    def database(self, name: str) -> str:
        """A new database; a name used before (an earlier round) gets a number."""
        unique, number = name, 1
        while unique in self.databases:
            number += 1
            unique = f"{name}_{number}"
        self.databases.add(unique)
        return self.pg.create_database(unique)

    # --- servers ------------------------------------------------------------------------------------------

    def start_server(
        self, name: str, argv: list[str], env: dict[str, str], token: str | None = None
    ) -> tuple[Server, int]:
        port = free_port()
        server = Server(
            name, [*argv, "--port", str(port), *self.args.serve_argv], env, self.workdir / f"{name}.log"
        )
        self.servers.append(server)
        server.start()
        wait_ready(server, port, "/readyz", self.args.ready_timeout, token=token)
        return server, port

    def start_ledger(self, database: str) -> tuple[Server, int]:
        """`ledger serve` on the database; with --token, an admin token is created in it first (the service
        starts closed), kept in `self.token` for every request to it, and a wrong token is shown a 401."""
        env = dict(os.environ, LEDGER_DATABASE_URL=self.pg.url(database), LEDGER_HTTP_HOST="127.0.0.1")
        self.token = create_admin_token(env) if getattr(self.args, "token", False) else None
        server, port = self.start_server(
            f"ledger-{database}", [*ledger_command(), "serve"], env, token=self.token
        )
        if self.token is not None:
            status, body = http_json(port, "GET", f"/v1/stores/{STORE}/stock/{HOT_SKU}", token="not-a-token")
            self.check(
                f"{database}: access control is on (a wrong token is refused)",
                status == 401,
                f"{status} {str(body)[:200]}",
            )
        return server, port

    def stop_server(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_servers(self) -> None:
        for server in list(self.servers):
            self.stop_server(server)

    def kill_leftovers(self) -> list[str]:
        """Children of this process still running after every stop, killed by pid. There should be none
        but multiprocessing's resource tracker, which is left alone: it ends when this process does."""
        try:
            import psutil
        except ImportError:
            return []
        killed = []
        for child in psutil.Process().children(recursive=True):
            try:
                command = " ".join(child.cmdline())[:200]
                if "resource_tracker" in command:
                    continue
                child.kill()
            except psutil.Error:
                continue
            killed.append(f"{child.pid} {command}")
        return killed

    # --- figures ------------------------------------------------------------------------------------------

    def run_figure(self, name: str) -> None:
        self.load_average[f"before {name}"] = [round(x, 2) for x in os.getloadavg()]
        {
            "hot": self.figure_hot,
            "hot_policy": self.figure_hot_policy,
            "batch": self.figure_batch,
            "read": self.figure_read,
        }[name]()

    def sql_baselines(self, figure: str, rows: int) -> dict[str, Any]:
        args, runs = self.args, {}
        kinds = [
            "python-threads",
            *(["python-processes"] if args.process_baseline else []),
            *([] if args.no_pgbench else ["pgbench"]),
        ]
        for kind in kinds:
            database = self.database(f"base_{figure}_{kind.replace('-', '_')}")
            sqlbaseline.prepare_table(self.pg, database, rows)
            print(
                f"  baseline {kind}: {args.clients} clients, UPDATE over {rows} row(s), "
                f"{args.seconds:.0f} s ...",
                flush=True,
            )
            if kind == "python-threads":
                run = sqlbaseline.run_threads(self.pg, database, args.clients, rows, args.seconds)
            elif kind == "python-processes":
                run = sqlbaseline.run_processes(self.pg, database, args.clients, rows, args.seconds)
            else:
                run = sqlbaseline.run_pgbench(
                    self.pg, database, args.clients, rows, args.seconds, self.workdir, args.pgbench_threads
                )
            print(f"    {run.per_s:,.0f} UPDATEs/s ({run.successes:,} in {run.elapsed_s:.1f} s)")
            self.check(
                f"{figure}: {kind} baseline's table matches its successes",
                run.consistent,
                f"sum(reserved) = {run.reserved_in_table:,}, successful UPDATEs = {run.successes:,}",
            )
            runs[kind] = run.as_dict()
        return runs

    def figure_hot(self) -> None:
        args = self.args
        print(f"\n== hot SKU: one SKU, {args.clients} concurrent clients ==", flush=True)
        baselines = self.sql_baselines("hot", 1)
        database = self.database("ledger_hot")
        server, port = self.start_ledger(database)
        try:
            self.post_events(port, [receipt(f"{self.nonce}-seed", [(HOT_SKU, SEED_UNITS)])])
            warm = sum(
                1
                for i in range(WARMUP_RESERVATIONS)
                if http_json(
                    port,
                    "POST",
                    f"/v1/stores/{STORE}/reservations",
                    {"reservation_id": f"{self.nonce}-warm-{i}", "lines": [{"sku": HOT_SKU, "qty": 1}]},
                    token=self.token,
                )[0]
                == 201
            )
            self.pg.checkpoint()
            metrics_before = ledger_metrics(port, self.token)
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
                self.nonce,
                prefer_wrk=not args.no_wrk,
                wrk_threads=args.wrk_threads,
                token=self.token,
            )
            cpu = cputime.report(meter.stop(), run.ok)
            print(
                f"    {run.per_s:,.0f} reservations/s ({run.ok:,} answered 201 in {run.elapsed_s:.1f} s by "
                f"{run.tool}; {run.other} other answers, {run.socket_errors} socket errors; "
                f"p99 {run.latency_ms['p99']:.1f} ms)"
            )
            if run.first_other:
                print(f"    first other answer: {run.first_other}")
            reserved = self.settled_levels(port, [HOT_SKU])[HOT_SKU]["reserved"]
            metrics = metrics_delta(metrics_before, ledger_metrics(port, self.token))
            counted = warm + run.ok
            self.check(
                "hot: the ledger's reserved level matches the 201 answers",
                0 <= reserved - counted <= run.unanswered_max,
                f"reserved = {reserved:,}, 201 answers = {counted:,} ({warm} of them warm-up); the "
                f"{reserved - counted} more were in flight when {run.tool} stopped "
                f"(at most {run.unanswered_max} can be)",
            )
            self.check(
                "hot: every reservation answered 201",
                run.other == 0 and run.socket_errors == 0,
                f"{run.other} other answers, {run.socket_errors} socket errors",
            )
        finally:
            self.stop_server(server)
        token_used = self.token is not None
        self.measured["hot"] = {
            "ledger": run.as_dict(),
            "baselines": baselines,
            "warmup_reservations": warm,
            "ledger_reserved_after": reserved,
            "ledger_metrics_delta": metrics,
            "ledger_token": token_used,
            **cpu,
        }

    def figure_hot_policy(self) -> None:
        """Hot-SKU online reservations (`"channel": "online"`) on two fresh ledgers back to back: one
        without a policy, one with a safety stock and an online quota on that SKU (CONTRACT §6)."""
        args = self.args
        print(f"\n== hot SKU with a policy: online reservations, {args.clients} clients ==", flush=True)
        runs = {}
        for variant, policy in (("without_policy", None), ("with_policy", HOT_POLICY)):
            runs[variant] = self.hot_online_run(f"ledger_hot_{variant}", policy)
        self.measured["hot_policy"] = runs | {"policy": HOT_POLICY}

    def hot_online_run(self, database_name: str, policy: dict[str, Any] | None) -> dict[str, Any]:
        args = self.args
        database = self.database(database_name)
        server, port = self.start_ledger(database)
        try:
            self.post_events(port, [receipt(f"{self.nonce}-seed", [(HOT_SKU, SEED_UNITS)])])
            if policy is not None:
                status, body = http_json(
                    port, "PUT", f"/v1/stores/{STORE}/policies/{HOT_SKU}", policy, token=self.token
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
                        "reservation_id": f"{self.nonce}-warm-{i}",
                        "channel": "online",
                        "lines": [{"sku": HOT_SKU, "qty": 1}],
                    },
                    token=self.token,
                )[0]
                == 201
            )
            self.pg.checkpoint()
            print(f"  {database_name}: {args.clients} connections, {args.seconds:.0f} s ...", flush=True)
            meter = cputime.started(server)
            run = load.http_load(
                port,
                "reserve-online",
                STORE,
                HOT_SKU,
                args.clients,
                args.seconds,
                self.nonce,
                prefer_wrk=not args.no_wrk,
                wrk_threads=args.wrk_threads,
                token=self.token,
            )
            cpu = cputime.report(meter.stop(), run.ok)
            print(
                f"    {run.per_s:,.0f} reservations/s ({run.ok:,} answered 201 by {run.tool}; "
                f"{run.other} other answers, {run.socket_errors} socket errors; "
                f"p99 {run.latency_ms['p99']:.1f} ms)"
            )
            reserved = self.settled_levels(port, [HOT_SKU])[HOT_SKU]["reserved"]
            status, level = http_json(port, "GET", f"/v1/stores/{STORE}/stock/{HOT_SKU}", token=self.token)
            counted = warm + run.ok
            self.check(
                f"{database_name}: the reserved level matches the 201 answers",
                0 <= reserved - counted <= run.unanswered_max,
                f"reserved = {reserved:,}, 201 answers = {counted:,}",
            )
            self.check(
                f"{database_name}: every reservation answered 201",
                run.other == 0 and run.socket_errors == 0,
                f"{run.other} other answers, {run.socket_errors} socket errors; first: {run.first_other}",
            )
            if policy is not None:
                online = level.get("channels", {}).get("online", {}) if status == 200 else {}
                self.check(
                    f"{database_name}: the online channel holds every reserved unit; safety stock kept",
                    online.get("reserved") == reserved
                    and level.get("safety_stock") == policy["safety_stock"],
                    f"{str(level)[:300]}",
                )
        finally:
            self.stop_server(server)
        return {
            "ledger": run.as_dict(),
            "warmup_reservations": warm,
            "ledger_reserved_after": reserved,
            **cpu,
        }

    def figure_batch(self) -> None:
        args = self.args
        print(f"\n== {args.skus:,} SKUs: batched reservation events ==", flush=True)
        baselines = self.sql_baselines("batch", args.skus)
        database = self.database("ledger_batch")
        skus = [sqlbaseline.sku_name(i) for i in range(1, args.skus + 1)]
        server, port = self.start_ledger(database)
        try:
            self.post_events(
                port,
                [
                    receipt(f"{self.nonce}-seed-{n}", [(sku, SEED_UNITS) for sku in chunk])
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
                f"{self.nonce}-warm",
                requests_max=1,
                token=self.token,
            )
            self.pg.checkpoint()
            metrics_before = ledger_metrics(port, self.token)
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
                self.nonce,
                token=self.token,
            )
            cpu = cputime.report(meter.stop(), run.accepted)
            print(
                f"    {run.per_s:,.0f} reservations/s ({run.accepted:,} accepted in {run.requests} requests, "
                f"{run.elapsed_s:.1f} s; request p99 {run.latency_ms['p99']:.0f} ms; outcomes {run.outcomes})"
            )
            if run.first_other:
                print(f"    first other result: {run.first_other}")
            levels = self.settled_levels(port, skus)
            metrics = metrics_delta(metrics_before, ledger_metrics(port, self.token))
            reserved = sum(level["reserved"] for level in levels.values())
            on_hand = sum(level["on_hand"] for level in levels.values())
            counted = warm.accepted + run.accepted
            self.check(
                "batch: the ledger's reserved levels add up to the accepted events",
                reserved == counted,
                f"sum(reserved) over {len(levels):,} SKUs = {reserved:,}, accepted = {counted:,} "
                f"({warm.accepted} of them warm-up)",
            )
            self.check(
                "batch: on hand is untouched by reservations",
                on_hand == SEED_UNITS * len(skus),
                f"sum(on_hand) = {on_hand:,}",
            )
            self.check(
                "batch: every event was accepted",
                set(run.outcomes) <= {"accepted"},
                f"outcomes {run.outcomes}",
            )
        finally:
            self.stop_server(server)
        token_used = self.token is not None
        self.measured["batch"] = {
            "ledger": run.as_dict(),
            "baselines": baselines,
            "warmup_accepted": warm.accepted,
            "ledger_reserved_after": reserved,
            "ledger_metrics_delta": metrics,
            "ledger_token": token_used,
            **cpu,
        }

    def figure_read(self) -> None:
        args = self.args
        print(f"\n== GET /v1/stores/{{s}}/stock/{{sku}}: {args.read_connections} connections ==", flush=True)
        trivial_script = Path(__file__).with_name("trivial_app.py")
        server, port = self.start_server(
            "trivial-fastapi", [sys.executable, str(trivial_script)], dict(os.environ)
        )
        try:
            print(f"  baseline: trivial FastAPI endpoint, {args.seconds:.0f} s ...", flush=True)
            trivial = self.read_load(port, token=None)  # the baseline has no access control
        finally:
            self.stop_server(server)
        database = self.database("ledger_read")
        server, port = self.start_ledger(database)
        try:
            self.post_events(port, [receipt(f"{self.nonce}-seed", [(READ_SKU, 1000)])])
            print(f"  ledger: GET /v1/stores/{STORE}/stock/{READ_SKU}, {args.seconds:.0f} s ...", flush=True)
            ledger = self.read_load(port, token=self.token)
            status, body = http_json(port, "GET", f"/v1/stores/{STORE}/stock/{READ_SKU}", token=self.token)
            self.check(
                "read: the ledger answers the seeded level",
                status == 200 and body.get("on_hand") == 1000,
                f"{status} {body}",
            )
        finally:
            self.stop_server(server)
        self.measured["read"] = {
            "ledger": ledger.as_dict(),
            "trivial": trivial.as_dict(),
            "ledger_token": self.token is not None,
        }

    def read_load(self, port: int, token: str | None) -> load.HttpRun:
        args = self.args
        if args.warmup_seconds > 0:
            load.http_load(
                port,
                "get",
                STORE,
                READ_SKU,
                args.read_connections,
                args.warmup_seconds,
                self.nonce,
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
            self.nonce,
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

    # --- talking to the ledger ----------------------------------------------------------------------------

    def post_events(self, port: int, events: list[dict[str, Any]]) -> None:
        status, body = http_json(
            port,
            "POST",
            "/v1/events",
            events,
            content_type="application/cloudevents-batch+json",
            timeout_s=120,
            token=self.token,
        )
        outcomes = [result.get("outcome") for result in body["results"]] if status == 200 else []
        if status != 200 or set(outcomes) != {"accepted"}:
            raise BenchError(f"seeding the ledger failed: {status} {str(body)[:500]}")

    def settled_levels(self, port: int, skus: list[str], store: str = STORE) -> dict[str, dict[str, int]]:
        """The levels once two reads a second apart agree (other workers' caches catch up)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        previous: dict[str, dict[str, int]] | None = None
        while time.monotonic() < deadline:
            current = self.levels(port, skus, store)
            if current == previous:
                return current
            previous = current
            time.sleep(1.0)
        raise BenchError(f"the ledger's levels did not settle within {SETTLE_TIMEOUT_S:.0f} s")

    def levels(self, port: int, skus: list[str], store: str = STORE) -> dict[str, dict[str, int]]:
        levels: dict[str, dict[str, int]] = {}
        for chunk in chunks(skus, LOOKUP_CHUNK):
            query = "&".join(f"sku={sku}" for sku in chunk)
            status, body = http_json(port, "GET", f"/v1/stores/{store}/stock?{query}", token=self.token)
            if status != 200:
                raise BenchError(f"reading levels failed: {status} {str(body)[:500]}")
            for item in body["items"]:
                levels[item["sku"]] = {"on_hand": item["on_hand"], "reserved": item["reserved"]}
        return levels


def ledger_metrics(port: int, token: str | None = None) -> dict[str, float]:
    """The ledger's own `ledger_*` samples from /metrics (one worker's view when there are several)."""
    status, text = http_json(port, "GET", "/metrics", token=token)
    samples: dict[str, float] = {}
    if status != 200 or not isinstance(text, str):
        return samples
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if line.startswith("ledger_"):
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def metrics_delta(before: dict[str, float], after: dict[str, float], who: str = "ledger") -> dict[str, float]:
    """What changed during the run, printed so that the writer's batching can be read next to the rate."""
    delta = {
        name: after[name] - before.get(name, 0.0)
        for name in sorted(after)
        if after[name] != before.get(name, 0.0) and not name.endswith("_created")
    }
    if delta:
        print(f"    {who} /metrics during the run: " + ", ".join(f"{k} +{v:,.0f}" for k, v in delta.items()))
    return delta


def ledger_command() -> list[str]:
    """The `ledger` console script of this interpreter's environment, or the module."""
    script = Path(sys.executable).with_name("ledger")
    if script.exists():
        return [str(script)]
    found = shutil.which("ledger")
    return [found] if found else [sys.executable, "-m", "ledger.cli"]


def create_admin_token(env: dict[str, str]) -> str:
    """`ledger tokens create --name bench --role admin` in env's LEDGER_DATABASE_URL; the token it prints."""
    finished = subprocess.run(
        [*ledger_command(), "tokens", "create", "--name", "bench", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or len(lines) != 1:
        raise BenchError(f"ledger tokens create failed ({finished.returncode}): {finished.stderr[-1000:]}")
    return lines[0].strip()


def receipt(event_id: str, lines: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench/seed",
        "type": "stock.receipt",
        "time": datetime.now(UTC).isoformat(),
        "subject": STORE,
        "data": {"lines": [{"sku": sku, "qty": qty} for sku, qty in lines], "reference": "bench seed"},
    }


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
