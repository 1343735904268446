"""What a rebuild is told (its limits, from the settings) and what it tells (its report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.config import Settings

# (phase, position replayed, head it is heading for); the phases: "filling", "catching up",
# "swapping" (PostgreSQL), "replaying" (SQLite).
Progress = Callable[[str, int, int], None]


def _setting_default(name: str) -> int:
    """The default of the setting `rebuild_<name>`: written once, in ledger/config.py."""
    default = Settings.model_fields[f"rebuild_{name}"].default
    assert isinstance(default, int), name
    return default


@dataclass(frozen=True)
class RebuildLimits:
    batch_entries: int = _setting_default("batch_entries")
    pages_ahead_max: int = _setting_default("pages_ahead_max")
    swap_entries_max: int = _setting_default("swap_entries_max")
    catch_up_rounds_max: int = _setting_default("catch_up_rounds_max")
    swap_lock_wait_ms: int = _setting_default("swap_lock_wait_ms")
    swap_attempts_max: int = _setting_default("swap_attempts_max")
    index_builds_at_once: int = _setting_default("index_builds_at_once")
    index_memory_mb: int = _setting_default("index_memory_mb")
    processes: int = _setting_default("processes")

    @classmethod
    def from_settings(cls, settings: Settings) -> RebuildLimits:
        return cls(
            batch_entries=settings.rebuild_batch_entries,
            pages_ahead_max=settings.rebuild_pages_ahead_max,
            swap_entries_max=settings.rebuild_swap_entries_max,
            catch_up_rounds_max=settings.rebuild_catch_up_rounds_max,
            swap_lock_wait_ms=settings.rebuild_swap_lock_wait_ms,
            swap_attempts_max=settings.rebuild_swap_attempts_max,
            index_builds_at_once=settings.rebuild_index_builds_at_once,
            index_memory_mb=settings.rebuild_index_memory_mb,
            processes=settings.rebuild_processes,
        )


@dataclass
class RebuildReport:
    entries: int = 0  # log entries replayed
    entries_swapped: int = 0  # of which under the writers' lock, just before the swap
    head: int = 0  # the position the rebuilt projections include
    catch_up_rounds: int = 0
    swap_attempts: int = 0
    swap_waits: int = 0  # attempts given up because readers held the tables
    writes_paused_s: float = 0.0  # how long writers waited for the rebuild (the swap, or all of it)
    elapsed_s: float = 0.0
