"""A small threaded HTTP server that hands each request to a handler object: the fake servers'.

For devtools only (devtools/fakes, their tests and bench/): they are test doubles, and http.server
is enough for them. The adapters' own webhook receiver is a FastAPI app served by uvicorn
(adapters/webhook_app.py, adapters/webhook_server.py). The request and its answer are plain values
both share (adapters/exchange.py).
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from adapters.exchange import Reply, Request

__all__ = ["BODY_BYTES_MAX", "LISTEN_BACKLOG_MAX", "Handler", "HttpServer", "Reply", "Request"]

BODY_BYTES_MAX = 32 * 1024 * 1024
# Connections the kernel holds for us before we accept them. http.server's default is 5: a burst of
# more requests than that loses its SYNs and waits out TCP's 1 s retransmission (the receiver's own
# backlog has the same reason: adapters/webhook_server.py).
LISTEN_BACKLOG_MAX = 128


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG_MAX
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer (one that timed out, as tests make them) is no
        # fault of the server: a real one would not print it. Anything else is printed as before.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(Protocol):
    def handle(self, request: Request) -> Reply: ...


class HttpServer:
    """Serves `handler` on host:port (127.0.0.1 and a free port by default) until `stop()`."""

    def __init__(self, handler: Handler, port: int = 0, host: str = "127.0.0.1") -> None:
        self.handler = handler
        stopping = threading.Event()
        self._stopping = stopping

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, BODY_BYTES_MAX)) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    urllib.parse.parse_qs(parts.query),
                    dict(self.headers.items()),
                    body,
                )
                try:
                    reply = handler.handle(request)
                except Exception as error:  # noqa: BLE001 - answer 500, as a real server would
                    reply = Reply(500, {"error": "INTERNAL", "error_description": repr(error)})
                if reply.delay_s and stopping.wait(reply.delay_s):
                    return
                data = reply.body_bytes()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.httpd = _Server((host, port), RequestHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def start(self) -> HttpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
