"""The SQL baseline: the plain conditional UPDATE from psycopg clients (threads, processes) and pgbench."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from plumbing import BenchError, Postgres

STOCK_UNITS = 10**12  # never runs out: every UPDATE succeeds, as every ledger reservation does
UPDATE_SQL = "UPDATE stock SET reserved = reserved + 1 WHERE sku = %s AND on_hand - reserved >= 1"
CONNECT_TIMEOUT_S = 10
BARRIER_TIMEOUT_S = 60
CLIENT_ERRORS = (psycopg.Error, OSError, threading.BrokenBarrierError)


@dataclass
class SqlRun:
    """What one baseline run did, checked against the table afterwards."""

    client: str
    clients: int
    rows: int
    successes: int
    elapsed_s: float
    reserved_in_table: int

    @property
    def per_s(self) -> float:
        return self.successes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def consistent(self) -> bool:
        return self.successes == self.reserved_in_table

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "clients": self.clients,
            "rows": self.rows,
            "successes": self.successes,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_s": round(self.per_s, 1),
            "reserved_in_table": self.reserved_in_table,
            "consistent": self.consistent,
        }


def sku_name(index: int) -> str:
    return f"SKU-{index}"


def prepare_table(pg: Postgres, database: str, rows: int) -> None:
    """A fresh `stock` table: one row per SKU, plenty on hand, nothing reserved."""
    pg.execute(
        "CREATE TABLE stock (sku text PRIMARY KEY, on_hand bigint NOT NULL, reserved bigint NOT NULL)",
        database,
    )
    pg.execute(
        f"INSERT INTO stock SELECT 'SKU-' || i, {STOCK_UNITS}, 0 FROM generate_series(1, {rows}) i", database
    )
    pg.execute("VACUUM ANALYZE stock", database)
    pg.checkpoint()


def reserved_total(pg: Postgres, database: str) -> int:
    return int(pg.execute("SELECT coalesce(sum(reserved), 0) FROM stock", database)[0][0])


def _update_loop(conninfo: str, rows: int, seed: int, start: Any, duration_s: float) -> int:
    """One client: its own autocommit connection, one durable UPDATE after another until the time is up."""
    skus = [sku_name(i) for i in range(1, rows + 1)]
    chooser = random.Random(seed)
    done = 0
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute("SET statement_timeout = '60s'")
        start.wait(BARRIER_TIMEOUT_S)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            sku = skus[0] if rows == 1 else chooser.choice(skus)
            done += conn.execute(UPDATE_SQL, (sku,)).rowcount  # prepared after the 5th (psycopg's default)
    return done


def run_threads(pg: Postgres, database: str, clients: int, rows: int, duration_s: float) -> SqlRun:
    """`clients` threads in this process, each with its own connection (psycopg releases the GIL on I/O)."""
    start = threading.Barrier(clients + 1)
    counts: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        try:
            done = _update_loop(pg.conninfo(database), rows, seed, start, duration_s)
        except CLIENT_ERRORS as error:  # reported below; breaking the barrier releases the others
            start.abort()
            with lock:
                errors.append(error)
            return
        with lock:
            counts.append(done)

    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait(BARRIER_TIMEOUT_S)
    began = time.monotonic()
    for thread in threads:
        thread.join(duration_s + 120)
    elapsed = time.monotonic() - began
    if errors or len(counts) != clients:
        raise BenchError(f"the Python baseline failed: {errors[:1] or 'a client did not finish'}")
    return SqlRun("python-threads", clients, rows, sum(counts), elapsed, reserved_total(pg, database))


def _process_client(conninfo: str, rows: int, seed: int, start: Any, duration_s: float, results: Any) -> None:
    try:
        results.put(("ok", _update_loop(conninfo, rows, seed, start, duration_s)))
    except CLIENT_ERRORS as error:  # the parent reports it
        start.abort()
        results.put(("error", repr(error)))


def run_processes(pg: Postgres, database: str, clients: int, rows: int, duration_s: float) -> SqlRun:
    """`clients` separate Python processes, one connection each: no GIL shared between clients."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(clients + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_process_client,
            daemon=True,
            args=(pg.conninfo(database), rows, seed, start, duration_s, results),
        )
        for seed in range(clients)
    ]
    try:
        for process in processes:
            process.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(BARRIER_TIMEOUT_S)
        began = time.monotonic()
        try:
            answers = [results.get(timeout=duration_s + 120) for _ in processes]
        except queue.Empty:
            raise BenchError("a Python baseline process did not report in time") from None
        elapsed = time.monotonic() - began
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
    failures = [detail for kind, detail in answers if kind != "ok"]
    if failures:
        raise BenchError(f"the Python process baseline failed: {failures[0]}")
    return SqlRun(
        "python-processes",
        clients,
        rows,
        sum(detail for _, detail in answers),
        elapsed,
        reserved_total(pg, database),
    )


def run_pgbench(
    pg: Postgres, database: str, clients: int, rows: int, duration_s: float, workdir: Path, threads: int
) -> SqlRun:
    """pgbench (C, libpq, prepared statements) with the same UPDATE, `clients` connections."""
    script = workdir / f"pgbench-{database}.sql"
    if rows == 1:
        script.write_text(
            f"UPDATE stock SET reserved = reserved + 1 WHERE sku = '{sku_name(1)}' "
            "AND on_hand - reserved >= 1;\n"
        )
    else:
        script.write_text(
            f"\\set k random(1, {rows})\n"
            "UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-' || :k "
            "AND on_hand - reserved >= 1;\n"
        )
    argv = [
        str(pg.bin("pgbench")),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-T",
        str(max(1, round(duration_s))),
        "-f",
        str(script),
        "-h",
        pg.socket_dir,
        "-p",
        str(pg.port),
        "-U",
        "postgres",
        database,
    ]
    try:
        finished = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + 120,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"pgbench did not finish in time: {error}") from None
    if finished.returncode != 0:
        raise BenchError(f"pgbench failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    processed = re.search(r"number of transactions actually processed: (\d+)", finished.stdout)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", finished.stdout)
    if not processed or not tps:
        raise BenchError(f"could not read pgbench's output:\n{finished.stdout[-2000:]}")
    successes = int(processed.group(1))
    elapsed = successes / float(tps.group(1)) if float(tps.group(1)) > 0 else duration_s
    return SqlRun("pgbench", clients, rows, successes, elapsed, reserved_total(pg, database))


def pgbench_version(pg: Postgres) -> str:
    try:
        return subprocess.run(
            [str(pg.bin("pgbench")), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return "unknown"
