"""A response leaves in one write: what the HTTP server writes in one round of callbacks, together.

uvicorn writes a response's status line and headers, then its body, each by its own
`transport.write`, and the event loop's transport sends each at once: two system calls and two TCP
segments for every answer, where one does. On loopback a send also runs the receiver's side of TCP
in the sender's system time, so the second one is not cheap (two small sends and their reads cost
82 µs here, against 13 µs for one).

`OneWriteTransport` stands between uvicorn's protocol and the real transport. It keeps what is
written and hands it to the real transport in one call (`writelines`: one `writev`, nothing
joined) from a callback queued with the first write (`call_soon`). That callback runs in the
loop's next round of callbacks, after any callbacks already queued and any I/O ready by then, and
never after a wait: so an answer leaves later only by the work already in the loop's queue (when a
writer's batch answers many requests at once, all of their answers are made before the first one
leaves). What is kept goes to the real transport at once when:
- it reaches `KEPT_BYTES_MAX`, so that a large body meets the real transport's flow control
  (its high-water mark pauses uvicorn's next send) as it did without this transport;
- the connection is closed, or the peer ends its side (`flush`, from the protocol's
  `eof_received`: the real transport closes itself after that callback, and drops later writes).
What is kept is dropped if the real transport is closing meanwhile, or on `abort()`.

It also holds the connection's `ResponseHead` (response_head.py): the request id that the request
telemetry puts into the next response head, written here as that head passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ledger.api.response_head import ResponseHead

# Past this, what is kept is written at once (a response's headers and a small body are far less).
KEPT_BYTES_MAX = 64 * 1024

Data = bytes | bytearray | memoryview


class OneWriteTransport(asyncio.Transport):
    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self.response_head = ResponseHead()

    def write(self, data: Data) -> None:
        if not self._kept:
            self._loop.call_soon(self.flush)
        kept = bytes(data)  # the caller may reuse a bytearray; bytes are kept as they are, not copied
        if self.response_head.pending is not None:
            kept = self.response_head.written(kept)
        self._kept.append(kept)
        self._kept_bytes += len(kept)
        if self._kept_bytes >= KEPT_BYTES_MAX:
            self.flush()

    def writelines(self, list_of_data: Iterable[Data]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hands what is kept to the real transport now (a no-op when nothing is)."""
        kept, self._kept, self._kept_bytes = self._kept, [], 0
        if kept and not self._transport.is_closing():
            self._transport.writelines(kept)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._kept, self._kept_bytes = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._kept_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
