"""The writer's socket path raced for: two services starting at once on one path, where a writer
killed with -9 left its socket, must not both take it, or one service's writer listens on a file
removed by the other (nobody reaches it) while its workers connect to the other's writer."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import build_writer_from_environment
from ledger.writer import process
from ledger.writer.socket_path import (
    SocketPathTaken,
    SocketPathUnusable,
    listen_unix,
    lock_path,
    remove_given_up,
)

OUTBOX_BYTES_MAX = 64 * 1024


def _left_by_a_writer_that_is_gone(path: str) -> None:
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(path)  # bound and closed without its file removed, as after kill -9
    gone.close()


def _answers_at(path: str, listener: socket.socket) -> bool:
    """Whether a connection made to `path` is the one `listener` takes."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(1.0)
    try:
        client.connect(path)
        client.sendall(b"which")
        listener.settimeout(1.0)
        try:
            taken, _ = listener.accept()
        except TimeoutError:
            return False
        with taken:
            return taken.recv(16) == b"which"
    finally:
        client.close()


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for listener in opened:
        listener.close()


@pytest.mark.parametrize("second_starts", ["before the first removes the socket", "just after"])
def test_two_starters_on_a_dead_writers_socket_one_listens_and_the_other_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: list[socket.socket], second_starts: str
) -> None:
    """The first starter has found the socket dead (its connection refused); the second starts in
    full between that probe and the first's bind."""
    path = str(tmp_path / "writer.sock")
    _left_by_a_writer_that_is_gone(path)
    unlink: Callable[..., Any] = os.unlink
    second: list[socket.socket | SocketPathTaken] = []
    raced: list[bool] = []  # once: the second's own removal, if it gets there, is not a race

    def start_the_second() -> None:
        try:
            second.append(listen_unix(path))
        except SocketPathTaken as refused:
            second.append(refused)

    def unlink_with_the_second_between(target: Any, *args: Any, **kwargs: Any) -> None:
        racing = str(target) == path and not raced
        raced.append(racing)
        if racing and second_starts != "just after":
            start_the_second()
        unlink(target, *args, **kwargs)
        if racing and second_starts == "just after":
            start_the_second()

    monkeypatch.setattr(os, "unlink", unlink_with_the_second_between)
    try:
        first = listen_unix(path)
    finally:
        monkeypatch.undo()
    listeners.append(first)
    assert len(second) == 1, "the race was not run: the first starter removed nothing"
    if isinstance(second[0], socket.socket):
        listeners.append(second[0])
    assert isinstance(second[0], SocketPathTaken), "both starters listen, one on a removed file"
    assert "another writer listens at" in str(second[0]) and path in str(second[0])
    assert _answers_at(path, first)


def test_a_starter_that_finds_the_lock_taken_is_refused_and_removes_nothing(
    tmp_path: Path, listeners: list[socket.socket]
) -> None:
    """Another starter holds the lock and has not bound yet: the dead writer's socket is its to
    take, and the lock file stays for it."""
    path = str(tmp_path / "writer.sock")
    _left_by_a_writer_that_is_gone(path)
    with open(lock_path(path), "a+b") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SocketPathTaken, match=f"^another writer listens at {path}: "):
            listen_unix(path)
        assert os.path.exists(path) and os.path.exists(lock_path(path))
    listeners.append(listen_unix(path))  # the lock released: taken, and the path answers
    assert _answers_at(path, listeners[0])


def test_a_closed_listener_gives_its_path_up_to_the_next_starter(
    tmp_path: Path, listeners: list[socket.socket]
) -> None:
    path = str(tmp_path / "writer.sock")
    listen_unix(path).close()  # its socket file stays, as after kill -9; its lock goes with it
    listeners.append(listen_unix(path))
    assert _answers_at(path, listeners[0])
    with pytest.raises(SocketPathTaken, match="another writer listens at"):
        listen_unix(path)
    assert _answers_at(path, listeners[0])


@pytest.mark.parametrize("why", ["no such directory", "the lock file's name is a directory's"])
def test_a_lock_file_that_cannot_be_made_is_said_in_one_line(tmp_path: Path, why: str) -> None:
    path = str(tmp_path / "no-such-directory" / "writer.sock")
    if why != "no such directory":
        path = str(tmp_path / "writer.sock")
        os.mkdir(lock_path(path))
    with pytest.raises(SocketPathUnusable) as refused:
        listen_unix(path)
    line = str(refused.value)
    assert "\n" not in line and f"cannot open {lock_path(path)}" in line
    assert "LEDGER_WRITER_SOCKET" in line
    assert not os.path.lexists(path)


