"""The writer process of an instance that does not lead: it relays its clients to the leader.

Each connection on this instance's writer socket gets a connection of its own to the leading
writer (writer/leadership.py), opened with the peer hello (wire.py), and the bytes are passed on
both ways unread: the leader answers, and broadcasts its commits to, this instance's HTTP workers
and Kafka intake as it does its own. So their read caches hear of every write of every instance
at once, instead of reading the other instances' writes back from the database.

Nothing here waits without a limit. A link to the leader, with its handshake, is had within
`PEER_CONNECT_TIMEOUT_S` in all, and a link gone silent is found out by TCP (peer_link.py); each
direction of a pair holds at most `buffer_bytes_max` bytes (and one read) that its reader has not
taken behind the frame it is reading (wire.py's length prefixes say where each ends; one frame,
the commit of a batch of a million levels, may be larger), and past it the pair is closed with a
log line (the client reconnects, as it does when the writer drops it). When the leader cannot
be reached (nothing listens at its address, or `LINK_FAILURES_MAX` links in a row failed), the
relay ends (run() returns False) and the process exits, so that its supervisor starts a writer
anew: it leads if the leader's lock is free, or relays to whoever leads now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from ledger.writer import peer_link
from ledger.writer.leadership import Leader
from ledger.writer.outbox import Outbox
from ledger.writer.server import WAKE_BYTES_MAX
from ledger.writer.socket_path import listen_unix
from ledger.writer.wire import FRAME, Identify, Identity, encode

log = logging.getLogger("ledger.writer")

RECV_BYTES = 1 << 20
PEER_CONNECT_TIMEOUT_S = 5.0  # a link to the leader, handshake included, in all
# Links that could not be had in a row before the relay gives the leader up (at once when nothing
# listens at its address): one slow handshake (a leader busy with a long commit) is no reason.
LINK_FAILURES_MAX = 3
# How often the loop looks up from an idle socket: whether the serving process is still there.
IDLE_POLL_S = 1.0
_LOCAL = object()
_WAKE = object()
# A client's first frame when it asks which database the writer records into: answered here, not
# by the leader (it may run the release before, which does not know it, and names its database
# as its own settings spell it). The relay's database is the leader's: it found it there.
IDENTIFY = encode(Identify())


class LeaderUnreachable(ConnectionError):
    """No link to the leader could be had; `refused`: nothing listens at its address any more."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def connect_to_leader(
    leader: Leader, secret: bytes, timeout_s: float = PEER_CONNECT_TIMEOUT_S
) -> socket.socket:
    """A link to the leading writer, each side having proved it shares `secret` (peer_link.py),
    non-blocking; LeaderUnreachable if it cannot be had within `timeout_s` in all."""
    deadline = time.monotonic() + timeout_s

    def left_s() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no handshake within {timeout_s:.0f} s")
        return left

    try:
        sock = socket.create_connection((leader.host, leader.port), timeout=timeout_s)
    except ConnectionRefusedError as error:
        raise LeaderUnreachable(f"nothing listens at {leader.address}: {error}", refused=True) from None
    except OSError as error:
        raise LeaderUnreachable(f"cannot reach the leading writer at {leader.address}: {error}") from None
    try:
        peer_link.tune(sock)
        relay_nonce = peer_link.new_nonce()
        sock.settimeout(left_s())
        sock.sendall(peer_link.hello(relay_nonce))
        buffer = bytearray()
        while (body := peer_link.cut_frame(buffer)) is None:
            sock.settimeout(left_s())
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionResetError("it closed the connection")
            buffer += data
        if buffer:
            raise peer_link.HandshakeFailed("it sent more than its welcome before this side's proof")
        leader_nonce = peer_link.leader_nonce_of(body, secret, relay_nonce)
        sock.settimeout(left_s())
        sock.sendall(peer_link.proof(secret, relay_nonce, leader_nonce))
    except (OSError, peer_link.HandshakeFailed) as error:
        sock.close()
        raise LeaderUnreachable(f"no link to the leading writer at {leader.address}: {error}") from None
    sock.setblocking(False)
    return sock


@dataclass(slots=True)
class _Frames:
    """Where the frames queued for one end end, counted in bytes queued so far: what waits behind
    the frame its reader is taking is what it has fallen behind by."""

    queued: int = 0
    header: bytearray = field(default_factory=bytearray)
    body_left: int = 0  # of the frame being queued
    ends: deque[int] = field(default_factory=deque)  # of the whole frames queued, not yet all sent

    def add(self, data: bytes) -> None:
        at, size = 0, len(data)
        while at < size:
            if self.body_left:
                taken = min(self.body_left, size - at)
                self.body_left -= taken
                at += taken
                if not self.body_left:
                    self.ends.append(self.queued + at)
                continue
            taken = min(FRAME.size - len(self.header), size - at)
            self.header += data[at : at + taken]
            at += taken
            if len(self.header) == FRAME.size:
                (self.body_left,) = FRAME.unpack(self.header)
                self.header.clear()
                if not self.body_left:
                    self.ends.append(self.queued + at)
        self.queued += size

    def behind_first(self, waiting: int) -> int:
        """Of the last `waiting` bytes queued (not yet sent), those behind the frame being sent."""
        sent = self.queued - waiting
        while self.ends and self.ends[0] <= sent:
            self.ends.popleft()
        return self.queued - self.ends[0] if self.ends else 0


