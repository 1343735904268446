"""A writer process on a test's database, started and stopped around a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.writer.process import BuildWriter, start_writer_process, stop_writer_process

STOP_TIMEOUT_S = 15.0


@contextlib.contextmanager
def writer_process(
    build: BuildWriter,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outbox_bytes_max: int,
) -> Iterator[str]:
    """A writer process built by `build` (it runs in the process, and reads its settings from the
    environment) on the database; yields the path of its socket."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.delenv("LEDGER_WRITER_SOCKET", raising=False)
    path = str(tmp_path / "writer.sock")
    process = start_writer_process(build, path, outbox_bytes_max)
    try:
        yield path
    finally:
        stop_writer_process(process, STOP_TIMEOUT_S)
