"""Fixtures for the Kafka intake tests: one Tansu broker and one PostgreSQL server per session (started
once: a group join alone takes seconds), and `ledger consume` processes stopped after each test."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# kafka-python loads its protocol schemas with a deprecated importlib call, hundreds of times.
DEPRECATED_SCHEMA_LOADING = "ignore:.*is deprecated. Use files:DeprecationWarning"
warnings.filterwarnings("ignore", ".*is deprecated. Use files", DeprecationWarning)

from kafka_harness import Broker, ConsumerFactory, ConsumerProcess  # noqa: E402 - after the filter
from support.postgres import EmbeddedPostgres  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", DEPRECATED_SCHEMA_LOADING)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = Broker(tmp_path_factory.mktemp("broker"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def kafka_postgres(postgres: EmbeddedPostgres) -> EmbeddedPostgres:
    """The session's one PostgreSQL server (tests/conftest.py)."""
    return postgres


def _factory(log_dir: Path) -> tuple[ConsumerFactory, list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    numbers = itertools.count(1)

    def start(
        env: dict[str, str], *, crashing: bool = False, name: str = "consumer", writer_process: bool = False
    ) -> ConsumerProcess:
        process = ConsumerProcess(
            f"{name}-{next(numbers)}", env, log_dir, crashing=crashing, writer_process=writer_process
        )
        started.append(process)
        return process

    return start, started


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[ConsumerFactory]:
    """Starts `ledger consume` processes for one test: `consumers(env, crashing=False)`;
    `writer_process=True`: each with its writer in a process of its own, as `ledger serve` runs it."""
    start, started = _factory(tmp_path)
    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="module")
def module_consumers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsumerFactory]:
    start, started = _factory(tmp_path_factory.mktemp("consumers"))
    try:
        yield start
    finally:
        for process in started:
            process.stop()
