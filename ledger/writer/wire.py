"""The messages between the writer process and its clients: one definition, one encoder and one
decoder, shared by every side (STYLE 12).

A frame is a 4-byte big-endian length and a pickle of a tagged tuple (plain values pickle several
times faster than class instances; measured: an event 17 -> 7 µs). Clients send `Subscribe` once
if they keep a read cache, then `WriteRequest`s. The writer sends, per batch and in this order,
`Committed` to every subscriber (what the batch committed, so that every HTTP worker's read cache
is current before its callers get their answers), `Announced` to every subscriber when a batch
was just sent, and `Replies` to each client that has answers waiting; and now and then
`StatsReport` to every subscriber (its figures for the metrics endpoint). A message that a side
does not expect is an `UnexpectedMessage`, which names it: never a misparse.

Between instances (writer/relay.py) a connection first goes through peer_link.py's handshake,
which is not pickled: neither side unpickles anything of the other's before it.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

from ledger.domain.model import Level, Policy, StockEvent
from ledger.results import EventResult
from ledger.state_cache import CachedLevel, Commit
from ledger.writer.stats import WriterStatsSnapshot

FRAME = struct.Struct("!I")
FRAME_BYTES_MAX = 256 * 1024 * 1024

# store, sku, on_hand, reserved, incoming, position, updated_at, reserved per channel (or None)
LevelRow = tuple[str, str, int, int, int, int, str | None, dict[str, int] | None]
# store, SKU or `*`, the policy set (None: cleared)
PolicyRow = tuple[str, str, Policy | None]


class UnexpectedMessage(AssertionError):
    """A side received a message it has no use for: a bug in one of the two sides."""

    def __init__(self, message: object) -> None:
        super().__init__(f"unexpected message on the writer's socket: {message!r:.300}")


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Client -> writer: send me every `Committed` and `Announced` (I keep a read cache)."""


@dataclass(frozen=True, slots=True)
class Identify:
    """Client -> writer, before anything else: which database do you record into? Answered with
    `Identity`. A client configured for one database sends nothing more to a writer that names
    another (two services, or a command, given one LEDGER_WRITER_SOCKET): what it would record
    there would be in the wrong ledger for good. A client that does not ask is told nothing (the
    release before sent no such message)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Writer -> the client that sent `Identify`: the database it records into, as
    storage.database_urls.database_identity names it (None: a writer that was not told)."""

    database: str | None


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Client -> writer: record these events; answer with `request_id`. `x_request_id`: the HTTP
    request that sent them (its X-Request-ID), for the writer's log lines; `trace_parent`: the
    span they were sent from (W3C traceparent), with tracing on; `after`: the id of a request sent
    before on this connection, without whose recording these must not be recorded (writer/chains.py);
    each absent on the wire when there is none."""

    request_id: int
    events: list[StockEvent]
    x_request_id: str | None = None
    trace_parent: str | None = None
    after: int | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """Writer -> subscribers: a batch committed positions first_position..head, with these levels."""

    first_position: int
    head: int
    levels: list[LevelRow]
    policies: list[PolicyRow]

    @classmethod
    def of(cls, commit: Commit) -> Committed:
        return cls(
            commit.first_position,
            commit.head,
            [
                (
                    store,
                    sku,
                    c.level.on_hand_units,
                    c.level.reserved_units,
                    c.level.incoming_units,
                    c.position,
                    c.updated_at,
                    c.level.channel_reserved,
                )
                for (store, sku), c in commit.levels.items()
            ],
            [(store, sku, policy) for (store, sku), policy in commit.policies.items()],
        )

    def as_commit(self) -> Commit:
        levels = {(r[0], r[1]): CachedLevel(Level(r[2], r[3], r[4], r[7]), r[5], r[6]) for r in self.levels}
        policies = {(store, sku): policy for store, sku, policy in self.policies}
        return Commit(levels, {}, {}, self.first_position, self.head, policies)


@dataclass(frozen=True, slots=True)
class Announced:
    """Writer -> subscribers: a batch reaching `position` was sent and will commit or fail soon."""

    position: int


# What kind of failure a Reply without results is: the writer or its database cannot record now
# (re-send later), or this submission failed for a reason a retry will not change.
UNAVAILABLE = "unavailable"
REFUSED = "refused"
NOT_TRIED = "not_tried"  # it followed a request that was not recorded (chains.py)
FAILURE_KINDS = frozenset({UNAVAILABLE, REFUSED, NOT_TRIED})


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request: its results, or why there are none (`error`) and which kind of
    failure that is (`kind`, one of FAILURE_KINDS)."""

    request_id: int
    results: list[EventResult] | None
    error: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.results is None:
            assert self.kind in FAILURE_KINDS, f"a failed reply of unknown kind {self.kind!r}"
        else:
            assert self.kind is None, "a reply with results carries no failure kind"


@dataclass(frozen=True, slots=True)
class Replies:
    """Writer -> one client: the answers ready for it."""

    replies: list[Reply]


@dataclass(frozen=True, slots=True)
class StatsReport:
    """Writer -> subscribers: the writer's figures so far (writer/stats.py)."""

    snapshot: WriterStatsSnapshot


