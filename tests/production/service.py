"""`ledger serve` as production runs it: the writer in its own process, two HTTP workers and the
Kafka intake, on a real database; plus clients of the writer's socket that never read."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from kafka_harness import Topics, consumer_env
from support.server import LedgerServer

from ledger.writer.socket_path import lock_path

HTTP_WORKERS = 2
# A log line that says the Kafka intake could not record a batch and reads it again.
FAILED_RECORDING_WORDS = ("recording", "failed")


@dataclass(frozen=True)
class KafkaSetup:
    bootstrap: str
    topics: Topics


class ProductionService:
    """One `ledger serve` with the production configuration, restartable (kill -9 included).

    The writer's socket is named explicitly (LEDGER_WRITER_SOCKET), so that it stays the same across
    restarts and the test can connect to it."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        request_timeout_s: float,
        kafka: KafkaSetup | None = None,
        extra_env: dict[str, str] | None = None,
        name: str = "ledger",
    ) -> None:
        self.writer_socket = os.path.join(tempfile.gettempdir(), f"ledger-prod-{uuid.uuid4().hex[:12]}.sock")
        env = {
            "LEDGER_HTTP_WORKERS": str(HTTP_WORKERS),
            "LEDGER_WRITER_PROCESS": "true",
            "LEDGER_WRITER_SOCKET": self.writer_socket,
            "LEDGER_REQUEST_TIMEOUT_S": str(request_timeout_s),
        }
        if kafka is not None:
            intake = consumer_env(database_url, kafka.bootstrap, kafka.topics)
            env.update({key: value for key, value in intake.items() if key.startswith("LEDGER_")})
        env.update(extra_env or {})
        self.request_timeout_s = request_timeout_s
        self.server = LedgerServer(database_url, log_dir, env, name=name)
        self.starts = 0

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int | None:
        process = self.server.process
        return None if process is None else process.pid

    def start(self) -> ProductionService:
        self.server.start()
        self.starts += 1
        return self

    def kill(self) -> None:
        """kill -9 of the whole process group: serving process, HTTP workers and writer."""
        self.server.kill()

    def stop(self) -> int | None:
        """Stops the service (LedgerServer.stop), then removes its socket and the lock file beside it;
        returns its exit code."""
        exit_code = self.server.stop()
        for path in (self.writer_socket, lock_path(self.writer_socket)):  # its path, named for it alone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return exit_code

    def running(self) -> bool:
        process = self.server.process
        return process is not None and process.poll() is None

    def log(self) -> str:
        try:
            return self.server.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def failed_recordings(self) -> list[str]:
        """The log lines in which recording a batch failed (the intake then reads it again)."""
        return [
            line
            for line in self.log().splitlines()
            if all(word in line.lower() for word in FAILED_RECORDING_WORDS)
        ]

    def process_ids(self) -> frozenset[int]:
        """The serving process and every process under it (HTTP workers, writer): a process that
        was killed and started again, by uvicorn's supervisor or ours, shows as a new id."""
        pid = self.pid
        assert pid is not None, "the service is not running"
        with contextlib.suppress(psutil.NoSuchProcess):
            return frozenset([pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))])
        return frozenset()

    def writer_process(self) -> psutil.Process:
        """The writer process: the one process of the service listening on the writer's socket."""
        pid = self.pid
        assert pid is not None, "the service is not running"
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any(conn.laddr == self.writer_socket for conn in child.net_connections(kind="unix")):
                    return child
        raise AssertionError(f"no process of the service listens on {self.writer_socket}")


# How often another silent client connects, and how many are kept connected at once.
STALLED_CONNECT_INTERVAL_S = 1.0
STALLED_CLIENTS_MAX = 8
# The smallest receive buffer the kernel allows: the writer's sends to it fill up after a few frames.
STALLED_RECEIVE_BUFFER_BYTES = 1


class StalledClients:
    """Clients of the writer's Unix socket that connect and never read (as a Kafka intake between
    two polls, or a stuck worker, would). A new one connects every STALLED_CONNECT_INTERVAL_S, so
    that one is stalled at every moment even if the writer disconnects those that fall behind, and
    across restarts of the service."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.connected_total = 0
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalled-clients", daemon=True)

    def __enter__(self) -> StalledClients:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self._sockets:
            sock.close()

    def _run(self) -> None:
        while not self._stop.wait(STALLED_CONNECT_INTERVAL_S):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER_BYTES)
            try:
                sock.connect(self.socket_path)
            except OSError:  # the service is down (killed, restarting): try again next interval
                sock.close()
                continue
            self.connected_total += 1
            self._sockets.append(sock)
            if len(self._sockets) > STALLED_CLIENTS_MAX:
                self._sockets.pop(0).close()
