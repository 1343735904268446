"""`ledger consume` with its writer in a process of its own, as `ledger serve` runs the Kafka intake
(on SQLite, the one shape production has: one writer for the file, the intake reaching it over
the writer's socket). The writer process is this process's child, in its process group, so a kill -9
of the group takes both, as a kill -9 of `ledger serve` does.

LEDGER_WRITER_SOCKET names the socket (the harness picks one and removes it, and the lock file
beside it, after the process). Run as a script, or `consume()` from another (crashing_consume.py).
"""

from __future__ import annotations

import os
import sys

from ledger.bootstrap import build_writer_from_environment
from ledger.cli import main
from ledger.config import Settings
from ledger.writer.process import WriterSupervisor

# Set by the harness to run the writer beside the consumer; unset, `ledger consume` as it is.
WRITER_PROCESS_ENV = "LEDGER_TEST_WRITER_PROCESS"


def writer_beside() -> bool:
    return os.environ.get(WRITER_PROCESS_ENV) == "1"


def consume() -> int:
    """`ledger consume`, through a writer process started first when WRITER_PROCESS_ENV says so."""
    if not writer_beside():
        return main(["consume"])
    settings = Settings()
    assert settings.writer_socket, "LEDGER_WRITER_SOCKET names the writer's socket"
    os.environ.pop("LEDGER_WRITER_SOCKET")  # the writer itself writes, it does not connect (serve_cli.py)
    writer = WriterSupervisor(
        build_writer_from_environment, settings.writer_socket, settings.writer_client_outbox_bytes_max
    )
    os.environ["LEDGER_WRITER_SOCKET"] = settings.writer_socket  # the intake's ledger connects to it
    try:
        writer.wait_until_ready()
        return main(["consume"])
    finally:
        writer.stop()


if __name__ == "__main__":
    sys.exit(consume())