@dataclass(slots=True, eq=False)
class _End:
    """One side of a relayed connection, with what waits to be written to it."""

    sock: socket.socket
    name: str
    other: _End | None = None
    leaders_side: bool = False
    # A local client's first bytes, until they are known to be (or not to be) IDENTIFY.
    opening: bytearray | None = None
    outbox: Outbox = field(default_factory=Outbox)
    frames: _Frames = field(default_factory=_Frames)  # of what is queued in `outbox`


class Relay:
    def __init__(
        self,
        socket_path: str,
        leader: Leader,
        secret: bytes,
        buffer_bytes_max: int,
        parent_pid: int | None,
        database: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.database = database  # storage.database_urls.database_identity of this instance's database
        self.leader = leader
        self.secret = secret
        self._link_failures = 0
        self.buffer_bytes_max = buffer_bytes_max
        self.parent_pid = parent_pid
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self._pairs = 0
        self._check_leader = False
        self._wake_read, self._wake_write = socket.socketpair()
        for end in (self._wake_read, self._wake_write):
            end.setblocking(False)
        self.selector.register(self._wake_read, selectors.EVENT_READ, _WAKE)

    def listen(self) -> None:
        self.selector.register(listen_unix(self.socket_path), selectors.EVENT_READ, _LOCAL)

    def stop_soon(self) -> None:
        """Safe in a signal handler."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def run(self) -> bool:
        """Relays until asked to stop or the serving process is gone (True), or until the leader
        cannot be reached (False)."""
        while not self.stopping:
            for key, events in self.selector.select(IDLE_POLL_S):
                if key.data is _WAKE:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_read.recv(WAKE_BYTES_MAX)
                elif key.data is _LOCAL:
                    if not self._accept(key.fileobj):  # type: ignore[arg-type]
                        return False
                else:
                    end: _End = key.data
                    if end.other is None:
                        continue  # its pair was closed earlier in this turn
                    if events & selectors.EVENT_WRITE:
                        self._send(end)
                    if events & selectors.EVENT_READ and end.other is not None:
                        self._read(end)
            if self._check_leader:
                self._check_leader = False
                try:
                    connect_to_leader(self.leader, self.secret).close()
                except LeaderUnreachable as error:
                    log.warning("%s", error)
                    return False
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("the serving process is gone; the relay stops")
                return True
        return True

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._wake_write.close()
        self.selector.close()

    def _accept(self, listener: socket.socket) -> bool:
        try:
            local, _ = listener.accept()
        except BlockingIOError:
            return True
        except OSError as error:  # out of file descriptors, say: the relay goes on with what it has
            log.error("could not accept a connection: %s", error)
            return True
        try:
            upstream = connect_to_leader(self.leader, self.secret)
        except LeaderUnreachable as error:
            local.close()  # its client reconnects, and is answered 503 meanwhile
            self._link_failures += 1
            log.warning("%s (%d in a row)", error, self._link_failures)
            return not error.refused and self._link_failures < LINK_FAILURES_MAX
        self._link_failures = 0
        local.setblocking(False)
        self._pairs += 1
        local_end = _End(local, f"client {self._pairs}", opening=bytearray())
        upstream_end = _End(
            upstream, f"the leader's side of client {self._pairs}", local_end, leaders_side=True
        )
        local_end.other = upstream_end
        for end in (local_end, upstream_end):
            self.selector.register(end.sock, selectors.EVENT_READ, end)
        return True

    def _read(self, end: _End) -> None:
        try:
            data = end.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if end.leaders_side:
                self._check_leader = True  # it may have gone: the loop finds out
            self._close_pair(end)
            return
        if end.opening is not None:
            data = self._past_identify(end, data)
            if not data or end.other is None:
                return
        other = end.other
        assert other is not None
        other.outbox.add(data)
        other.frames.add(data)
        if not other.outbox.watched_for_writing:
            self._send(other)
            if end.other is None:
                return  # the send failed: the pair is closed
        if other.frames.behind_first(other.outbox.size) > self.buffer_bytes_max:
            log.warning(
                "%s has not read %d bytes (limit %d); closing its connection",
                other.name,
                other.outbox.size,
                self.buffer_bytes_max,
            )
            self._close_pair(end)

    def _past_identify(self, end: _End, data: bytes) -> bytes:
        """A local client's first bytes: an Identify is answered here and taken out; what follows
        it, or whatever came instead, goes on to the leader."""
        assert end.opening is not None
        end.opening += data
        if len(end.opening) < len(IDENTIFY) and IDENTIFY.startswith(end.opening):
            return b""  # the rest of it is still to come
        opening, end.opening = bytes(end.opening), None
        if not opening.startswith(IDENTIFY):
            return opening
        answer = encode(Identity(self.database))
        end.outbox.add(answer)
        end.frames.add(answer)
        self._send(end)
        return opening[len(IDENTIFY) :]

    def _send(self, end: _End) -> None:
        try:
            end.outbox.send(end.sock, self.selector, end)
        except OSError:
            self._close_pair(end)

    def _close_pair(self, end: _End) -> None:
        for side in (end, end.other):
            if side is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(side.sock)
            side.sock.close()
            side.outbox.clear()
            side.other = None
