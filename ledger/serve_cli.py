"""`ledger serve`: the checks before a start (the address, access control), the writer process,
and the HTTP server with its workers."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from typing import Any

from ledger.cli_errors import CommandError, database_url_checked, int_from, redacted_url
from ledger.config import HTTP_WORKERS_MAX, PORT_MAX, Settings
from ledger.telemetry.logs import logging_config
from ledger.telemetry.tracing import check_tracing


def _default(name: str) -> object:
    return Settings.model_fields[name].default


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Adds the subcommand, with its `handler` default."""
    serve = commands.add_parser("serve", help="run the HTTP API (and the Kafka consumer when configured)")
    serve.add_argument("--host", help=f"overrides LEDGER_HTTP_HOST (default: {_default('http_host')})")
    serve.add_argument(
        "--port",
        type=int_from(1, PORT_MAX),
        help=f"overrides LEDGER_HTTP_PORT (default: {_default('http_port')})",
    )
    serve.add_argument(
        "--workers",
        type=int_from(1, HTTP_WORKERS_MAX),
        help=f"worker processes; overrides LEDGER_HTTP_WORKERS (default: {_default('http_workers')})",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.writer.process import WriterStartFailed

    if args.host:
        settings.http_host = args.host
    if args.port:
        settings.http_port = args.port
    workers = args.workers or settings.http_workers
    check_tracing(settings.tracing)
    _check_listening(settings.http_host, settings.http_port, workers)
    _check_access(settings)
    if settings.kafka_bootstrap:
        from ledger.kafka.cli import check_codecs

        check_codecs()
    writer = _start_writer_process(settings) if settings.writer_process else None
    # Imported while the writer process starts: each side takes about a second to import, on its own core.
    import uvicorn

    from ledger.api.app import create_asgi
    from ledger.api.connections import uvicorn_options
    from ledger.bootstrap import build_ledger, intake_limits, tune_gc

    try:
        if writer is not None:
            writer.wait_until_ready()
    except WriterStartFailed as error:
        raise CommandError(str(error)) from None
    logging.getLogger("ledger").info(
        "serving on http://%s:%d with %s (%d worker process%s, writer %s)",
        settings.http_host,
        settings.http_port,
        redacted_url(settings.database_url),
        workers,
        "" if workers == 1 else "es",
        "in its own process" if writer else "as a thread",
    )
    common: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_level": args.log_level,
        "access_log": False,  # the service's own (LEDGER_ACCESS_LOG) names the request id and principal
        # Every worker process applies the same logging configuration as this one.
        "log_config": logging_config(settings.log_format, settings.kafka_log_level),
        "timeout_graceful_shutdown": 10,
        **uvicorn_options(settings),  # idle, slow-header and slow-body deadlines, connections at once
    }
    if writer is not None:
        signal.signal(signal.SIGTERM, _exit_after_sigterm)
    try:
        if workers > 1:
            # Each worker reaches the one writer process (or, without it, is a full instance with its
            # own writer, like several hosts would be); settings reach them through the environment.
            os.environ["LEDGER_HTTP_HOST"] = settings.http_host
            os.environ["LEDGER_HTTP_PORT"] = str(settings.http_port)
            uvicorn.run("ledger.api.asgi:create", factory=True, workers=workers, **common)
            return 0
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        tune_gc()
        if writer is not None:
            os.nice(settings.http_nice)
        ledger = build_ledger(settings)
        uvicorn.run(create_asgi(ledger, settings, intake_limits(settings)), **common)
    finally:
        if writer is not None:
            writer.stop()
    return 0


def _exit_after_sigterm(*_: object) -> None:
    """Uvicorn shuts down on SIGTERM and then raises it again; by default that would end this
    process there, before it stops the writer process, which must stop last (serve's `finally`)."""
    raise SystemExit(0)


