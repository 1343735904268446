"""Where the CPU went during a run: CPU seconds per part (HTTP workers, writer, PostgreSQL, load generator).

On 2 cores every part of a write shares the same CPU, so "what limits it" is answered by how many CPU
microseconds each part spends per reservation. Processes are grouped by what they are:
- postgres: every process named postgres (the backends, the WAL writer, the checkpointer, ...);
- ledger writer: a process of a ledger server running at the server's own priority (the writer process);
- ledger http: the server's processes running at a lower priority (`LEDGER_HTTP_NICE`);
- load: wrk and pgbench (once reaped, counted through this process) and this benchmark's own process
  (its threads send the batches);
- other: everything else on the machine (other people's work: noise);
- with several servers, or other process trees named by the caller (a broker, a baseline consumer),
  each is a part of its own.
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
    """`server_pid`: one ledger server (parts "ledger writer", "ledger http"); `servers`: several, by
    label ("ledger a writer", ...); `trees`: other process trees counted under a name of their own
    (a broker, a baseline consumer), by the pid of their root."""

    def __init__(
        self,
        server_pid: int | None,
        *,
        servers: dict[str, int] | None = None,
        trees: dict[str, int] | None = None,
    ) -> None:
        self.psutil = _psutil()
        self.servers = dict(servers or {}) | ({"": server_pid} if server_pid is not None else {})
        self.trees = dict(trees or {})
        self.before: dict[int, tuple[str, float]] = {}
        self.started = 0.0

    def _part(self, process: Any, parts: dict[int, str], servers: dict[int, tuple[str, int]]) -> str:
        name = process.name()
        if name.startswith("postgres"):
            return "postgres"
        if name in ("wrk", "pgbench") or process.pid == os.getpid():
            return "load"
        if process.pid in parts:
            return parts[process.pid]
        if process.pid in servers:
            label, server_nice = servers[process.pid]
            role = "http" if process.nice() > server_nice else "writer"
            return " ".join(word for word in ("ledger", label, role) if word)
        return "other"

    def _tree(self, pid: int) -> set[int]:
        try:
            root = self.psutil.Process(pid)
            return {root.pid, *(child.pid for child in root.children(recursive=True))}
        except self.psutil.Error:
            return set()

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        psutil = self.psutil
        parts = {pid: name for name, root in self.trees.items() for pid in self._tree(root)}
        servers: dict[int, tuple[str, int]] = {}
        for label, root in self.servers.items():
            tree = self._tree(root)
            try:
                server_nice = min(psutil.Process(pid).nice() for pid in tree) if tree else 0
            except psutil.Error:
                server_nice = 0
            servers.update({pid: (label, server_nice) for pid in tree})
        seen = {}
        for process in psutil.process_iter():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    seconds = times.user + times.system
                    if process.pid == os.getpid():  # wrk and pgbench, once they have ended and been reaped
                        seconds += times.children_user + times.children_system
                    seen[process.pid] = (self._part(process, parts, servers), seconds)
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


def report(cpu: dict[str, float] | None, events: int, unit: str = "reservation") -> dict[str, Any]:
    """Prints CPU microseconds per event by part; returns what results.json keeps."""
    micros = per_event(cpu, events)
    if cpu and micros:
        parts = ", ".join(f"{part} {micros[part]:.0f}" for part in sorted(micros, key=lambda p: -micros[p]))
        available = (os.cpu_count() or 1) * 1e6 * cpu["wall"] / events
        print(f"    CPU µs per {unit}: {parts} (over {cpu['wall']:.1f} s; all cores give {available:.0f})")
    return {"cpu_seconds": cpu, f"cpu_us_per_{unit}": micros}


def per_event(cpu: dict[str, float] | None, events: int) -> dict[str, float] | None:
    """CPU microseconds per recorded event, per part."""
    if not cpu or events <= 0:
        return None
    return {part: round(seconds * 1e6 / events, 1) for part, seconds in cpu.items() if part != "wall"}
