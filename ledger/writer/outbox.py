"""What waits to be written to one non-blocking socket: written as far as the socket takes it now,
and no further, so that neither the writer nor a relay ever waits on a reader (server.py,
relay.py). Its owner bounds it (`size`) and decides what to do with a reader that falls behind.
"""

from __future__ import annotations

import selectors
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Outbox:
    chunks: deque[memoryview] = field(default_factory=deque)
    size: int = 0  # bytes waiting
    watched_for_writing: bool = False

    def add(self, data: bytes) -> None:
        self.chunks.append(memoryview(data))
        self.size += len(data)

    @property
    def behind_first(self) -> int:
        """Bytes waiting behind the first chunk, the one its reader is taking now: a reader that
        lags is one with messages piling up behind it, not one taking a large message."""
        return self.size - len(self.chunks[0]) if self.chunks else 0

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0

    def send(self, sock: socket.socket, selector: selectors.BaseSelector, mark: Any) -> None:
        """Writes what the socket takes now, and has the selector watch it for writing (with
        `mark`, its data there) while anything waits. OSError: the socket failed."""
        try:
            while self.chunks:
                head = self.chunks[0]
                sent = sock.send(head)
                self.size -= sent
                if sent < len(head):
                    self.chunks[0] = head[sent:]
                    break
                self.chunks.popleft()
        except BlockingIOError:
            pass
        waiting = bool(self.chunks)
        if waiting != self.watched_for_writing:
            self.watched_for_writing = waiting
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if waiting else 0)
            selector.modify(sock, events, mark)
