"""The link between a relay and the leading writer: how each proves to the other that they share
the peers' secret, and how the link notices that the other side has gone silent.

Frames between writers are pickles (wire.py), and unpickling runs code: so neither side reads a
pickle of the other before it has proved that it knows `LEDGER_WRITER_PEER_SECRET`, which never
crosses the wire and is never stored in the database. Each side proves it by an HMAC over a
nonce the other side just chose, so that a recorded handshake cannot be replayed:

1. relay -> leader: `HELLO` and the relay's nonce;
2. leader -> relay: `WELCOME`, the leader's nonce, and the leader's proof over both nonces;
3. relay -> leader: `PROOF` and the relay's proof over both nonces (in the other order).

These frames are raw bytes with wire.py's length prefix, at most `HANDSHAKE_FRAME_BYTES_MAX`
long: a longer length is refused before anything more is read.

A leader whose machine was lost sends nothing, not even a reset: both ends of a link use TCP
keepalives and a user timeout (`SILENT_S_MAX`), so that a relay finds out within seconds, not
the quarter of an hour TCP's retransmissions take by default.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket

from ledger.writer.wire import FRAME

VERSION = b"ledger-writer-peer/2 "
HELLO = VERSION + b"hello "
WELCOME = VERSION + b"welcome "
PROOF = VERSION + b"proof "
HANDSHAKE_FRAME_BYTES_MAX = 256
NONCE_BYTES = 16


# A link whose other end has not answered for this long is closed: keepalive probes after
# KEEPALIVE_IDLE_S of quiet, every KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES of them; and data sent
# but not acknowledged for SILENT_S_MAX.
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_PROBES = 3
SILENT_S_MAX = 15


def tune(sock: socket.socket) -> None:
    """No Nagle delay (a batch's answers are small and waited for), and a silent peer is found out."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", SILENT_S_MAX * 1000),
    ):
        if hasattr(socket, option):  # Linux's; elsewhere the system's defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class HandshakeFailed(ValueError):
    """The other side did not prove it shares the secret, or did not speak the handshake."""


def new_nonce() -> bytes:
    return secrets.token_hex(NONCE_BYTES).encode("ascii")


def _frame(body: bytes) -> bytes:
    return FRAME.pack(len(body)) + body


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + b"|" + first + b"|" + second, hashlib.sha256).hexdigest().encode("ascii")


def hello(relay_nonce: bytes) -> bytes:
    return _frame(HELLO + relay_nonce)


def welcome(secret: bytes, relay_nonce: bytes, leader_nonce: bytes) -> bytes:
    return _frame(WELCOME + leader_nonce + b" " + _mac(secret, b"leader", relay_nonce, leader_nonce))


def proof(secret: bytes, relay_nonce: bytes, leader_nonce: bytes) -> bytes:
    return _frame(PROOF + _mac(secret, b"relay", leader_nonce, relay_nonce))


def cut_frame(buffer: bytearray) -> bytes | None:
    """The first handshake frame of `buffer`, taken out of it; None until it has all arrived.
    Only that one frame: what follows stays in the buffer, for the frames after the handshake."""
    if len(buffer) < FRAME.size:
        return None
    (length,) = FRAME.unpack_from(buffer)
    if length > HANDSHAKE_FRAME_BYTES_MAX:
        raise HandshakeFailed(
            f"a handshake frame of {length} bytes, over the limit of {HANDSHAKE_FRAME_BYTES_MAX}"
        )
    if len(buffer) < FRAME.size + length:
        return None
    body = bytes(buffer[FRAME.size : FRAME.size + length])
    del buffer[: FRAME.size + length]
    return body


def relay_nonce_of(body: bytes) -> bytes:
    """The leader reads the relay's hello."""
    nonce = body.removeprefix(HELLO)
    if not body.startswith(HELLO) or len(nonce) != 2 * NONCE_BYTES:
        raise HandshakeFailed("not a peer's hello")
    return nonce


def leader_nonce_of(body: bytes, secret: bytes, relay_nonce: bytes) -> bytes:
    """The relay checks the leader's welcome, and returns the leader's nonce."""
    if not body.startswith(WELCOME):
        raise HandshakeFailed("not a leader's welcome")
    leader_nonce, _, mac = body.removeprefix(WELCOME).partition(b" ")
    if not hmac.compare_digest(mac, _mac(secret, b"leader", relay_nonce, leader_nonce)):
        raise HandshakeFailed("the leader did not prove it shares the peers' secret")
    return leader_nonce


def check_proof(body: bytes, secret: bytes, relay_nonce: bytes, leader_nonce: bytes) -> None:
    """The leader checks the relay's proof."""
    if not body.startswith(PROOF) or not hmac.compare_digest(
        body.removeprefix(PROOF), _mac(secret, b"relay", leader_nonce, relay_nonce)
    ):
        raise HandshakeFailed("the peer did not prove it shares the peers' secret")
