"""The clients of the writer process, in the serving processes.

`submit` (async, for the HTTP event loop) uses one connection that subscribes to every commit, so
that this process's read cache is current before its callers get their answers. `submit_and_wait`
and `send` (blocking, for threads such as the Kafka intake) use a connection of their own that does
not subscribe: it reads only its own answers, so the writer never has anything for it that nobody
waits for. `send` leaves a request in the writer without waiting, to be recorded only if the one
it follows was (writer/chains.py).
Both decode with wire.py; a message neither expects is an UnexpectedMessage, never a misparse.
A failed request raises what its reply's kind says: WriterUnavailable (re-send later) or
SubmissionFailed (a retry will not change it).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.state_cache import StateCache
from ledger.telemetry.request_ids import current_request_id
from ledger.writer.batch_tracing import caller_trace_parent
from ledger.writer.stats import WriterStatsSnapshot
from ledger.writer.submission import NotTried, Sent, SubmissionFailed, WriterUnavailable, WrongDatabase
from ledger.writer.wire import (
    FRAME,
    FRAME_BYTES_MAX,
    NOT_TRIED,
    REFUSED,
    Announced,
    Committed,
    FrameReader,
    FrameTooLarge,
    FromWriter,
    Identify,
    Identity,
    Replies,
    Reply,
    StatsReport,
    Subscribe,
    UnexpectedMessage,
    WriteRequest,
    decode_from_writer,
    encode,
)

log = logging.getLogger("ledger.writer")

RECV_BYTES = 1 << 20
# After the connection to the writer dropped (it restarted, say), when to connect again.
RESUBSCRIBE_S = 1.0
# What may wait to be sent to the writer process before a submit is refused (it is not reading).
SEND_BUFFER_BYTES_MAX = 32 * 1024 * 1024
# The blocking connection's kernel send buffer, asked for (Linux grants up to twice net.core.wmem_max,
# 416 KiB by default). A Kafka batch of 2,000 events is about 220 KB on the wire, more than the
# default 208 KiB: the writer then read it in two turns of its loop, the second only after the batch
# in flight had committed, so it could not decide it meanwhile. In one buffer it is read at once.
SYNC_SOCKET_SEND_BUFFER_BYTES = 1024 * 1024


class RemoteWriter:
    def __init__(
        self,
        socket_path: str,
        cache: StateCache,
        timeout_s: float,
        send_buffer_bytes_max: int = SEND_BUFFER_BYTES_MAX,
        *,
        database: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        # The database this client records into (storage.database_urls.database_identity): each
        # connection first asks the writer which it records into, and sends nothing to one of
        # another (WrongDatabase). None: not asked.
        self.database = database
        self.cache = cache
        self.timeout_s = timeout_s
        self.send_buffer_bytes_max = send_buffer_bytes_max
        self._ids = itertools.count(1)
        self._futures: dict[int, asyncio.Future[list[EventResult]]] = {}
        self._stream: asyncio.StreamWriter | None = None
        self._outbox: list[bytes] = []  # frames for the writer, sent at the end of the loop's turn
        self._reader_task: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._sync_lock = threading.Lock()
        self._sync_sock: socket.socket | None = None
        self._sync_frames = FrameReader()  # what _sync_sock brought, up to the next whole frame
        # Requests sent on _sync_sock, not yet answered, each with when it must be (monotonic).
        self._sync_waiting: dict[int, float] = {}
        self._sync_answers: dict[int, Reply] = {}  # of those, the ones read while waiting for another
        self.commits_seen = 0
        self.stats: WriterStatsSnapshot | None = None  # the last the writer process sent
        self.alive = True
        self._stopped = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.alive = False
        self._stopped = True
        if self._sync_sock is not None:
            self._sync_sock.close()
        if self._stream is not None:
            self._stream.close()

    def _on_commit(self, committed: Committed) -> None:
        self.cache.install(committed.as_commit())
        self.commits_seen += 1

    # -- async, for the event loop ------------------------------------------------------------------

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._stream is None or self._stream.is_closing():
                try:
                    reader, stream = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.socket_path), self.timeout_s
                    )
                except (OSError, TimeoutError) as error:
                    self.alive = False
                    raise WriterUnavailable(f"cannot reach the writer process: {error}") from None
                if self.database is not None:
                    try:
                        stated = await asyncio.wait_for(self._identity(reader, stream), self.timeout_s)
                    except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                        stream.close()
                        self.alive = False
                        raise WriterUnavailable(f"cannot reach the writer process: {error!r}") from None
                    if stated != self.database:
                        stream.close()
                        self.alive = False
                        raise self._wrong_database(stated)
                self.alive = True
                stream.write(encode(Subscribe()))
                self._stream = stream
                # A context of its own: not the request's that happened to connect, whose id
                # would otherwise name every line the reader logs from then on.
                self._reader_task = asyncio.create_task(
                    self._read_loop(reader), context=contextvars.Context()
                )
            return self._stream

    async def _identity(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> str | None:
        stream.write(encode(Identify()))
        header = await reader.readexactly(FRAME.size)
        (length,) = FRAME.unpack(header)
        if length > FRAME_BYTES_MAX:
            raise FrameTooLarge(length)
        return _stated(decode_from_writer(await reader.readexactly(length)))

    def _wrong_database(self, stated: str | None) -> WrongDatabase:
        return WrongDatabase(
            f"the writer at {self.socket_path} records into {stated or 'a database it does not name'}, "
            f"not into {self.database} (LEDGER_DATABASE_URL): nothing was sent to it; give each "
            "ledger a LEDGER_WRITER_SOCKET of its own"
        )

    async def subscribe(self) -> None:
        """Connects now, and again whenever the connection drops, so that this process's cache
        hears of every commit even if this process never writes over HTTP (a worker whose only
        writer is the Kafka intake's blocking client): otherwise its refresher reads every
        committed batch back from the database (seen: 2.3 history rows an event)."""
        if self._stopped:
            return
        try:
            await self._connect()
        except WriterUnavailable as error:
            log.warning("%s; trying again in %.0f s", error, RESUBSCRIBE_S)
            self._resubscribe_soon()

    def _resubscribe_soon(self) -> None:
        if not self._stopped:
            loop = asyncio.get_running_loop()
            loop.call_later(RESUBSCRIBE_S, lambda: loop.create_task(self.subscribe()))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        try:
            while True:
                data = await reader.read(RECV_BYTES)
                if not data:
                    break
                for body in frames.feed(data):
                    self._on_message(decode_from_writer(body))
        except OSError:
            pass
        except asyncio.CancelledError:
            self._stopped = True  # the event loop is closing: no reconnecting
            raise
        finally:
            self.alive = False
            # Commits may have been missed while disconnected: forget what the cache holds.
            self.cache.clear(0)
            if self._stream is not None:
                self._stream.close()
            self._stream = None
            for future in self._futures.values():
                if not future.done():
                    future.set_exception(WriterUnavailable("the writer process went away"))
            self._futures.clear()
            self._resubscribe_soon()

    def _on_message(self, message: FromWriter) -> None:
        if isinstance(message, Committed):
            self._on_commit(message)
        elif isinstance(message, Announced):
            self.cache.announced = max(self.cache.announced, message.position)
        elif isinstance(message, StatsReport):
            self.stats = message.snapshot
        elif isinstance(message, Identity):
            raise UnexpectedMessage(message)  # asked for once, and read, before this loop started
        else:
            for reply in message.replies:
                future = self._futures.pop(reply.request_id, None)
                if future is None or future.done():
                    continue
                if reply.results is not None:
                    future.set_result(reply.results)
                else:
                    future.set_exception(_failure(reply))

    async def submit(self, events: list[StockEvent]) -> list[EventResult]:
        stream = await self._connect()
        if stream.transport.get_write_buffer_size() > self.send_buffer_bytes_max:
            # The writer is not reading: do not pile up more for it (see server.py's queue bound).
            raise WriterUnavailable("the writer process is not taking requests")
        request_id = next(self._ids)
        future: asyncio.Future[list[EventResult]] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        self._send_soon(
            stream, encode(WriteRequest(request_id, events, current_request_id(), caller_trace_parent()))
        )
        # A timer, not asyncio.wait_for: the same TimeoutError, for a third of the cost (measured:
        # 7.7 against 4.1 µs a request, most of that the future itself).
        timer = asyncio.get_running_loop().call_later(self.timeout_s, _time_out, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._futures.pop(request_id, None)

    def _send_soon(self, stream: asyncio.StreamWriter, data: bytes) -> None:
        """Frames written in one turn of the event loop (requests that arrived together) leave in
        one write, at the end of the turn: one system call on each side instead of one a request."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._send_outbox, stream)
        self._outbox.append(data)

    def _send_outbox(self, stream: asyncio.StreamWriter) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if not stream.is_closing():
            stream.write(data)

    # -- blocking, for threads --------------------------------------------------------------------

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        return self.send(events).wait()

    sends_ahead = True  # `send` leaves the request with the writer process

    def send(self, events: list[StockEvent], after: Sent | None = None) -> SentRequest:
        """Sends a request without waiting for its answer. With `after` (sent before by this
        client), it is recorded only if that one was; if not, it is answered NotTried."""
        assert after is None or isinstance(after, SentRequest), f"not sent here: {after!r}"
        with self._sync_lock:
            try:
                sock = self._sync_socket()
                request_id = next(self._ids)
                request = WriteRequest(
                    request_id,
                    events,
                    None,
                    caller_trace_parent(),
                    None if after is None else after.request_id,
                )
                sock.settimeout(self.timeout_s)  # a poll may have left it at a few milliseconds
                sock.sendall(encode(request))
            except OSError as error:
                self._sync_lost()
                raise WriterUnavailable(f"cannot reach the writer process: {error}") from None
            self._sync_waiting[request_id] = time.monotonic() + self.timeout_s
            return SentRequest(self, request_id)

    def poll(self, request_id: int, wait_s: float | None) -> list[EventResult] | None:
        """The answer to a request `send` sent, waiting at most `wait_s` for it (None: until it is
        due, timeout_s after it was sent); None if it has not come yet."""
        with self._sync_lock:
            try:
                reply = self._sync_answer(request_id, wait_s)
            except OSError as error:
                self._sync_lost()
                raise WriterUnavailable(f"cannot reach the writer process: {error}") from None
        if reply is None:
            return None
        if reply.results is None:
            raise _failure(reply)
        return reply.results

    def check_database(self) -> None:
        """Connects the blocking connection now: WrongDatabase if the writer records into another
        database than this client's, WriterUnavailable if it cannot be reached."""
        with self._sync_lock:
            try:
                self._sync_socket()
            except OSError as error:
                self._sync_lost()
                raise WriterUnavailable(f"cannot reach the writer process: {error}") from None

    def _sync_socket(self) -> socket.socket:
        if self._sync_sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SYNC_SOCKET_SEND_BUFFER_BYTES)
                sock.settimeout(self.timeout_s)
                sock.connect(self.socket_path)
                frames = FrameReader()
                if self.database is not None:
                    stated = self._sync_identity(sock, frames)
                    if stated != self.database:
                        raise self._wrong_database(stated)
            except BaseException:
                sock.close()
                raise
            self._sync_sock = sock
            self._sync_frames = frames
        return self._sync_sock

    def _sync_identity(self, sock: socket.socket, frames: FrameReader) -> str | None:
        sock.sendall(encode(Identify()))
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the writer did not say which database it records into")
            sock.settimeout(left)
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionResetError("the writer process closed the connection")
            bodies = frames.feed(data)
            if bodies:
                assert len(bodies) == 1, "the writer sends nothing else before a request"
                return _stated(decode_from_writer(bodies[0]))

    def _sync_lost(self) -> None:
        """The blocking connection cannot be trusted to line up again (an answer may still come
        for a request given up on): closed, and what was sent on it is answered no more."""
        if self._sync_sock is not None:
            self._sync_sock.close()
        self._sync_sock = None
        self._sync_waiting.clear()
        self._sync_answers.clear()

    def _sync_answer(self, request_id: int, wait_s: float | None) -> Reply | None:
        answer = self._sync_answers.pop(request_id, None)
        if answer is not None:
            self._sync_waiting.pop(request_id, None)
            return answer
        deadline = self._sync_waiting.get(request_id)
        if deadline is None or self._sync_sock is None:
            raise ConnectionResetError("the connection it was sent on was lost")
        sock = self._sync_sock
        until = deadline if wait_s is None else min(deadline, time.monotonic() + wait_s)
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("the writer did not answer in time")
            if now >= until:
                return None
            sock.settimeout(until - now)
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                continue  # the time given is up: the checks above say which
            if not data:
                raise ConnectionResetError("the writer process closed the connection")
            found: Reply | None = None
            for body in self._sync_frames.feed(data):
                message = decode_from_writer(body)
                if not isinstance(message, Replies):
                    raise UnexpectedMessage(message)  # this connection did not subscribe
                for reply in message.replies:
                    if reply.request_id == request_id:
                        found = reply
                    elif reply.request_id in self._sync_waiting:
                        self._sync_answers[reply.request_id] = reply
            if found is not None:
                self._sync_waiting.pop(request_id, None)
                return found


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request sent on the blocking connection, its answer still to be read (`wait`)."""

    writer: RemoteWriter
    request_id: int

    def wait(self) -> list[EventResult]:
        results = self.writer.poll(self.request_id, None)
        assert results is not None, "no answer by its deadline raises TimeoutError"
        return results

    def poll(self, wait_s: float) -> list[EventResult] | None:
        return self.writer.poll(self.request_id, wait_s)


def _stated(message: FromWriter) -> str | None:
    if not isinstance(message, Identity):
        raise UnexpectedMessage(message)
    return message.database


def _failure(reply: Reply) -> Exception:
    """A failed reply as the error of its kind: SubmissionFailed, NotTried or WriterUnavailable."""
    reason = reply.error or "the writer failed"
    if reply.kind == REFUSED:
        return SubmissionFailed(reason)
    return NotTried(reason) if reply.kind == NOT_TRIED else WriterUnavailable(reason)


def _time_out(future: asyncio.Future[list[EventResult]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the writer did not answer in time"))
