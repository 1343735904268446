"""The request id: taken from a caller's `X-Request-ID` when it is sound, else made; carried in a
context variable so that every log line a request causes names it, and across the writer's socket
so that the writer's lines name it too.

A caller's id is kept only if it is at most REQUEST_ID_CHARS_MAX characters from a small set
(letters, digits and `._:+/=-`): anything else could forge or break log lines, and is replaced by a
new id."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar

HEADER = b"x-request-id"
REQUEST_ID_CHARS_MAX = 128
NEW_REQUEST_ID_BITS = 128  # 32 hex digits, the length of a W3C trace id
_SOUND = re.compile(rb"[A-Za-z0-9._:+/=-]{1,%d}" % REQUEST_ID_CHARS_MAX)

# The request this code runs for (an HTTP worker), or None.
REQUEST_ID: ContextVar[str | None] = ContextVar("ledger_request_id", default=None)
# The requests of the batch the writer works on: a function, called only when a line is logged.
BATCH_REQUEST_IDS: ContextVar[Callable[[], Sequence[str]] | None] = ContextVar(
    "ledger_batch_request_ids", default=None
)


def new_request_id() -> bytes:
    """Unique, not secret (an id names a request, it grants nothing): Python's generator, seeded
    from the system's randomness in every process, at a fraction of a system call's cost."""
    return b"%032x" % random.getrandbits(NEW_REQUEST_ID_BITS)


def sound_or_new(offered: bytes | None) -> bytes:
    """The caller's id when it is sound, else a new one."""
    if offered is not None and _SOUND.fullmatch(offered):
        return offered
    return new_request_id()
