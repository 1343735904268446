"""The writer process's socket server: reads requests, records them in batches, answers.

Only this machine's processes of this service connect: the socket file is created mode 0600.
Sends never block the writer: each client has an outbox, written whenever its socket takes more,
and a client with more than `outbox_bytes_max` waiting behind the message it is reading (it
stopped reading) is disconnected with a log line. Its callers waiting on answers get a clean
error from their side of the connection, and its next write reconnects. The writer never waits
on a client. A failed request is answered with its kind (wire.Reply): refused when it is a
SubmissionFailed, else unavailable. Requests beyond `queue_submissions_max` waiting to be
recorded are refused at once, and a client that sends what the writer cannot read is
disconnected: neither stops the writer.

With LEDGER_WRITER_PEER_ADDRESS set, the writer that leads its database (writer/leadership.py) also
listens there for the other instances' relays (writer/relay.py): a peer is a client like any other
once it has proved that it shares the peers' secret (peer_link.py), within `PEER_HANDSHAKE_S_MAX`.
At most `PEER_HANDSHAKES_MAX` peers may be proving at once; more are let go as they connect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from dataclasses import dataclass, field

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.state_cache import Commit
from ledger.writer import chains, in_flight, peer_link
from ledger.writer.batch_logging import batch_logged
from ledger.writer.batch_tracing import traced
from ledger.writer.batching import take_batch
from ledger.writer.facade import Writer
from ledger.writer.outbox import Outbox
from ledger.writer.socket_path import LISTEN_BACKLOG, listen_unix
from ledger.writer.stats import STATS_INTERVAL_S, WriterStats
from ledger.writer.submission import Done, NotTried, Submission, SubmissionFailed
from ledger.writer.wire import (
    NOT_TRIED,
    REFUSED,
    UNAVAILABLE,
    Announced,
    Committed,
    FrameReader,
    FrameTooLarge,
    Identify,
    Identity,
    Replies,
    Reply,
    StatsReport,
    Subscribe,
    decode_to_writer,
    encode,
    encode_for_peers,
)

log = logging.getLogger("ledger.writer")

RECV_BYTES = 1 << 20
QUEUE_FULL = "WriterUnavailable: the writer's queue is full"
# The selector's marks of the wake-up socket and the peers' listener (a client's is its _Client,
# the local listener's None).
_WAKE = object()
_PEERS = object()
PEER_HANDSHAKE_S_MAX = 5.0  # how long a peer may take to prove it shares the secret
PEER_HANDSHAKES_MAX = 32
WAKE_BYTES_MAX = 64  # read at once from the wake-up socket: stop_soon writes one byte a call


@dataclass(slots=True)
class _Handshake:
    due: float
    buffer: bytearray = field(default_factory=bytearray)
    relay_nonce: bytes = b""
    leader_nonce: bytes = b""


@dataclass(slots=True)
class _Client:
    sock: socket.socket
    name: str
    reader: FrameReader = field(default_factory=FrameReader)
    outbox: Outbox = field(default_factory=Outbox)
    subscribed: bool = False
    replies: list[Reply] = field(default_factory=list)
    handshake: _Handshake | None = None  # a peer's, until it has proved it shares the secret
    peer: bool = False  # another instance's relay: it may run the release before this one
    outcomes: chains.Outcomes = field(default_factory=chains.Outcomes)  # for requests that follow one


@dataclass(slots=True)
class _Request:
    client: _Client
    request_id: int
    events: list[StockEvent]
    x_request_id: str | None = None
    trace_parent: str | None = None
    after: int | None = None  # the request of the same client it follows (chains.py)


class WriterServer:
    def __init__(
        self,
        writer: Writer,
        socket_path: str,
        batch_events_max: int,
        outbox_bytes_max: int,
        parent_pid: int | None,
    ) -> None:
        self.writer = writer
        self.socket_path = socket_path
        self.batch_events_max = batch_events_max
        self.outbox_bytes_max = outbox_bytes_max
        self.queue_requests_max = writer.limits.queue_submissions_max
        self.parent_pid = parent_pid
        self.clients: dict[socket.socket, _Client] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        # Written to by stop_soon: an idle poll waits up to the expiry interval, and a signal's
        # handler alone does not end the wait (Python resumes the poll after running it).
        self._wake_read, self._wake_write = socket.socketpair()
        for end in (self._wake_read, self._wake_write):
            end.setblocking(False)
        self.selector.register(self._wake_read, selectors.EVENT_READ, _WAKE)
        self.clients_dropped = 0
        self._connections = 0
        self._commits: list[Committed] = []
        self._announce = 0  # the last position of a batch just sent, for the subscribers
        self._flight: in_flight.InFlight | None = None  # for run()'s last answers
        self.stats = WriterStats(writer.limits.slow_batch_s)
        self._pending: list[_Request] = []
        self._stats_sent_at = 0.0
        self._peer_secret = b""
        self._handshaking: list[_Client] = []
        self._handshakes_full_said = False
        writer.on_commit = self._on_commit

    def stop_soon(self) -> None:
        """Finish the batch in hand, answer it, and stop; safe in a signal handler."""
        self.stopping = True
        # BlockingIOError: a wake-up already waits to be read; OSError: closed, the loop is over.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def close(self) -> None:
        """The sockets this server opened (not its clients'), once its loop has ended."""
        for key in list(self.selector.get_map().values()):
            if key.data is None or key.data is _WAKE or key.data is _PEERS:  # not a client's
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
        self._wake_write.close()
        self.selector.close()

    def _on_commit(self, commit: Commit) -> None:
        self._commits.append(Committed.of(commit))

    def listen(self) -> None:
        self.selector.register(listen_unix(self.socket_path), selectors.EVENT_READ, None)

    def listen_for_peers(self, host: str, port: int, secret: bytes) -> None:
        """Takes the other instances' relays at host:port; each must first prove it shares `secret`."""
        listener = socket.create_server((host, port), backlog=LISTEN_BACKLOG)
        listener.setblocking(False)
        self._peer_secret = secret
        self.selector.register(listener, selectors.EVENT_READ, _PEERS)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Reads requests, records them in batches, answers. With a batch in flight (sent, not yet
        confirmed), the next one is decided meanwhile and sent once the first has committed
        (in_flight.py): the writer's Python and PostgreSQL's work overlap."""
        pending: list[_Request] = []
        self._pending = pending
        self._flight = None
        try:
            self._loop(pending)
        finally:
            if self._flight is not None:  # an error above: the batch in flight still gets its answers
                with contextlib.suppress(Exception):
                    in_flight.land(self.writer, self._flight)
                    self._flush()

    def _loop(self, pending: list[_Request]) -> None:
        writer = self.writer
        flight: in_flight.InFlight | None = None
        while True:
            timeout = 0 if pending or flight else writer.limits.expiry_interval_s
            self._poll(timeout, pending)
            requests: list[_Request] = []
            taken: list[Submission] = []
            if pending and not self.stopping:
                requests, pending[:] = self._take(pending)
                taken = self._submissions(requests)
            ready, landed = None, False
            if flight is not None:
                with batch_logged(taken):
                    ready = in_flight.prepare(writer, taken, in_flight=True) if taken else None
                landing, flight, self._flight = flight, None, None  # landed once, whatever happens
                with batch_logged(landing.ready.batch):
                    landed = in_flight.land(writer, landing)
                self._flush()  # answer before anything else: callers are waiting
            if any(request.after is not None for request in requests):
                kept = _without_orphans(requests, taken)
                if len(kept) < len(taken):
                    taken, ready = kept, None  # decided with a request that is not to be tried
            # Nothing is in flight here, so the memory holds committed effects only: expiry (when
            # due) runs between two batches even under steady load. If it records anything, the
            # head moves and `send` refuses what was decided before it (it is decided again).
            writer.maybe_expire()
            if taken:
                with batch_logged(taken):
                    if landed and ready is not None:
                        flight = in_flight.send(writer, ready)
                    if flight is None:
                        flight = in_flight.begin(writer, taken)
                if flight is not None:
                    self._announce = flight.last_position
            self._flight = flight
            self._flush()
            if self._handshaking:
                self._drop_silent_peers()
            if self.parent_pid is not None and not self.stopping and os.getppid() != self.parent_pid:
                log.warning("the serving process is gone; the writer stops")
                self.stopping = True
            if self.stopping and flight is None:
                if pending:  # what was read before the stop: recorded and answered, one batch
                    requests, pending[:] = self._take(pending)
                    taken = _without_orphans(requests, self._submissions(requests))
                    with batch_logged(taken):
                        writer.process(taken)
                    self._flush()
                break

    def _poll(self, timeout: float, pending: list[_Request]) -> None:
        for key, events in self.selector.select(timeout):
            if key.data is _WAKE:
                with contextlib.suppress(BlockingIOError):
                    self._wake_read.recv(WAKE_BYTES_MAX)
                continue
            if key.data is _PEERS:
                self._accept(key.fileobj, peer=True)  # type: ignore[arg-type]
                continue
            client: _Client | None = key.data
            if client is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]
                continue
            if events & selectors.EVENT_WRITE:
                self._send(client)
            if events & selectors.EVENT_READ and client.sock in self.clients:
                self._read(client, pending)

    def _take(self, pending: list[_Request]) -> tuple[list[_Request], list[_Request]]:
        """Up to batch_events_max events of what is pending, as one batch, ending before a request
        that follows one of it (chains.py); and the rest."""
        count = take_batch(pending, lambda request: len(request.events), self.batch_events_max)
        count = chains.unchained_prefix([(id(r.client), r.request_id, r.after) for r in pending[:count]])
        return pending[:count], pending[count:]

    def _submissions(self, requests: list[_Request]) -> list[Submission]:
        batch = [
            Submission(r.events, _reply_to(r.client, r.request_id), r.x_request_id, r.trace_parent)
            for r in requests
        ]
        return traced(self.stats.timed(batch))

    # -- connections ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, peer: bool = False) -> None:
        try:
            sock, address = listener.accept()
        except BlockingIOError:
            return
        except OSError as error:  # out of file descriptors, say: the writer goes on with what it has
            log.error("could not accept a connection: %s", error)
            return
        sock.setblocking(False)
        self._connections += 1
        if peer:
            if len(self._handshaking) >= PEER_HANDSHAKES_MAX:
                if not self._handshakes_full_said:  # said once until there is room again
                    self._handshakes_full_said = True
                    log.error(
                        "%d peers are proving at once (limit); letting new ones go", PEER_HANDSHAKES_MAX
                    )
                sock.close()
                return
            peer_link.tune(sock)
            client = _Client(sock, f"peer {self._connections} ({address[0]})", peer=True)
            client.handshake = _Handshake(time.monotonic() + PEER_HANDSHAKE_S_MAX)
            self._handshaking.append(client)
        else:
            client = _Client(sock, f"client {self._connections}")
        self.clients[sock] = client
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _drop_silent_peers(self) -> None:
        """Peers that have not proved they share the secret within PEER_HANDSHAKE_S_MAX are let go."""
        now = time.monotonic()
        proving = []
        for client in self._handshaking:
            if client.handshake is None or client.sock not in self.clients:
                continue  # proved, or gone
            if client.handshake.due > now:
                proving.append(client)
            else:
                log.error(
                    "%s did not prove it is a peer within %.0f s; disconnecting it",
                    client.name,
                    PEER_HANDSHAKE_S_MAX,
                )
                self._drop(client)
        self._handshaking = proving
        if len(proving) < PEER_HANDSHAKES_MAX:
            self._handshakes_full_said = False

    def _handshake(self, client: _Client, handshake: _Handshake, data: bytes) -> bytes | None:
        """Takes a peer's handshake frames; what came after its proof (to read as frames), or None
        while it has not proved itself (or was let go)."""
        handshake.buffer += data
        try:
            while (body := peer_link.cut_frame(handshake.buffer)) is not None:
                if not handshake.leader_nonce:
                    handshake.relay_nonce = peer_link.relay_nonce_of(body)
                    handshake.leader_nonce = peer_link.new_nonce()
                    self._queue(
                        client,
                        peer_link.welcome(self._peer_secret, handshake.relay_nonce, handshake.leader_nonce),
                    )
                else:
                    peer_link.check_proof(
                        body, self._peer_secret, handshake.relay_nonce, handshake.leader_nonce
                    )
                    client.handshake = None
                    return bytes(handshake.buffer)
        except peer_link.HandshakeFailed as error:
            log.error("%s: %s; disconnecting it", client.name, error)
            self._drop(client)
        return None

    def _drop(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        self.clients.pop(client.sock, None)
        client.outbox.clear()
        client.sock.close()

    def _read(self, client: _Client, pending: list[_Request]) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        if client.handshake is not None:
            after = self._handshake(client, client.handshake, data)
            if after is None:
                return
            data = after
        try:
            bodies = client.reader.feed(data)
        except FrameTooLarge as error:
            log.error("%s sent %s; disconnecting it", client.name, error)
            self._drop(client)
            return
        for body in bodies:
            try:
                message = decode_to_writer(body)
            except Exception as error:  # noqa: BLE001 - one client's bug must not stop the writer
                log.error("%s sent what the writer cannot read (%s); disconnecting it", client.name, error)
                self._drop(client)
                return
            if isinstance(message, Subscribe):
                client.subscribed = True
            elif isinstance(message, Identify):
                self._queue(client, encode(Identity(self.writer.database)))
                if client.sock not in self.clients:
                    return  # dropped: its socket failed
            elif len(pending) >= self.queue_requests_max:
                # Answered at once: a caller is better told to come back than kept waiting until
                # its timeout while the writer records what it no longer waits for.
                client.replies.append(Reply(message.request_id, None, QUEUE_FULL, UNAVAILABLE))
                client.outcomes.note(message.request_id, recorded=False)
                self.stats.queue_full()
            else:
                pending.append(
                    _Request(
                        client,
                        message.request_id,
                        message.events,
                        message.x_request_id,
                        message.trace_parent,
                        message.after,
                    )
                )

    # -- answers and broadcasts -------------------------------------------------------------------

    def _flush(self) -> None:
        """Queues for every subscriber the commits since the last flush and, when a batch was
        just sent, its last position (a subscriber's refresher that sees the log's head move up to
        it then waits for the commit instead of reading the batch back); and for every client its
        answers. Each broadcast frame is encoded once, whatever the number of clients."""
        commits, self._commits = self._commits, []
        announce, self._announce = self._announce, 0
        broadcast = b"".join(encode(commit) for commit in commits)
        if announce:
            broadcast += encode(Announced(announce))
        now = time.monotonic()
        stats = peer_stats = b""
        if now - self._stats_sent_at >= STATS_INTERVAL_S:
            self._stats_sent_at = now
            one_statement = (self.writer.optimistic_won, self.writer.optimistic_lost)
            report = StatsReport(
                self.stats.snapshot(len(self._pending), one_statement, self.writer.oversold.lines)
            )
            stats, peer_stats = encode(report), encode_for_peers(report)
        for client in list(self.clients.values()):
            data = broadcast + (peer_stats if client.peer else stats) if client.subscribed else b""
            if client.replies:
                data += encode(Replies(client.replies))
                client.replies = []
            if data:
                self._queue(client, data)

    def _queue(self, client: _Client, data: bytes) -> None:
        """Queues `data` for the client and writes what its socket takes now. The limit is on what
        waits behind the message it is reading: one message larger than the limit (the commit of
        a batch of a million levels) is no sign of a client that stopped reading."""
        outbox = client.outbox
        outbox.add(data)
        if not outbox.watched_for_writing:
            self._send(client)
        if outbox.behind_first > self.outbox_bytes_max:
            self.clients_dropped += 1
            log.warning(
                "%s has not read %d bytes of answers and commits (limit %d); disconnecting it",
                client.name,
                outbox.size,
                self.outbox_bytes_max,
            )
            self._drop(client)

    def _send(self, client: _Client) -> None:
        try:
            client.outbox.send(client.sock, self.selector, client)
        except OSError:
            self._drop(client)


def _without_orphans(requests: list[_Request], batch: list[Submission]) -> list[Submission]:
    """The batch without the requests that follow one not recorded: those are answered, untried.
    (The requests they follow were in earlier batches, all answered by now: see _take.)"""
    kept: list[Submission] = []
    for request, submission in zip(requests, batch, strict=True):
        if request.after is not None and not request.client.outcomes.recorded(request.after):
            submission.done(chains.not_recorded())
        else:
            kept.append(submission)
    return kept


def _reply_to(client: _Client, request_id: int) -> Done:
    def done(result: list[EventResult] | BaseException) -> None:
        client.outcomes.note(request_id, recorded=not isinstance(result, BaseException))
        if isinstance(result, BaseException):
            kind = (
                REFUSED
                if isinstance(result, SubmissionFailed)
                else NOT_TRIED
                if isinstance(result, NotTried)
                else UNAVAILABLE
            )
            client.replies.append(Reply(request_id, None, f"{type(result).__name__}: {result}", kind))
        else:
            client.replies.append(Reply(request_id, result))

    return done
