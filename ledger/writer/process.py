"""The writer in a process of its own: its start, its supervisor, and the socket it listens on.

Why a process: Python runs one thread at a time per process. With the writer as a thread next
to the HTTP event loop, each of the writer's database round trips waited for the loop to hand
back the interpreter, and a batch of 32 reservations took 16 ms instead of 3 ms. In its own
process the writer never waits for anyone: it reads every request that has arrived, records
them as one batch (one transaction, one fsync), then answers (server.py).

The process builds its writer with a function it is handed (the composition root's), so that
this package does not reach up into the wiring.

With peers (LEDGER_WRITER_PEER_ADDRESS, `Peering`), the process first finds out whether it leads
for its database (writer/leadership.py). If it does, it is the writer above, and also takes the
other instances' relays; if another leads, it relays this instance's clients to that one
(writer/relay.py) and exits with `LEADER_GONE_EXIT_CODE` when the leader cannot be reached, for
the supervisor to start it anew: it then leads, or relays to the new leader.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.storage.database_urls import database_identity
from ledger.writer.facade import Writer
from ledger.writer.leadership import Leader, Leadership
from ledger.writer.relay import LeaderUnreachable, Relay, connect_to_leader
from ledger.writer.server import WriterServer
from ledger.writer.socket_path import remove_free_lock, remove_given_up

log = logging.getLogger("ledger.writer")

SOCKET_NAME = "ledger-writer-{pid}.sock"
_SOCKET_PATTERN = re.compile(r"^ledger-writer-(\d+)\.sock(\.lock)?$")  # and the lock file beside it
READY_WAIT_S_MAX = 60.0
READY_POLL_S = 0.05
START_FAILED_EXIT_CODE = 3
LEADER_GONE_EXIT_CODE = 4
# With peers: how long a new writer looks for the leader (one that has just taken the lead may not
# have published where it listens yet), trying every FIND_LEADER_RETRY_S.
FIND_LEADER_S_MAX = 45.0  # within READY_WAIT_S_MAX, and longer than a leader takes to start
FIND_LEADER_RETRY_S = 0.2
# The signal by which the serving process, and only it, stops the writer (SIGTERM and SIGINT reach
# the whole process group, and are ignored: see writer_main).
STOP_SIGNAL = signal.SIGUSR1
# Between failed restarts of the writer process (its database down, say): doubling, bounded.
RESTART_WAIT_S_MIN = 0.5
RESTART_WAIT_S_MAX = 10.0

BuildWriter = Callable[[], Writer]


@dataclass(frozen=True, slots=True)
class Peering:
    """Where this instance's writer listens for the others' relays, should it lead, and the secret
    the writers of one database share (peer_link.py)."""

    database_url: str
    host: str
    port: int
    secret: str = field(repr=False)


class WriterStartFailed(RuntimeError):
    """The writer process could not start (its database is unreachable, say); says why in one line."""


def default_socket_path(pid: int | None = None) -> str:
    return os.path.join(tempfile.gettempdir(), SOCKET_NAME.format(pid=pid or os.getpid()))


def remove_stale_sockets(directory: str | None = None) -> list[str]:
    """Removes writer sockets left behind by serving processes that no longer run (kill -9), and
    the lock files beside them (every service's, stopped or killed), those while nobody holds them."""
    directory = directory or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            match = _SOCKET_PATTERN.match(name)
            if match is None or _running(int(match.group(1))):
                continue
            path = os.path.join(directory, name)
            if match.group(2) is not None:
                if remove_free_lock(path):
                    removed.append(name)
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_main(
    build: BuildWriter,
    socket_path: str,
    parent_pid: int,
    outbox_bytes_max: int,
    ready: Any,
    peering: Peering | None = None,
) -> None:
    """The writer process: builds its writer (or, with peers, its relay to the leader), listens,
    tells the parent, serves until stopped. A failure to start is told to the parent in one line,
    not as a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    leadership = Leadership(peering.database_url) if peering is not None else None
    secret = peering.secret.encode() if peering is not None else b""
    relay: Relay | None = None
    try:
        leader = _find_leader(leadership, secret) if leadership is not None else None
        if leadership is not None and leader is not None:
            leadership.close()  # a relay holds no session: it starts anew if the leader goes
            database = database_identity(peering.database_url) if peering is not None else None
            relay = Relay(socket_path, leader, secret, outbox_bytes_max, parent_pid, database)
            relay.listen()
        else:
            writer = build()
            server = WriterServer(
                writer, socket_path, writer.limits.batch_events_max, outbox_bytes_max, parent_pid
            )
            server.listen()
            if leadership is not None and peering is not None:
                server.listen_for_peers(peering.host, peering.port, secret)
                leadership.publish(peering.host, peering.port)
                leadership.keep()
                log.info(
                    "this writer leads for its database; the other instances' relays reach it at %s:%d",
                    peering.host,
                    peering.port,
                )
    except Exception as error:  # noqa: BLE001 - told to the parent, which exits with it
        ready.send(("failed", _one_line(error)))
        ready.close()
        os._exit(START_FAILED_EXIT_CODE)
    if relay is not None:
        _relay_main(relay, ready)
        return
    _ignore_group_signals()
    # STOP_SIGNAL, from the serving process: finish the batch in hand, answer it, and stop.
    signal.signal(STOP_SIGNAL, lambda *_: server.stop_soon())
    ready.send(("ready", ""))
    ready.close()
    try:
        server.run()
    finally:
        server.close()
        writer.recorder.close()
        if leadership is not None:
            leadership.close()


def _ignore_group_signals() -> None:
    # Ctrl+C and a SIGTERM to the whole process group (systemd's default, `kill -- -PGID`) reach
    # the writer too; the serving process decides when it stops: last, after the HTTP workers and
    # the Kafka intake have finished what they had in hand, which they record through it. Should
    # the serving process die instead, the writer notices it is orphaned and stops (server.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _find_leader(leadership: Leadership, secret: bytes) -> Leader | None:
    """None if this process now leads; else the leader it reached. A leader that has just taken
    the lead may not have published yet, and one that has gone may still be published: tried
    again, for up to FIND_LEADER_S_MAX."""
    deadline = time.monotonic() + FIND_LEADER_S_MAX
    why = "no leader has published where it listens"
    while True:
        if leadership.take_lead():
            return None
        leader = leadership.leader()
        if leader is not None:
            try:
                connect_to_leader(leader, secret).close()
                return leader
            except LeaderUnreachable as error:
                why = str(error)
        if time.monotonic() >= deadline:
            raise LeaderUnreachable(f"another writer leads for this database, but {why}")
        time.sleep(FIND_LEADER_RETRY_S)


def _relay_main(relay: Relay, ready: Any) -> None:
    _ignore_group_signals()
    signal.signal(STOP_SIGNAL, lambda *_: relay.stop_soon())
    log.info("another instance's writer leads for this database: relaying to it at %s", relay.leader.address)
    ready.send(("ready", ""))
    ready.close()
    try:
        stopped = relay.run()
    finally:
        relay.close()
    if not stopped:
        log.warning("the leading writer is gone; this instance's writer starts anew, to lead or to relay")
        os._exit(LEADER_GONE_EXIT_CODE)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


@dataclass(frozen=True, slots=True)
class LaunchedWriter:
    """A writer process started but not yet known to listen: `ready` will say whether it does."""

    process: Any
    ready: Any  # the receiving end of the pipe writer_main answers "ready" or "failed" on


def launch_writer_process(
    build: BuildWriter, socket_path: str, outbox_bytes_max: int, peering: Peering | None = None
) -> LaunchedWriter:
    """Starts the writer process without waiting for it: the caller may do its own start meanwhile
    (a new process takes about a second to import the writer), then calls `await_writer_ready`."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(
        target=writer_main,
        args=(build, socket_path, os.getpid(), outbox_bytes_max, sending, peering),
        name="ledger-writer",
        daemon=True,
    )
    process.start()
    sending.close()
    return LaunchedWriter(process, receiving)


