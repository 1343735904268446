"""The writer process's listening socket: taken at its path only from a writer that is gone.

A socket file outlives a writer killed with -9, so the path is cleared before it is bound. But a
second `ledger serve` given the same LEDGER_WRITER_SOCKET as a running one must not take the path
over: the first service's HTTP workers would reconnect to the second's writer. So the file is
removed only once a connection to it is refused (nobody listens), and never when it is not a
socket (the setting pointed at some other file).

Two services starting at once on a dead writer's socket would both find it dead: the second could
remove the first's new socket and bind its own, leaving the first's writer on a file nobody can
reach. So a starter first takes a lock file beside the socket (PATH.lock, flock), without waiting,
and holds it as long as it listens: the probe, the removal and the bind are done by one starter at
a time, and one that finds the lock taken is refused as if a writer answered. The lock file is
never removed by a starter (one removed while another opens it would give two starters a lock
each), but for those of the default names, each its service's own (remove_given_up at its stop,
remove_free_lock after one that no longer runs); the kernel releases the lock when its holder
closes it or dies, kill -9 included."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import stat

LISTEN_BACKLOG = 128
PROBE_S_MAX = 1.0  # how long a connection to a socket found at the path may take to be refused
LOCK_SUFFIX = ".lock"
LOCK_FILE_MODE = 0o600


class SocketPathTaken(RuntimeError):
    """Another process listens at the path, or the path is not a socket: says which in one line."""


class SocketPathUnusable(RuntimeError):
    """The socket, or the lock file beside it, cannot be made at the path (no such directory, no
    right to write in it, a name too long): says which file and why in one line."""


class LockedListener(socket.socket):
    """A listening socket that holds its path's lock until it is closed, by `close` or when it is
    collected (the lock's file object closes with it)."""

    _lock: io.FileIO | None = None

    def hold(self, lock: io.FileIO) -> None:
        self._lock = lock

    def close(self) -> None:
        try:
            super().close()
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.close()


def lock_path(path: str) -> str:
    return path + LOCK_SUFFIX


def listen_unix(path: str) -> socket.socket:
    """A listening socket at `path` that only this machine's user can connect to (mode 0600),
    holding the path's lock while it is open."""
    _socket_at(path)  # one that is not a socket is refused before a lock file is made beside it
    lock = _take_lock(path)
    try:
        _clear_stale(path)
        listener = LockedListener(socket.AF_UNIX, socket.SOCK_STREAM)
    except BaseException:
        lock.close()
        raise
    listener.hold(lock)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
        listener.listen(LISTEN_BACKLOG)
    except OSError as error:
        listener.close()
        raise SocketPathUnusable(f"cannot listen at {path} ({error.strerror or error})") from None
    finally:
        os.umask(old_umask)
    listener.setblocking(False)
    return listener


def remove_given_up(path: str, lock_file_too: bool = False) -> bool:
    """Removes the socket at `path` once the writer that listened there has ended (its service
    stops), unless the path is another's by now: a starter or writer that holds its lock (whose
    socket this may be). With `lock_file_too`, only for a path no other service starts at (the
    default one, named after its service's pid), the lock file goes too, while still held. True if
    the socket was removed. Never waits."""
    try:
        lock = _take_lock(path)
    except (SocketPathTaken, SocketPathUnusable):
        return False
    removed = False
    with lock:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
                removed = True
        if lock_file_too:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path(path))
    return removed


def remove_free_lock(lock_file: str) -> bool:
    """Removes a lock file while holding it, and leaves it when another holds it. Only for the
    default names of services that no longer run (process.remove_stale_sockets): each name carries
    its service's pid, so no other starts at it, and a starter that opened it just before would be
    alone on it. True if removed."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with io.FileIO(fd, "r", closefd=True) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file)
            return True
    return False


def _take_lock(path: str) -> io.FileIO:
    """The path's lock, open; SocketPathTaken at once if another starter or writer holds it (a
    starter never waits for it: the holder may listen for weeks)."""
    where = lock_path(path)
    try:
        # Read-only: a lock needs no more, and the file is never written. No symlink followed.
        fd = os.open(where, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LOCK_FILE_MODE)
    except OSError as error:
        raise SocketPathUnusable(
            f"cannot open {where}, the lock file beside the writer's socket ({error.strerror}): give "
            "LEDGER_WRITER_SOCKET a path in an existing directory this user can write to"
        ) from None
    lock = io.FileIO(fd, "r", closefd=True)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise _live_writer(path) from None
    except OSError as error:  # a file system without flock (ENOLCK): no lock, so no start
        lock.close()
        raise SocketPathUnusable(
            f"cannot lock {where} ({error.strerror}): give LEDGER_WRITER_SOCKET a path on a local file system"
        ) from None
    except BaseException:
        lock.close()
        raise
    return lock


def _live_writer(path: str) -> SocketPathTaken:
    return SocketPathTaken(
        f"another writer listens at {path}: give this service a LEDGER_WRITER_SOCKET of its own"
    )


def _socket_at(path: str) -> bool:
    """Whether a socket is at the path (False: nothing is); SocketPathTaken if something else is."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise SocketPathTaken(f"{path} exists and is not a socket; the writer's socket goes elsewhere")
    return True


def _clear_stale(path: str) -> None:
    """With the path's lock held: removes a socket nobody listens at."""
    if not _socket_at(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_S_MAX)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):  # left by a writer that is gone
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as error:  # a listener too busy to take it within the probe's time is alive
        raise SocketPathTaken(f"a writer may still listen at {path} ({error}); not taken over") from None
    finally:
        probe.close()
    raise _live_writer(path)
