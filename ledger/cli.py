"""The `ledger` command: serve, rebuild, and the tools around them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from adapters.cli import register as register_adapter_commands
from ledger.config import Settings
from ledger.kafka.cli import register as register_kafka_commands


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from ledger.api.app import create_asgi
    from ledger.bootstrap import build_ledger, intake_limits, tune_gc

    if args.host:
        settings.http_host = args.host
    if args.port:
        settings.http_port = args.port
    workers = args.workers or settings.http_workers
    writer = _start_writer_process(settings) if settings.writer_process else None
    logging.getLogger("ledger").info(
        "serving on http://%s:%d with %s (%d worker process%s, writer %s)",
        settings.http_host,
        settings.http_port,
        _redacted(settings.database_url),
        workers,
        "" if workers == 1 else "es",
        "in its own process" if writer else "as a thread",
    )
    common: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_level": args.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
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


def _start_writer_process(settings: Settings) -> Any:
    """Starts the writer process; this process and its workers reach it at LEDGER_WRITER_SOCKET."""
    from ledger.bootstrap import build_writer_from_environment
    from ledger.writer.process import WriterSupervisor, default_socket_path

    path = settings.writer_socket or default_socket_path()
    os.environ.pop("LEDGER_WRITER_SOCKET", None)  # the writer itself writes, it does not connect
    supervisor = WriterSupervisor(build_writer_from_environment, path, settings.writer_client_outbox_bytes_max)
    settings.writer_socket = path
    os.environ["LEDGER_WRITER_SOCKET"] = path
    return supervisor


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from ledger.storage.recorders import open_recorder
    from ledger.rebuild import rebuild

    recorder = open_recorder(settings.database_url, settings.db_pool_size, settings.db_lock_timeout_s)
    with tqdm(total=0, unit="event", desc="rebuilding projections", disable=args.quiet) as bar:

        def progress(position: int, head: int) -> None:
            bar.total = head
            bar.n = position
            bar.refresh()

        replayed = rebuild(recorder, progress)
    recorder.close()
    print(f"rebuilt every projection from {replayed} recorded events")
    return 0


def _redacted(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ledger", description="The stock ledger service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and the Kafka consumer when configured)")
    serve.add_argument("--host", help="overrides LEDGER_HTTP_HOST")
    serve.add_argument("--port", type=int, help="overrides LEDGER_HTTP_PORT")
    serve.add_argument("--workers", type=int, help="worker processes (overrides LEDGER_HTTP_WORKERS)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=_serve)
    rebuild = commands.add_parser("rebuild", help="rebuild every projection from the event log")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(handler=_rebuild)
    register_adapter_commands(commands)
    register_kafka_commands(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