def await_writer_ready(launched: LaunchedWriter, ready_wait_s_max: float = READY_WAIT_S_MAX) -> Any:
    """Waits until the launched writer listens; returns its process. Raises WriterStartFailed at once
    if the process says it failed or dies first, and then kills it if it still runs."""
    process, receiving = launched.process, launched.ready
    deadline = time.monotonic() + ready_wait_s_max
    try:
        while time.monotonic() < deadline:
            if receiving.poll(READY_POLL_S):
                try:
                    status, reason = receiving.recv()
                except EOFError:
                    break  # died without a word: said below
                if status == "ready":
                    return process
                raise WriterStartFailed(f"the writer could not start: {reason}")
            if not process.is_alive():
                break
        else:
            raise WriterStartFailed(f"the writer process did not start within {ready_wait_s_max:.0f} s")
        process.join(1)
        raise WriterStartFailed(f"the writer process exited (code {process.exitcode}) before it was ready")
    except WriterStartFailed:
        if process.is_alive():
            process.kill()
        raise
    finally:
        receiving.close()


def start_writer_process(
    build: BuildWriter,
    socket_path: str,
    outbox_bytes_max: int,
    ready_wait_s_max: float = READY_WAIT_S_MAX,
    peering: Peering | None = None,
) -> Any:
    """Starts the writer process and waits until it listens; returns the process. Raises
    WriterStartFailed at once if the process says it failed or dies first."""
    launched = launch_writer_process(build, socket_path, outbox_bytes_max, peering)
    return await_writer_ready(launched, ready_wait_s_max)


