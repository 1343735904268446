"""Where the CPU went during a run: CPU seconds per part (HTTP workers, writer, PostgreSQL, load generator).

On 2 cores every part of a write shares the same CPU, so "what limits it" is answered by how many CPU
microseconds each part spends per reservation. Processes are grouped by what they are:
- postgres: every process named postgres (the backends, the WAL writer, the checkpointer, ...);
- ledger writer: a process of a ledger server running at the server's own priority (the writer process);
- ledger http: the server's processes running at a lower priority (`LEDGER_HTTP_NICE`);
- load: wrk and pgbench (once reaped, counted through this process) and this benchmark's own process
  (its threads send the batches);
- other: everything else on the machine (other people's work: noise).
Needs psutil; without it the breakdown is simply left out.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


class CpuMeter:
    def __init__(self, server_pid: int | None) -> None:
        self.psutil = _psutil()
        self.server_pid = server_pid
        self.before: dict[int, tuple[str, float]] = {}
        self.started = 0.0

    def _part(self, process: Any, server_tree: set[int], server_nice: int) -> str:
        name = process.name()
        if name.startswith("postgres"):
            return "postgres"
        if name in ("wrk", "pgbench") or process.pid == os.getpid():
            return "load"
        if process.pid in server_tree:
            return "ledger http" if process.nice() > server_nice else "ledger writer"
        return "other"

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        psutil = self.psutil
        server_tree: set[int] = set()
        server_nice = 0
        if self.server_pid is not None:
            try:
                root = psutil.Process(self.server_pid)
                server_tree = {root.pid, *(child.pid for child in root.children(recursive=True))}
                server_nice = min(psutil.Process(pid).nice() for pid in server_tree)
            except psutil.Error:
                pass
        seen = {}
        for process in psutil.process_iter():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    seconds = times.user + times.system
                    if process.pid == os.getpid():  # wrk and pgbench, once they have ended and been reaped
                        seconds += times.children_user + times.children_system
                    seen[process.pid] = (self._part(process, server_tree, server_nice), seconds)
            except psutil.Error:
                continue
        return seen

    def start(self) -> None:
        if self.psutil is None:
            return
        self.before = self._snapshot()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float] | None:
        """CPU seconds per part since start(); processes that ended meanwhile are not counted."""
        if self.psutil is None:
            return None
        after = self._snapshot()
        used: Counter[str] = Counter()
        for pid, (part, seconds) in after.items():
            earlier = self.before.get(pid)
            used[part] += seconds - (earlier[1] if earlier else 0.0)
        used["wall"] = time.monotonic() - self.started
        return {part: round(seconds, 3) for part, seconds in used.items()}


def started(server: Any) -> CpuMeter:
    """A meter over a bench Server's process tree, already counting."""
    meter = CpuMeter(server.process.pid if server.process else None)
    meter.start()
    return meter


def report(cpu: dict[str, float] | None, events: int) -> dict[str, Any]:
    """Prints CPU microseconds per event by part; returns what results.json keeps."""
    micros = per_event(cpu, events)
    if cpu and micros:
        parts = ", ".join(f"{part} {micros[part]:.0f}" for part in sorted(micros, key=lambda p: -micros[p]))
        available = (os.cpu_count() or 1) * 1e6 * cpu["wall"] / events
        print(
            f"    CPU µs per reservation: {parts} (over {cpu['wall']:.1f} s; all cores give {available:.0f})"
        )
    return {"cpu_seconds": cpu, "cpu_us_per_reservation": micros}


def per_event(cpu: dict[str, float] | None, events: int) -> dict[str, float] | None:
    """CPU microseconds per recorded event, per part."""
    if not cpu or events <= 0:
        return None
    return {part: round(seconds * 1e6 / events, 1) for part, seconds in cpu.items() if part != "wall"}
