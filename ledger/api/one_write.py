"""A response leaves in one write: the HTTP server's writes of one turn of the event loop, joined.

uvicorn writes a response's status line and headers, then its body, each by its own
`transport.write`, and the event loop's transport sends each at once: two system calls and two TCP
segments for every answer (seen with strace on `ledger serve`), where one does. On loopback a send
also runs the receiver's side of TCP in the sender's system time, so the second one is not cheap:
here two small sends and their reads cost 82 µs against 13 µs for one.

`OneWriteTransport` stands between uvicorn's protocol and the real transport. It keeps what is
written during one turn of the loop and writes it, joined, at the end of that turn (`call_soon`),
before the loop waits for anything else. Closing writes what is kept first, as the real transport
then sends what it holds before it closes. Everything else goes to the real transport unchanged,
so its flow control (pause_writing at its high-water mark) works as before; at most one turn's
writes are kept here, which the server's body and header limits bound.
"""

from __future__ import annotations

import asyncio
from typing import Any


class OneWriteTransport(asyncio.Transport):
    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._kept:
            self._loop.call_soon(self._write_kept)
        self._kept.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _write_kept(self) -> None:
        kept, self._kept = self._kept, []
        if kept and not self._transport.is_closing():
            self._transport.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def close(self) -> None:
        self._write_kept()
        self._transport.close()

    def abort(self) -> None:
        self._kept = []
        self._transport.abort()

    def write_eof(self) -> None:
        self._write_kept()
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
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._kept)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
