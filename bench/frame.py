"""The run frame every benchmark script shares: what a run started (to stop it again), what it measured
and checked (to report it), and the few requests that seed a ledger and read its levels back.

session.py drives a frame through a run; the measurements themselves live in each script (figures.py
for bench/run.py).
"""

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

from plumbing import BenchError, Postgres, Server, free_port, http_json, wait_ready

STORE = "store-1"
HOT_SKU = "HOT-1"
READ_SKU = "READ-1"
SEED_UNITS = 1_000_000_000  # the most one event line may carry (CONTRACT §1)
SETTLE_TIMEOUT_S = 30.0
LOOKUP_CHUNK = 250


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
    # What every server started from now on is launched with (alternation.py's --paired-draws): a
    # command in front of its own, and variables added to its environment.
    launch_prefix: list[str] = field(default_factory=list)
    launch_env: dict[str, str] = field(default_factory=dict)

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
            name,
            [*self.launch_prefix, *argv, "--port", str(port), *self.args.serve_argv],
            env | self.launch_env,
            self.workdir / f"{name}.log",
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


def receipt(event_id: str, lines: list[tuple[str, int]], store: str = STORE) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench/seed",
        "type": "stock.receipt",
        "time": datetime.now(UTC).isoformat(),
        "subject": store,
        "data": {"lines": [{"sku": sku, "qty": qty} for sku, qty in lines], "reference": "bench seed"},
    }


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
