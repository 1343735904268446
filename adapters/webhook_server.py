"""Serves the adapters' HTTP side (webhook_app.py) with uvicorn on a thread of its own, within named limits.

`ledger adapters run` hosts it beside the outbound workers. The limits are the ones the API's server
keeps (ledger/api/connections.py), since MoySklad and the WMS reach it from outside:
- connections and requests at once: LEDGER_ADAPTERS_HTTP_CONNECTIONS_MAX (past it, the protocol
  marks the request and the app answers 503 `over-capacity`: the sender retries; the liveness
  probe is answered still, from memory); as many worker threads for the receiver's work;
- a connection that sends nothing is closed after LEDGER_HTTP_IDLE_TIMEOUT_S, a request whose
  headers do not arrive whole within LEDGER_HTTP_HEADER_TIMEOUT_S of its first byte (or past
  LEDGER_HTTP_HEADER_BYTES_MAX: 400), or whose body does not within LEDGER_HTTP_BODY_TIMEOUT_S of
  its headers, is cut (slowloris);
- the kernel's queue of connections not yet accepted: LISTEN_BACKLOG_MAX;
- a stop lets the requests in flight finish within the senders' deadline
  (LEDGER_ADAPTERS_WEBHOOK_DEADLINE_MS), then cancels them, and waits for the thread no longer than
  STOP_WAIT_S.
The socket is bound by `WebhookServer()` itself, so that a port in use fails there, in the caller.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn

from adapters.inbound import WebhookReceiver
from adapters.masking import secret_safe_logger
from adapters.webhook_app import webhook_app
from ledger.api.connections import DeadlineProtocol, connection_options
from ledger.config import Settings

log = secret_safe_logger("adapters.webhook_server")

# Connections the kernel holds for us before we accept them. http.server's default was 5: a burst
# of more webhooks than that lost its SYNs and waited out TCP's 1 s retransmission, most of a
# sender's 1500 ms deadline.
LISTEN_BACKLOG_MAX = 128
START_WAIT_S = 10.0  # until the server listens; past it the start fails
STOP_WAIT_S = 10.0  # for the server's thread, past the grace the requests in flight had

_NOT_ASCII = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    connections_max: int
    idle_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    header_bytes_max: int
    stop_grace_s: float

    @classmethod
    def of(cls, settings: Settings) -> ServerLimits:
        return cls(
            connections_max=settings.adapters_http_connections_max,
            idle_timeout_s=settings.http_idle_timeout_s,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            header_bytes_max=settings.http_header_bytes_max,
            stop_grace_s=settings.adapters_webhook_deadline_ms / 1000,
        )


class WebhookProtocol(DeadlineProtocol):
    """The API's protocol, and a request line with bytes outside ASCII taken as their
    percent-encoding: such a path is no webhook's (404), where the parser would refuse it (400).
    No valid request changes: a request target is ASCII (RFC 9112, 3.2). Only the line that starts
    a data chunk is read so: a request pipelined behind another in one chunk keeps the parser's 400."""

    at_request_line = True

    def data_received(self, data: bytes) -> None:
        if self.at_request_line:
            end = data.find(b"\n") + 1
            if end:
                self.at_request_line = False
            line, rest = (data[:end], data[end:]) if end else (data, b"")
            data = _NOT_ASCII.sub(lambda byte: b"%%%02X" % byte[0][0], line) + rest
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.at_request_line = True


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.listening.set()


class WebhookServer:
    """Serves `receiver` on host:port (127.0.0.1 and a free port by default) until `stop()`."""

    def __init__(
        self,
        receiver: WebhookReceiver,
        limits: ServerLimits | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        limits = limits or ServerLimits.of(Settings())
        self.limits = limits
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG_MAX)
        self._port = int(self.socket.getsockname()[1])
        options: dict[str, Any] = {
            **connection_options(
                WebhookProtocol,
                idle_timeout_s=limits.idle_timeout_s,
                header_timeout_s=limits.header_timeout_s,
                body_timeout_s=limits.body_timeout_s,
                header_bytes_max=limits.header_bytes_max,
                connections_max=limits.connections_max,
            ),
            "backlog": LISTEN_BACKLOG_MAX,
            "timeout_graceful_shutdown": limits.stop_grace_s,
        }
        config = uvicorn.Config(
            webhook_app(receiver, threads_max=limits.connections_max),
            lifespan="off",
            log_config=None,  # the process's own logging, as configured
            access_log=False,  # an access line would show a webhook's secret path
            **options,
        )
        self.server = _Uvicorn(config)
        self.thread = threading.Thread(
            target=self.server.run, args=([self.socket],), name="webhook-server", daemon=True
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebhookServer:
        self.thread.start()
        if not self.server.listening.wait(START_WAIT_S) or not self.server.started:
            self.stop()
            raise RuntimeError(f"the webhook server did not start within {START_WAIT_S:.0f} s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(self.limits.stop_grace_s + STOP_WAIT_S)
        if self.thread.is_alive():
            self.server.force_exit = True
            log.warning("the webhook server did not stop within %.0f s: left behind", STOP_WAIT_S)
        self.socket.close()
