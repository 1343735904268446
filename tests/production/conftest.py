"""Fixtures for the production configuration: one Tansu broker for the tier (its Kafka harness is
imported from tests/kafka, not copied), and the session's PostgreSQL server (tests/conftest.py), or
a SQLite file where a test takes `database_url` (both databases)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# kafka-python loads its protocol schemas with a deprecated importlib call, hundreds of times.
warnings.filterwarnings("ignore", ".*is deprecated. Use files", DeprecationWarning)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))  # where kafka_harness lives

from kafka_harness import Broker  # noqa: E402 - after the path and the filter


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "ignore:.*is deprecated. Use files:DeprecationWarning")


@pytest.fixture(scope="session")
def production_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A memory-only Tansu broker shared by the tier's tests (each makes its own topics)."""
    started = Broker(tmp_path_factory.mktemp("production-broker"))
    try:
        yield started
    finally:
        started.stop()
