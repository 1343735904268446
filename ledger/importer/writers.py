"""Which writer an import goes through: the running service's writer process, or one of its own.

When `ledger serve` runs with its writer in a process of its own and LEDGER_WRITER_SOCKET names
that process's socket (set it to the same path for both), the import sends its batches there: one
writer for the database, whose HTTP workers hear of every imported batch at once, as of their own
writes. Otherwise (no service, or a service whose socket is not named) the import runs a writer
of its own, as `ledger consume` does. Either way each event is recorded exactly once: every
writer decides under the log's write lock and checks (source, id) against the dedupe keys in the
same transaction (DESIGN.md, "The race for the last unit"), so two writers on one database take
turns and never record one event twice.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from ledger.bootstrap import build_writer
from ledger.cli_errors import CommandError, database_url_checked
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.importer.pipeline import PipelinedWriter
from ledger.importer.recording import ImportWriter
from ledger.results import EventResult
from ledger.state_cache import StateCache
from ledger.storage.database_urls import database_identity
from ledger.writer.remote import RemoteWriter
from ledger.writer.submission import WriterUnavailable, WrongDatabase

# The import's client of a running writer reads no levels: its cache stays at the smallest size.
UNUSED_CACHE_LEVELS = 1000
SOCKET_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ChosenWriter:
    writer: ImportWriter
    description: str


def running_writer_socket(settings: Settings) -> str | None:
    """LEDGER_WRITER_SOCKET when a writer process listens there; None when unset or nobody does
    (a service that is stopped, or one killed that left its socket file behind)."""
    path = settings.writer_socket
    if not path:
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(SOCKET_PROBE_TIMEOUT_S)
    try:
        probe.connect(path)
    except OSError:
        return None
    finally:
        probe.close()
    return path


class _RunningWriter:
    """The running service's writer process: one batch at a time, so that a batch that fails is
    sent again before anything after it (the writer process overlaps its clients' batches itself)."""

    def __init__(self, remote: RemoteWriter) -> None:
        self.remote = remote

    def submit_and_wait(
        self,
        events: list[StockEvent],
        upcoming: list[StockEvent] | None = None,
        later: list[StockEvent] | None = None,
    ) -> list[EventResult]:
        return self.remote.submit_and_wait(events)


@contextlib.contextmanager
def import_writer(settings: Settings) -> Iterator[ChosenWriter]:
    """The writer for this import, started, and stopped on the way out."""
    path = running_writer_socket(settings)
    if path is not None:
        cache = StateCache(
            levels_max=UNUSED_CACHE_LEVELS,
            reservations_max=UNUSED_CACHE_LEVELS,
            catch_up_events_max=settings.cache_catch_up_events_max,
        )
        remote = RemoteWriter(
            path,
            cache,
            settings.request_timeout_s,
            settings.writer_client_outbox_bytes_max,
            database=database_identity(settings.database_url),
        )
        try:
            remote.check_database()
        except WrongDatabase as error:
            remote.stop()
            raise CommandError(str(error)) from None
        except WriterUnavailable:
            pass  # the batches are sent again, as when it goes away later
        try:
            yield ChosenWriter(_RunningWriter(remote), f"through the running writer at {path}")
        finally:
            remote.stop()
        return
    with database_url_checked():
        writer = build_writer(settings)
    own = PipelinedWriter(writer)
    # A socket named where no writer listens (a service stopped, a path mistyped) is said so: the
    # import does not go through the service, whose HTTP workers then hear of it by their refresh.
    unheard = (
        f" (no writer answered at LEDGER_WRITER_SOCKET={settings.writer_socket})"
        if settings.writer_socket
        else ""
    )
    try:
        yield ChosenWriter(own, f"with a writer of its own{unheard}")
    finally:
        own.stop()
        writer.recorder.close()