def test_no_lock_file_is_made_beside_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("an operator's file")
    with pytest.raises(SocketPathTaken, match="is not a socket"):
        listen_unix(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_socket_that_cannot_be_bound_is_said_in_one_line_and_gives_the_lock_up(tmp_path: Path) -> None:
    path = str(tmp_path / ("w" * 150 + ".sock"))  # longer than a Unix socket's address may be
    with pytest.raises(SocketPathUnusable, match=f"^cannot listen at {path} \\(") as refused:
        listen_unix(path)
    assert "\n" not in str(refused.value)
    with open(lock_path(path), "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not held by the starter that failed


def test_a_service_that_stops_removes_its_socket_but_not_that_of_a_writer_started_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listeners: list[socket.socket]
) -> None:
    """Its writer has ended and another service's writer has just taken the path: the stopping
    service's supervisor must not remove that one's socket (its workers could not connect)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.delenv("LEDGER_WRITER_SOCKET", raising=False)
    path = str(tmp_path / "writer.sock")
    supervisor = process.WriterSupervisor(build_writer_from_environment, path, OUTBOX_BYTES_MAX)
    supervisor.wait_until_ready()
    stop_writer_process = process.stop_writer_process

    def stop_then_another_starts(stopped: Any, timeout_s: float) -> None:
        stop_writer_process(stopped, timeout_s)
        listeners.append(listen_unix(path))

    monkeypatch.setattr(process, "stop_writer_process", stop_then_another_starts)
    supervisor.stop()
    assert len(listeners) == 1 and os.path.exists(path), "the new writer's socket was removed"
    assert _answers_at(path, listeners[0])
    listeners.pop().close()
    monkeypatch.setattr(process, "stop_writer_process", stop_writer_process)
    alone = process.WriterSupervisor(build_writer_from_environment, path, OUTBOX_BYTES_MAX)
    alone.wait_until_ready()
    alone.stop()
    assert not os.path.exists(path), "a service that stops alone removes its own socket"


def test_lock_files_of_services_that_no_longer_run_are_removed_unless_held(tmp_path: Path) -> None:
    """`ledger serve` without LEDGER_WRITER_SOCKET picks ledger-writer-<pid>.sock in the temporary
    directory: each service would leave a lock file there for good. One whose pid no longer runs
    goes with its socket, while nobody holds it (an orphaned writer of that service still may)."""
    gone = tmp_path / "ledger-writer-999999998.sock.lock"
    held = tmp_path / "ledger-writer-999999999.sock.lock"
    alive = tmp_path / f"ledger-writer-{os.getpid()}.sock.lock"
    other = tmp_path / "something-else.sock.lock"
    for path in (gone, held, alive, other):
        path.touch()
    with open(held, "rb") as holding:
        fcntl.flock(holding, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert process.remove_stale_sockets(str(tmp_path)) == [gone.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (held, alive, other))


def test_a_service_that_stops_at_the_default_path_leaves_no_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path (ledger-writer-<pid>.sock, this service's pid) is no other service's: its lock
    file goes with its socket, rather than waiting in the temporary directory for the next start."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.delenv("LEDGER_WRITER_SOCKET", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.mkdir(tmp_path / "tmp")
    path = process.default_socket_path()
    supervisor = process.WriterSupervisor(build_writer_from_environment, path, OUTBOX_BYTES_MAX)
    supervisor.wait_until_ready()
    assert os.path.exists(lock_path(path))
    supervisor.stop()
    assert os.listdir(tmp_path / "tmp") == []


def test_a_file_system_that_refuses_the_lock_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network file systems have no flock (ENOLCK): the start says so, naming the lock file,
    and a stopping service leaves the path as it is."""
    path = str(tmp_path / "writer.sock")

    def no_locks(*_: Any) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(SocketPathUnusable, match=f"^cannot lock {lock_path(path)} \\(No locks available\\)"):
        listen_unix(path)
    _left_by_a_writer_that_is_gone(path)
    assert not remove_given_up(path) and os.path.exists(path)
