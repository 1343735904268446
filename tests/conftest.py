"""Fixtures shared by the test tiers: databases (SQLite, embedded PostgreSQL) and `ledger serve` processes."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from support.postgres import EmbeddedPostgres
from support.server import LedgerServer

DATABASE_KINDS = ("sqlite", "postgres")
ServerFactory = Callable[..., LedgerServer]
# The suite runs on three workers, a test file at a time each (pyproject.toml: -n 3 --dist loadfile),
# handed out in the order collected. Files that take longest go first, so that the quick unit tests
# fill the end and the workers finish together: a file with a `slow` test, then by tier.
TIERS_LONGEST_FIRST = ("production", "kafka", "browser", "integration", "adapters", "e2e", "deployment")


def _tier_rank(path: Path) -> int:
    tier = path.parent.name
    return TIERS_LONGEST_FIRST.index(tier) if tier in TIERS_LONGEST_FIRST else len(TIERS_LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    # A stable sort: each file's tests stay together, in their order.
    items.sort(key=lambda item: (item.path not in slow_files, _tier_rank(item.path)))


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL server for the whole session, started on first use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        server = EmbeddedPostgres()
    try:
        yield server
    finally:
        server.stop()


def _new_database(kind: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{directory / 'ledger.db'}"
    pg: EmbeddedPostgres = request.getfixturevalue("postgres")
    return pg.create_database()


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database for one test: a SQLite file, or a new PostgreSQL database."""
    return _new_database(request.param, request, tmp_path)


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database shared by one module's tests (they keep apart by store ids)."""
    return _new_database(request.param, request, tmp_path_factory.mktemp("db"))


def _factory(log_dir: Path) -> tuple[ServerFactory, list[LedgerServer]]:
    started: list[LedgerServer] = []
    names = itertools.count(1)

    def serve(database_url: str, env: Mapping[str, str] | None = None) -> LedgerServer:
        server = LedgerServer(database_url, log_dir, env, name=f"ledger-{next(names)}")
        started.append(server)
        return server.start()

    return serve, started


def _stop_all(servers: list[LedgerServer]) -> None:
    for server in servers:
        server.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Starts `ledger serve` processes for one test (`serve(url, env)`); all are stopped afterwards."""
    factory, started = _factory(tmp_path)
    try:
        yield factory
    finally:
        _stop_all(started)


@pytest.fixture(scope="module")
def module_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like `serve`, for servers one module's tests share."""
    factory, started = _factory(tmp_path_factory.mktemp("servers"))
    try:
        yield factory
    finally:
        _stop_all(started)
