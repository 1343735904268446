"""`ledger consume`'s own small HTTP endpoint: /healthz, /readyz (the consumer's state), /metrics.
It answers the Host names the API answers, by the API's rules (ledger.access.hosts: else a DNS
rebinding page could read /metrics), and with LEDGER_METRICS_AUTH=required /metrics takes a token
like the API's (CONTRACT §5)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from ledger.access.hosts import (
    LOOPBACK_NAMES,
    NOT_ALLOWED_DETAIL,
    PROBE_PATHS,
    host_allowed,
    host_lines_refusal,
)
from ledger.access.metrics import MetricsGuard
from ledger.http_problems import PROBLEM_MEDIA_TYPE, RETRY_AFTER_S, WWW_AUTHENTICATE
from ledger.telemetry import METRICS_MEDIA_TYPE

# A connection that sends no request, or reads no answer, for this long is closed: each holds a
# thread. At most OPS_CONNECTIONS_MAX are served at once; one more is closed unanswered.
OPS_SOCKET_TIMEOUT_S = 10.0
OPS_CONNECTIONS_MAX = 32

# Whether the consumer is ready, and what /readyz says with it: `not_ready_because` becomes a
# not-ready problem's detail.
ReadyReport = Callable[[], tuple[bool, dict[str, object]]]
# The members of RFC 9457 a problem answer sets itself; a detail of that name would hide one.
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
NOT_FOUND_DETAIL = "no such path: this endpoint serves /healthz, /readyz and /metrics"
GET_ONLY_DETAIL = "this endpoint takes GET and HEAD only (Allow)"


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, as many as `connections_max` at once."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], connections_max: int
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(connections_max)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class OpsServer:
    """Serves on a daemon thread until `stop()`."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyReport,
        metrics_guard: MetricsGuard | None = None,
        *,
        allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
    ) -> None:
        """`allowed_hosts`: as ledger.access.hosts.allowed_hosts reads LEDGER_ALLOWED_HOSTS (None: `*`)."""
        handler = _handler(registry, ready, metrics_guard, allowed_hosts)
        self.server = _BoundedServer((host, port), handler, OPS_CONNECTIONS_MAX)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="ledger-kafka-ops", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def _handler(
    registry: CollectorRegistry,
    ready: ReadyReport,
    metrics_guard: MetricsGuard | None,
    allowed: frozenset[str] | None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = OPS_SOCKET_TIMEOUT_S

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in PROBE_PATHS and (refused := self._host_refusal()) is not None:
                self._send_problem(400, "invalid-host", "Host not allowed", refused, path)
            elif (
                path == "/metrics"
                and metrics_guard is not None
                and (unauthenticated := metrics_guard(self.headers.get("Authorization"))) is not None
            ):
                self._send_problem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    unauthenticated,  # as the API says it
                    path,
                    {"WWW-Authenticate": WWW_AUTHENTICATE},
                )
            elif path == "/metrics":
                self._send(200, METRICS_MEDIA_TYPE, generate_latest(registry))
            elif path == "/healthz":
                self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
            elif path == "/readyz":
                is_ready, details = ready()
                if is_ready:
                    self._send(200, "application/json", json.dumps({"status": "ready", **details}).encode())
                else:
                    self._send_not_ready(details, path)
            else:
                self._send_problem(404, "not-found", "Not Found", NOT_FOUND_DETAIL, path)

        # A load balancer's probe may send HEAD: answered as GET is, without the body (RFC 9110).
        do_HEAD = do_GET

        def _host_refusal(self) -> str | None:
            """Why the request is refused for its Host lines, as the API's gate says it; None: answered."""
            hosts = self.headers.get_all("Host") or []
            version = self.request_version.removeprefix("HTTP/")
            if (lines_refused := host_lines_refusal(len(hosts), version)) is not None:
                return lines_refused
            # The library read the headers as Latin-1: encoded back, they are the bytes sent.
            if not host_allowed(allowed, hosts[0].encode("latin-1", "replace") if hosts else None):
                return NOT_ALLOWED_DETAIL
            return None

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """The server's own refusals (a method it has no handler for, a malformed request line,
            headers too long) as problem+json too, not the library's HTML page."""
            headers = {"Connection": "close"}  # as the library's: the request may not have been read
            status = HTTPStatus(code)
            self.log_error("code %d, message %s", status.value, message or status.phrase)
            if status == HTTPStatus.NOT_IMPLEMENTED:  # a method other than GET and HEAD
                headers["Allow"] = "GET, HEAD"
                path = self.path.split("?", 1)[0]
                self._send_problem(
                    405, "method-not-allowed", "Method Not Allowed", GET_ONLY_DETAIL, path, headers
                )
                return
            # Every other refusal is of a request the library could not read (400, 414, 431, 505): the
            # API's server answers those `invalid-request` too. The detail is the library's message
            # without the request's bytes it quotes ("Bad request syntax ('...')"): the sender has
            # them, and a request line may be 64 KiB.
            detail = (message or status.description).split(" (", 1)[0]
            self._send_problem(status.value, "invalid-request", status.phrase, detail, None, headers)

        def _send_not_ready(self, details: dict[str, object], path: str) -> None:
            """As `ledger serve`'s /readyz answers it (ledger/api/ops.py): a 503 problem `not-ready`
            whose detail says why, with Retry-After; the details follow as members of their own."""
            why = str(details.get("not_ready_because") or "not ready")
            extra = {name: value for name, value in details.items() if name not in PROBLEM_MEMBERS}
            self._send_problem(
                503, "not-ready", "Not ready", why, path, {"Retry-After": str(RETRY_AFTER_S)}, extra
            )

        def _send_problem(
            self,
            status: int,
            type_: str,
            title: str,
            detail: str,
            instance: str | None,
            headers: dict[str, str] | None = None,
            extra: dict[str, object] | None = None,
        ) -> None:
            """A problem with the members the API's have (ledger.api.problems.problem_response): the
            path as `instance` once it was read (None: it was not)."""
            problem: dict[str, object] = {"type": type_, "title": title, "status": status, "detail": detail}
            if instance:
                problem["instance"] = instance
            problem.update(extra or {})
            body = json.dumps(problem).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", PROBLEM_MEDIA_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would drown the log

    return Handler