ToWriter = Subscribe | WriteRequest | Identify
FromWriter = Committed | Announced | Replies | StatsReport | Identity


def encode(message: ToWriter | FromWriter) -> bytes:
    """One frame."""
    plain: tuple[Any, ...]
    match message:
        case WriteRequest(request_id, events, None, None, None):
            plain = ("w", request_id, events)
        case WriteRequest(request_id, events, x_request_id, None, None):
            plain = ("w", request_id, events, x_request_id)
        case WriteRequest(request_id, events, x_request_id, trace_parent, None):
            plain = ("w", request_id, events, x_request_id, trace_parent)
        case WriteRequest(request_id, events, x_request_id, trace_parent, after):
            plain = ("w", request_id, events, x_request_id, trace_parent, after)
        case Committed(first, head, levels, policies):
            plain = ("c", first, head, levels, policies)
        case Announced(position):
            plain = ("p", position)
        case Replies(replies):
            plain = ("r", [(r.request_id, r.results, r.error, r.kind) for r in replies])
        case Subscribe():
            plain = ("s",)
        case Identify():
            plain = ("i",)
        case Identity(database):
            plain = ("i", database)
        case StatsReport(snapshot):
            plain = ("m", snapshot.plain())
        case _:
            raise UnexpectedMessage(message)
    body = pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(body)) + body


def encode_for_peers(report: StatsReport) -> bytes:
    """The writer's figures as a relay of the release before the oversold count decodes them (five
    fields; it drops the link on any other shape): a peer may run that release during a rolling
    upgrade. The count stays on the leading instance's own /metrics."""
    body = pickle.dumps(("m", report.snapshot.plain()[:5]), protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(body)) + body


def _decode(body: bytes | bytearray | memoryview) -> ToWriter | FromWriter:
    plain = pickle.loads(body)
    match plain:
        case ("w", int(request_id), list(events)):
            return WriteRequest(request_id, events)
        case ("w", int(request_id), list(events), str(x_request_id)):
            return WriteRequest(request_id, events, x_request_id)
        case ("w", int(request_id), list(events), str() | None as x_request_id, str(trace_parent)):
            return WriteRequest(request_id, events, x_request_id, trace_parent)
        case (
            "w",
            int(request_id),
            list(events),
            str() | None as x_request_id,
            str() | None as trace_parent,
            int(after),
        ):
            return WriteRequest(request_id, events, x_request_id, trace_parent, after)
        case ("c", int(first), int(head), list(levels), list(policies)):
            return Committed(first, head, levels, policies)
        case ("p", int(position)):
            return Announced(position)
        case ("r", list(replies)):
            return Replies([_reply(plain_reply) for plain_reply in replies])
        case ("s",):
            return Subscribe()
        case ("i",):
            return Identify()
        case ("i", str() | None as database):
            return Identity(database)
        case (
            "m",
            (tuple(batch_events), tuple(commit_seconds), tuple(rejects), int(queued), (int(won), int(lost))),
        ):  # a writer peer of the release before oversold lines were counted
            return StatsReport(
                WriterStatsSnapshot(batch_events, commit_seconds, rejects, queued, (won, lost))
            )
        case (
            "m",
            (
                tuple(batch_events),
                tuple(commit_seconds),
                tuple(rejects),
                int(queued),
                (int(won), int(lost)),
                int(oversold),
            ),
        ):
            return StatsReport(
                WriterStatsSnapshot(batch_events, commit_seconds, rejects, queued, (won, lost), oversold)
            )
    raise UnexpectedMessage(plain)


def _reply(plain: object) -> Reply:
    match plain:
        case (int(request_id), list(results), None, None):
            return Reply(request_id, results)
        case (int(request_id), None, str(error), str(kind)) if kind in FAILURE_KINDS:
            return Reply(request_id, None, error, kind)
    raise UnexpectedMessage(plain)


def decode_to_writer(body: bytes | bytearray | memoryview) -> ToWriter:
    message = _decode(body)
    if not isinstance(message, Subscribe | WriteRequest | Identify):
        raise UnexpectedMessage(message)
    return message


def decode_from_writer(body: bytes | bytearray | memoryview) -> FromWriter:
    message = _decode(body)
    if not isinstance(message, Committed | Announced | Replies | StatsReport | Identity):
        raise UnexpectedMessage(message)
    return message


class FrameReader:
    """Cuts a byte stream into frame bodies."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self.frame_bytes_max = frame_bytes_max
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        bodies = []
        while len(self.buffer) >= FRAME.size:
            (length,) = FRAME.unpack_from(self.buffer)
            if length > self.frame_bytes_max:
                raise FrameTooLarge(length, self.frame_bytes_max)
            if len(self.buffer) < FRAME.size + length:
                break
            bodies.append(bytes(self.buffer[FRAME.size : FRAME.size + length]))
            del self.buffer[: FRAME.size + length]
        return bodies


class FrameTooLarge(ValueError):
    def __init__(self, length: int, limit: int = FRAME_BYTES_MAX) -> None:
        super().__init__(f"a frame of {length} bytes, over the limit of {limit}")