def stop_writer_process(process: Any, timeout_s: float) -> None:
    """Asks the writer process to stop (STOP_SIGNAL: it answers the batch in hand first), and
    kills it if it has not within `timeout_s`."""
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, STOP_SIGNAL)
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join(timeout_s)


class WriterSupervisor:
    """Keeps one writer process running for `ledger serve`: starts it (`wait_until_ready` before
    serving), restarts it if it dies (the HTTP workers reconnect on their next write), stops it last."""

    def __init__(
        self,
        build: BuildWriter,
        socket_path: str,
        outbox_bytes_max: int,
        check_interval_s: float = 0.5,
        peering: Peering | None = None,
    ) -> None:
        self.build = build
        self.peering = peering
        self.socket_path = socket_path
        self.outbox_bytes_max = outbox_bytes_max
        self.check_interval_s = check_interval_s
        remove_stale_sockets(os.path.dirname(socket_path))
        self._launched = launch_writer_process(build, socket_path, outbox_bytes_max, peering)
        self.process = self._launched.process
        self.restarts = 0
        self._restart_wait_s = RESTART_WAIT_S_MIN
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="writer-supervisor", daemon=True)

    def wait_until_ready(self, ready_wait_s_max: float = READY_WAIT_S_MAX) -> None:
        """Waits for the first process to listen (WriterStartFailed if it does not), then watches it."""
        self.process = await_writer_ready(self._launched, ready_wait_s_max)
        self._thread.start()

    def _watch(self) -> None:
        wait_s = self.check_interval_s
        while not self._stopping.wait(wait_s):
            wait_s = self.check_interval_s
            if self.process.is_alive():
                self._restart_wait_s = RESTART_WAIT_S_MIN
                continue
            if self.process.exitcode == LEADER_GONE_EXIT_CODE:
                log.warning("the writer process's leader is gone; starting it anew, to lead or to relay")
            else:
                log.error("the writer process exited (code %s); starting a new one", self.process.exitcode)
            try:
                self.process = start_writer_process(
                    self.build, self.socket_path, self.outbox_bytes_max, peering=self.peering
                )
                self.restarts += 1
            except WriterStartFailed as error:  # tried again later, waiting longer each time
                log.error("could not restart the writer process: %s", error)
                wait_s = self._restart_wait_s
                self._restart_wait_s = min(self._restart_wait_s * 2, RESTART_WAIT_S_MAX)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        stop_writer_process(self.process, timeout_s)
        # Not blindly: another service's writer may have taken the path since this one's ended.
        remove_given_up(self.socket_path, lock_file_too=self.socket_path == default_socket_path())
