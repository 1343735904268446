"""The webhook spool: deliveries the database could not take in time, one durable file each.

A file is written once under a temporary name, fsync'd, renamed to its final name and the
directory fsync'd, so a file that exists is whole and on disk. Names sort by arrival, so the inbox
worker drains them in order; it deletes a file only after the database has committed its row,
and storing a delivery twice is harmless (deliveries.py), so a crash anywhere loses nothing and
records nothing twice. One process drains at a time (an flock on `.drain.lock`).

The file format is defined here only: `encode` writes it, `decode` reads it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from adapters.deliveries import Delivery

FORMAT_VERSION = 1
SUFFIX = ".delivery"
SET_ASIDE_DIR = "set-aside"  # files that could not be read: kept for an operator, never deleted
LOCK_NAME = ".drain.lock"


class SpoolFull(Exception):
    """The spool holds its maximum of deliveries; the delivery is answered 503 (the sender retries)."""

    def __init__(self, directory: Path, deliveries_max: int) -> None:
        super().__init__(f"the webhook spool {directory} holds its maximum of {deliveries_max} deliveries")
        self.directory = directory
        self.deliveries_max = deliveries_max


class UnreadableSpoolFile(Exception):
    """A spool file that is not a delivery this code wrote."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def encode(delivery: Delivery) -> bytes:
    return orjson.dumps(
        {
            "version": FORMAT_VERSION,
            "source": delivery.source,
            "delivery_id": delivery.delivery_id,
            "received_at": delivery.received_at,
            "payload": delivery.payload,
        }
    )


def decode(path: Path, data: bytes) -> Delivery:
    try:
        fields: Any = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise UnreadableSpoolFile(path, f"not JSON: {error}") from None
    if not isinstance(fields, dict) or fields.get("version") != FORMAT_VERSION:
        raise UnreadableSpoolFile(path, f"not a version {FORMAT_VERSION} delivery")
    try:
        return Delivery(
            str(fields["source"]),
            str(fields["delivery_id"]),
            str(fields["received_at"]),
            str(fields["payload"]),
        )
    except (KeyError, ValueError) as error:
        raise UnreadableSpoolFile(path, f"not a delivery: {error}") from None


def _write_whole(descriptor: int, data: bytes) -> None:
    """Writes every byte or raises: os.write may write only part (a disk nearly full), and the
    part it did not write was lost, in a file that looked complete but for its end."""
    unwritten = memoryview(data)
    while unwritten:  # each round writes at least one byte: at most len(data) rounds
        written = os.write(descriptor, unwritten)
        if written <= 0:
            raise OSError(errno.ENOSPC, "the spool file took no more bytes")
        unwritten = unwritten[written:]


class DeliverySpool:
    def __init__(self, directory: Path, deliveries_max: int) -> None:
        if deliveries_max < 1:
            raise ValueError("the spool must hold at least one delivery")
        self.directory = directory
        self.deliveries_max = deliveries_max
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # the count-then-write of append, within this process
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def append(self, delivery: Delivery) -> Path:
        """Writes the delivery durably; raises SpoolFull past the limit."""
        with self._lock:
            if self.count() >= self.deliveries_max:
                raise SpoolFull(self.directory, self.deliveries_max)
            stamp = delivery.received_at.replace("-", "").replace(":", "")
            name = f"{stamp}-{os.getpid()}-{next(self._sequence):09d}{SUFFIX}"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_whole(descriptor, encode(delivery))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.rename(temporary, final)
        except BaseException:
            # Not acknowledged: the request is answered 5xx and the sender sends it again.
            temporary.unlink(missing_ok=True)
            raise
        self._sync_directory()
        return final

    def count(self) -> int:
        return sum(1 for _ in self._names())

    def pending(self, limit: int) -> list[Path]:
        """The oldest `limit` deliveries, oldest first."""
        return [self.directory / name for name in sorted(self._names())[:limit]]

    def read(self, path: Path) -> Delivery:
        return decode(path, path.read_bytes())

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def set_aside(self, path: Path) -> Path:
        aside = self.directory / SET_ASIDE_DIR
        aside.mkdir(exist_ok=True, mode=0o700)
        target = aside / path.name
        os.rename(path, target)
        self._sync_directory()
        return target

    @contextlib.contextmanager
    def draining(self) -> Iterator[bool]:
        """True inside if this process may drain now (no other process is draining)."""
        descriptor = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(descriptor)  # closing releases the lock

    def _names(self) -> Iterator[str]:
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                    yield entry.name

    def _sync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def default_spool_dir(database_url: str) -> Path:
    """Beside the SQLite file (same disk, same backups); else under $XDG_STATE_HOME."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)[1:] or "ledger.db"
        return Path(path).resolve().with_name(Path(path).name + "-webhook-spool")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "stock-ledger" / "webhook-spool"
