"""The one place that wires the parts: settings -> recorder -> cache -> writer -> ledger."""

from __future__ import annotations

import gc
from typing import Any

from ledger.config import Settings
from ledger.intake.envelope import IntakeLimits
from ledger.service import Ledger, WriterPort
from ledger.state_cache import StateCache
from ledger.storage.database_urls import database_identity
from ledger.storage.opening import open_recorder
from ledger.storage.traced import traced_recorder
from ledger.telemetry.logs import configure_logging
from ledger.telemetry.tracing import configure_tracing
from ledger.writer.facade import Writer
from ledger.writer.remote import RemoteWriter
from ledger.writer.submission import WriterLimits
from ledger.writer.thread import ThreadWriterClient, WriterThread


def open_database(settings: Settings) -> Any:
    """The configured database's recorder, its schema brought up to date (SchemaTooNew if the
    database needs a newer release: ledger/storage/migrator.py)."""
    return open_recorder(
        settings.database_url,
        settings.db_pool_size,
        settings.db_lock_timeout_s,
        migration_wait_s=settings.migration_wait_s,
        deadlock_timeout_ms=settings.db_deadlock_timeout_ms,
        writer_answer_wait_s=settings.writer_answer_wait_s,
    )


def _cache(settings: Settings) -> StateCache:
    return StateCache(
        levels_max=settings.cache_levels_max,
        reservations_max=settings.cache_reservations_max,
        catch_up_events_max=settings.cache_catch_up_events_max,
    )


def build_writer(settings: Settings, recorder: Any = None) -> Writer:
    """The group-commit writer on its own recorder (or the one given) and cache (not started)."""
    if recorder is None:
        recorder = open_database(settings)
    writer = Writer(
        traced_recorder(recorder),
        _cache(settings),
        WriterLimits(
            batch_events_max=settings.writer_batch_events_max,
            retries_max=settings.writer_retries_max,
            queue_submissions_max=settings.writer_queue_submissions_max,
            expiry_interval_s=settings.expiry_interval_ms / 1000,
            expiry_batch_max=settings.expiry_batch_max,
            optimistic=settings.writer_optimistic,
            slow_batch_s=settings.writer_slow_batch_ms / 1000,
        ),
    )
    writer.database = database_identity(settings.database_url)
    return writer


def build_writer_from_environment() -> Writer:
    """The writer process's writer: it reads the settings from the environment it inherited, and
    logs as the serving process does."""
    tune_gc()
    settings = Settings()
    configure_logging(settings.log_format, settings.kafka_log_level)
    configure_tracing(settings.tracing, "writer")
    return build_writer(settings)


def build_ledger(settings: Settings, process: str = "http") -> Ledger:
    """A ledger on the configured database, schema created; call start() to run its threads.

    With LEDGER_WRITER_SOCKET set it sends its writes to that writer process (see
    ledger/writer/process.py); otherwise its writer is a thread of this process. `process` names
    this process's part on its spans, when LEDGER_TRACING is on."""
    configure_tracing(settings.tracing, process)
    writer_port: WriterPort
    recorder = open_database(settings)
    if settings.writer_socket:
        cache = _cache(settings)
        writer_port = RemoteWriter(
            settings.writer_socket,
            cache,
            settings.request_timeout_s,
            settings.writer_client_outbox_bytes_max,
            database=database_identity(settings.database_url),
        )
    else:
        # The writer's recorder is the readers' too (one pool), traced only on the writer's side.
        writer = build_writer(settings, recorder)
        cache = writer.cache
        writer_port = ThreadWriterClient(WriterThread(writer), settings.request_timeout_s)
    return Ledger(
        recorder,
        cache,
        writer_port,
        refresh_interval_s=settings.cache_refresh_ms / 1000,
        wait_for_position_s_max=settings.wait_for_position_ms_max / 1000,
        read_answer_wait_s=settings.request_timeout_s,
    )


def intake_limits(settings: Settings) -> IntakeLimits:
    return IntakeLimits(lines_per_event_max=settings.lines_per_event_max, units=dict(settings.units))


# Python's defaults are (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)
# `ledger import`: a youngest generation twenty times as large. Its collections found nothing
# (no cycles: every batch's objects are freed by reference counting), yet each walked the batches
# alive at the time, up to 180 ms a run, 4% of the import's CPU (bench/README.md, the import).
# Nobody waits on an import's pauses; a server's clients do, so the serving processes keep theirs.
BATCH_JOB_GC_THRESHOLDS = (1_000_000, 20, 100)


def tune_gc(*, batch_job: bool = False) -> None:
    """Fewer runs of the cyclic garbage collector in the serving processes. Their caches hold
    hundreds of thousands of long-lived objects, and every full collection walks them all: with
    the defaults that was some 15% of the writer's CPU on 1,000-event batches (54.7 against
    46.5 µs an event, measured in-process). Reference counting still frees everything that is
    not in a cycle at once, which is nearly everything here. `batch_job`: rarer still, for a
    command whose throughput is all that counts."""
    gc.set_threshold(*(BATCH_JOB_GC_THRESHOLDS if batch_job else GC_THRESHOLDS))