def _check_listening(host: str, port: int, workers: int) -> None:
    """That the address can be listened on (free, allowed), told in one line before anything
    starts: else the writer process would start, the start be logged as done, and the HTTP server
    fail after it with uvicorn's lines and exit 3. Bound as the server will bind it, then released
    for it (SO_REUSEADDR, as both set it):
    - one worker: asyncio's `create_server`: every address the host resolves to (all interfaces
      for an empty host), a family the system lacks skipped, IPv6 sockets IPv6 only;
    - several: uvicorn's own one socket, IPv6 (dual stack) when the host holds a colon."""
    try:
        if workers > 1:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sockets: list[tuple[Any, Any]] = [(family, (host, port))]
        else:
            found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            sockets = [(info[0], info[4]) for info in found]
        for family, address in sockets:
            try:
                probe = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                if workers == 1:
                    continue  # as asyncio does: a family this system cannot make sockets of
                raise
            with probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and workers == 1:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(address)
                except OSError as error:
                    if workers == 1 and error.errno == errno.EADDRNOTAVAIL:
                        continue  # as asyncio does: that family is not enabled here
                    raise
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    except UnicodeError:  # a label empty or over 63 characters (IDNA): neither a name nor an address
        raise CommandError(f"cannot listen on {host!r}: not a host name or an address") from None


def _check_access(settings: Settings) -> None:
    """CONTRACT §5 at start: with no token and LEDGER_AUTH unset the service is open, says so, and
    listens on loopback only (unless LEDGER_AUTH=off)."""
    from ledger.access.hosts import is_loopback
    from ledger.access.store import tokens_exist
    from ledger.storage.opening import open_recorder

    with database_url_checked():
        recorder = open_recorder(
            settings.database_url,
            2,
            settings.db_lock_timeout_s,
            migration_wait_s=settings.migration_wait_s,
            deadlock_timeout_ms=settings.db_deadlock_timeout_ms,
        )
    try:
        with recorder.read_transaction() as tx:
            closed = settings.auth == "required" or tokens_exist(tx)
    finally:
        recorder.close()
    log = logging.getLogger("ledger")
    host = settings.http_host
    if not closed and not is_loopback(host) and settings.auth != "off":
        raise CommandError(
            f"refusing to listen on {host} while the service is open (no token exists and LEDGER_AUTH "
            "is unset): create one with `ledger tokens create --name NAME --role admin`, or set "
            "LEDGER_AUTH=off to serve without access control"
        )
    if not closed:
        log.warning(
            "the service is OPEN: no token exists, so whoever reaches %s:%d may read and record "
            "anything; `ledger tokens create` turns access control on (README, Access control)",
            host,
            settings.http_port,
        )
    elif settings.auth == "off":
        log.warning("LEDGER_AUTH=off is ignored: tokens exist, so every request needs one")
    if not is_loopback(host) and settings.allowed_hosts is None:
        log.warning(
            "listening on %s, but only requests for localhost, 127.0.0.1 or [::1] are answered: set "
            "LEDGER_ALLOWED_HOSTS to the names clients reach this service by (or *)",
            host,
        )
    # Told once the start cannot be refused any more: a refusal stays one line on stderr. A new
    # ledger's schema in one line: its every step, contract steps among them, would read as
    # changes to data it never had.
    applied = recorder.migrations_applied
    if applied and applied[0].version == 1:
        log.info(
            "a new ledger: its schema made, at version %d (`ledger migrate --check` lists the steps)",
            applied[-1].version,
        )
        applied = ()
    for migration in applied:
        log.info("schema migration %d (%s) applied: %s", migration.version, migration.kind, migration.name)


def _start_writer_process(settings: Settings) -> Any:
    """Launches the writer process (its supervisor's `wait_until_ready` waits for it); this process
    and its workers reach it at LEDGER_WRITER_SOCKET."""
    from ledger.bootstrap import build_writer_from_environment
    from ledger.writer.leadership import parse_peer_address
    from ledger.writer.process import Peering, WriterSupervisor, default_socket_path

    path = settings.writer_socket or default_socket_path()
    os.environ.pop("LEDGER_WRITER_SOCKET", None)  # the writer itself writes, it does not connect
    peering = None
    if settings.writer_peer_address is not None:
        assert settings.writer_peer_secret is not None  # Settings requires it with the address
        peering = Peering(
            settings.database_url,
            *parse_peer_address(settings.writer_peer_address),
            secret=settings.writer_peer_secret.get_secret_value(),
        )
    supervisor = WriterSupervisor(
        build_writer_from_environment, path, settings.writer_client_outbox_bytes_max, peering=peering
    )
    settings.writer_socket = path
    os.environ["LEDGER_WRITER_SOCKET"] = path
    return supervisor
