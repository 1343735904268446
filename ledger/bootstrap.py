"""The one place that wires the parts: settings -> recorder -> cache -> writer -> ledger."""

from __future__ import annotations

from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger
from ledger.state_cache import StateCache
from ledger.storage.recorders import open_recorder
from ledger.writer import Writer, WriterLimits


def build_ledger(settings: Settings) -> Ledger:
    """A ledger on the configured database, schema created; call start() to run its threads."""
    recorder = open_recorder(settings.database_url, settings.db_pool_size, settings.db_lock_timeout_s)
    cache = StateCache(
        levels_max=settings.cache_levels_max,
        reservations_max=settings.cache_reservations_max,
        catch_up_events_max=settings.cache_catch_up_events_max,
    )
    writer = Writer(
        recorder,
        cache,
        WriterLimits(
            batch_events_max=settings.writer_batch_events_max,
            retries_max=settings.writer_retries_max,
            queue_submissions_max=settings.writer_queue_submissions_max,
            expiry_interval_s=settings.expiry_interval_ms / 1000,
            expiry_batch_max=settings.expiry_batch_max,
        ),
    )
    return Ledger(
        recorder,
        cache,
        writer,
        refresh_interval_s=settings.cache_refresh_ms / 1000,
        wait_for_position_s_max=settings.wait_for_position_ms_max / 1000,
        request_timeout_s=settings.request_timeout_s,
    )


def intake_limits(settings: Settings) -> IntakeLimits:
    return IntakeLimits(lines_per_event_max=settings.lines_per_event_max, units=dict(settings.units))
