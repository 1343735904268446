"""`ledger simulate` sends the model retailer's traffic to Kafka, or to the HTTP API, and sums it up."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_harness import REPO, Broker, TopicReader, free_port, stop_group, wait_until

DEADLINE_S = 90


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", "simulate", *args],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    env.update(extra)
    return env


def test_simulate_sends_every_record_to_kafka_keyed_by_store(broker: Broker) -> None:
    topic = "simulated"
    done = _run(
        [
            "--events",
            "800",
            "--stores",
            "4",
            "--create-topic",
            "--partitions",
            "2",
            "--quiet",
            "--run-id",
            "sim-k",
        ],
        _env(LEDGER_KAFKA_BOOTSTRAP=broker.bootstrap, LEDGER_KAFKA_TOPIC=topic),
    )
    assert done.returncode == 0, done.stderr
    assert "sent 800 records to kafka" in done.stdout
    assert "duplicates" in done.stdout and "junk" in done.stdout
    reader = TopicReader(broker.bootstrap, topic, 2)
    try:
        records = reader.read_until(lambda got: len(got) >= 800, DEADLINE_S, "800 records")
    finally:
        reader.close()
    assert len(records) == 800
    assert {record.key for record in records} <= {f"store-{n:03d}".encode() for n in range(1, 5)}


@pytest.fixture
def http_ledger(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = _env(LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}")
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, DEADLINE_S, "ledger serve")
        yield url
    finally:
        stop_group(server)


def test_simulate_posts_the_traffic_to_the_http_api_and_reports_the_outcomes(http_ledger: str) -> None:
    done = _run(
        [
            "--to",
            "http",
            "--url",
            http_ledger,
            "--events",
            "400",
            "--batch",
            "50",
            "--quiet",
            "--run-id",
            "sim-h",
        ],
        _env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent 400 records to {http_ledger}/v1/events" in done.stdout
    answered = next(line for line in done.stdout.splitlines() if "ledger answered" in line)
    assert "accepted" in answered
