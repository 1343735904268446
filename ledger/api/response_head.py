"""How a response comes to carry its request id, and how the request telemetry (telemetry.py)
learns the status that was answered.

Under `ledger serve` the server's own protocol (connections.py) puts the connection's `ResponseHead`
in each request's scope (`RESPONSE_HEAD_KEY`), and the connection's transport (one_write.py) hands
it the next response head to be written: the id goes into that head as text, and its status into
the request's scope (`STATUS_KEY`). So the id passes none of uvicorn's checks of the response's
headers (two regular expressions and a lower-casing a header) and no wrapper around `send`: measured
under callgrind on a served GET, the two together were near half of what the telemetry cost. The id
needs no check: it is letters, digits and `._:+/=-` by construction (ledger/telemetry/request_ids.py).

Under any other server (a test's client, uvicorn run by hand) there is none in the scope, and
`through` adds the same header by wrapping `send`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.telemetry.request_ids import HEADER

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

RESPONSE_HEAD_KEY = "ledger.response_head"
REQUEST_ID_KEY = "ledger.request_id"  # the id the request's answer carries (bytes)
STATUS_KEY = "ledger.status"  # the status of the head written for the request
NO_ANSWER_STATUS = 500  # the server answers 500 when the application fails before answering
# The client went away before its answer was written (nginx's name for it: "client closed request").
CLIENT_GONE_STATUS = 499

# "HTTP/1.1 200 OK\r\n...": the status from the three digits after uvicorn's "HTTP/1.1 "
# (httptools_impl.STATUS_LINE), looked up rather than parsed (half the instructions). 100 is left
# out: `100 Continue` is the interim answer uvicorn writes itself before the application's.
_FINAL_STATUS = {b"%d" % status: status for status in range(101, 600)}
_LINE_START = HEADER + b": "
_HEAD_END = b"\r\n\r\n"  # the header's line end, and the blank line that ends the head


class ResponseHead:
    """One connection's. `pending`: the scope of the request whose answer is the next head this
    connection writes (responses on a connection never overlap: uvicorn starts a pipelined request
    once the one before it is answered); `closed`: the connection is gone."""

    __slots__ = ("closed", "pending")

    def __init__(self) -> None:
        self.pending: Scope | None = None
        self.closed = False

    def written(self, head: bytes) -> bytes:
        """The head as it is to be written: the transport calls this for each write while a request
        is pending, and the protocol writes nothing else meanwhile (connections.py drops what is
        pending before uvicorn's own 400)."""
        status = _FINAL_STATUS.get(head[9:12])
        if status is None:  # 100 Continue: the id waits for the final head
            return head
        scope: Scope = self.pending  # type: ignore[assignment]  # not None: the caller checked
        self.pending = None
        scope[STATUS_KEY] = status
        # A head ends with the blank line that ends its headers: the header goes before it.
        return b"".join((head[:-2], _LINE_START, scope[REQUEST_ID_KEY], _HEAD_END))


def through(scope: Scope, send: Send, request_id: bytes) -> Send:
    """`send`, adding the header to the response's start and noting its status in the scope: for a
    server that does not write it into the head itself."""
    header = (HEADER, request_id)

    def sending(message: Message) -> Awaitable[None]:
        # A plain function that hands back send's own awaitable: no coroutine of its own.
        if message["type"] == "http.response.start":
            scope[STATUS_KEY] = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        return send(message)

    return sending


def unanswered_status(head: ResponseHead | None) -> int:
    """The status counted for a request whose answer was not written: 499 if its client had gone,
    else 500 (the application failed or returned without answering: the server answers 500 after
    it)."""
    return CLIENT_GONE_STATUS if head is not None and head.closed else NO_ANSWER_STATUS
