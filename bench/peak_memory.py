"""The peak memory of a process and of each of its children, sampled while it runs.

`ru_maxrss` from `wait4` is not the command's own: Linux keeps a process's high-water mark across
`execve`, so a command started by a large benchmark process reports at least that process's
resident size at the fork (measured: `/bin/true` started from a process of 513 MB reported 513
MB). `VmHWM` in /proc/PID/status belongs to the program the process runs (a new address space at
`execve`), so it is read here every `SAMPLE_EVERY_S` for the process and each child it has, and
the last reading of each is its peak (the mark only grows). A child that lives less than one
interval may be missed. Linux only.
"""

from __future__ import annotations

import threading
from pathlib import Path

SAMPLE_EVERY_S = 0.05


def _high_water_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class PeakMemory:
    """`with PeakMemory(pid) as peak:` while the process runs; then `peak.own_mb` and
    `peak.children_mb` (the largest child's)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peaks_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in [self._pid, *_children(self._pid)]:
                kb = _high_water_kb(pid)
                if kb is not None:
                    self._peaks_kb[pid] = max(kb, self._peaks_kb.get(pid, 0))
            self._stop.wait(SAMPLE_EVERY_S)

    @property
    def own_mb(self) -> int:
        return round(self._peaks_kb.get(self._pid, 0) / 1024)

    @property
    def children_mb(self) -> int:
        return round(max((kb for pid, kb in self._peaks_kb.items() if pid != self._pid), default=0) / 1024)
