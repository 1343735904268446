"""The writer process's listening socket: taken at its path only from a writer that is gone.

A socket file outlives a writer killed with -9, so the path is cleared before it is bound. But a
second `ledger serve` given the same LEDGER_WRITER_SOCKET as a running one must not take the path
over: the first service's HTTP workers would reconnect to the second's writer. So the file is
removed only once a connection to it is refused (nobody listens), and never when it is not a
socket (the setting pointed at some other file)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

LISTEN_BACKLOG = 128
PROBE_S_MAX = 1.0  # how long a connection to a socket found at the path may take to be refused


class SocketPathTaken(RuntimeError):
    """Another process listens at the path, or the path is not a socket: says which in one line."""


def listen_unix(path: str) -> socket.socket:
    """A listening socket at `path` that only this machine's user can connect to (mode 0600)."""
    _clear_stale(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    return listener


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathTaken(f"{path} exists and is not a socket; the writer's socket goes elsewhere")
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
    raise SocketPathTaken(
        f"another writer listens at {path}: give this service a LEDGER_WRITER_SOCKET of its own"
    )
