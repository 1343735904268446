"""`ledger serve` as a subprocess on a free port: start, wait for /readyz, stop, kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

READY_DEADLINE_S = 60.0
STOP_DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.05
REPO_ROOT = Path(__file__).resolve().parents[2]
PORT_ATTEMPTS_MAX = 3  # starts on another free port after "address already in use"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Does process `pid` hold the socket listening on 127.0.0.1:`port` (Linux's /proc; elsewhere,
    assumed)? free_port's port is free only when it answers: another test's server may bind it first,
    answer this one's readiness check, and leave this one to fail on "address already in use"."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return True
    listening = {
        fields[9]
        for fields in (line.split() for line in table.read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port  # 0A: LISTEN
    }
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in listening:
                    return True
    return False


def ledger_env(database_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ledger command: ours without any LEDGER_* setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = database_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class LedgerServer:
    """One `ledger serve` process in its own process group, logging to a file for diagnosis."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        name: str = "ledger",
        code_dir: Path = REPO_ROOT,
    ) -> None:
        self.database_url = database_url
        # Where `python -m ledger.cli` finds the package first: this checkout, or another release's.
        self.code_dir = code_dir
        self.extra_env = dict(env or {})
        self.log_path = log_dir / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = READY_DEADLINE_S) -> LedgerServer:
        for attempt in range(PORT_ATTEMPTS_MAX):
            try:
                return self._start_on_a_free_port(deadline_s)
            except RuntimeError as failed:
                # Another test's server took the port between free_port and the bind: another port.
                if not self._port_was_taken(str(failed)) or attempt == PORT_ATTEMPTS_MAX - 1:
                    raise
                self.process = None
        raise AssertionError("unreachable")

    def _port_was_taken(self, failure: str) -> bool:
        """Whether this attempt failed because its port was taken: a line that names the port and
        says so. `ledger serve`'s own check says "Address already in use"; the bind, when the port
        was taken after that check (during the migrations), "address already in use". The log
        tail holds earlier attempts' lines too, hence the port."""
        port = str(self.port)
        return any(port in line and "address already in use" in line.lower() for line in failure.splitlines())

    def _start_on_a_free_port(self, deadline_s: float) -> LedgerServer:
        assert self.process is None, "already running"
        self.port = free_port()
        with self.log_path.open("ab") as log:
            log.write(f"--- starting on port {self.port}\n".encode())
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ledger.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=ledger_env(self.database_url, self.extra_env),
                cwd=self.code_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_ready(deadline_s)
        return self

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        started = time.monotonic()
        deadline = started + deadline_s
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"ledger serve exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    # Its own answer: another test's server may hold the port this one was given.
                    if client.get("/readyz").status_code == 200 and listens_on(self.process.pid, self.port):
                        self._note(f"--- ready after {time.monotonic() - started:.1f} s")
                        return
                time.sleep(POLL_INTERVAL_S)
        self.kill()
        raise TimeoutError(f"ledger serve not ready within {deadline_s} s:\n{self.log_tail()}")

    def _note(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL past the deadline; returns the exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(deadline_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(deadline_s)
        return process.returncode

    def kill(self) -> None:
        """kill -9 of the whole process group: no shutdown code runs."""
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_DEADLINE_S)

    def restart(self) -> LedgerServer:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)


def run_ledger_command(
    database_url: str, *args: str, deadline_s: float = 120.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `ledger <args>` to completion (e.g. rebuild --quiet) and returns its output."""
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=ledger_env(database_url, env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=deadline_s,
        check=False,
    )


@contextlib.contextmanager
def serving_sqlite(directory: Path, env: Mapping[str, str], name: str) -> Iterator[LedgerServer]:
    """A `ledger serve` on an SQLite file of its own in `directory`, stopped on the way out."""
    server = LedgerServer(f"sqlite:///{directory / 'ledger.db'}", directory, env, name=name)
    server.start()
    try:
        yield server
    finally:
        server.stop()
