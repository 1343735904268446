"""Signals to the whole process group (Ctrl+C, systemd's SIGTERM to the control group,
`kill -- -PGID`) reach the writer process too. The serving process decides when the writer stops,
last: a writer that stopped on them would leave the HTTP workers and the Kafka intake, still
finishing what they had in hand, with nothing to record it through, and the supervisor would
start a new writer in the middle of the shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from support import events as ev
from support.postgres import EmbeddedPostgres

from production.service import ProductionService

REQUEST_TIMEOUT_S = 10.0
WRITES_AFTER_SIGNAL = 20
SUPERVISOR_CHECKS = 4  # the supervisor looks every 0.5 s; writes go on over several of its checks


def test_the_writer_process_keeps_serving_through_signals_meant_for_the_group_and_stops_last(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    service = ProductionService(postgres.create_database(), tmp_path, request_timeout_s=REQUEST_TIMEOUT_S)
    service.start()
    try:
        writer = service.writer_process()
        with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S * 2) as client:
            assert client.post("/v1/events", json=ev.receipt("s1", ("SKU-1", 1))).status_code == 200
            for sent in (signal.SIGTERM, signal.SIGINT):
                writer.send_signal(sent)
                for _ in range(WRITES_AFTER_SIGNAL):
                    answer = client.post("/v1/events", json=ev.receipt("s1", ("SKU-1", 1)))
                    assert answer.status_code == 200, (sent, answer.status_code, answer.text)
                assert service.writer_process().pid == writer.pid, f"the writer stopped on {sent!r}"
            level = client.get("/v1/stores/s1/stock/SKU-1").json()
        assert level["on_hand"] == 1 + 2 * WRITES_AFTER_SIGNAL
    finally:
        exit_code = service.stop()
    assert exit_code == 0, service.log()[-3000:]
    assert "writer process exited" not in service.log(), service.log()[-3000:]
    assert not writer.is_running(), "the writer outlived the service"


def test_a_sigterm_to_the_group_stops_a_one_worker_service_with_its_writer_last(database_url, serve) -> None:
    """With one HTTP worker, uvicorn raises the SIGTERM again once it has shut down: the serving
    process must still stop the writer itself, rather than die and leave it to notice."""
    server = serve(database_url)
    with server.client() as client:
        assert client.post("/v1/events", json=ev.receipt("s1", ("SKU-1", 1))).status_code == 200
    assert server.stop() == 0, server.log_tail()
    log = server.log_tail()
    assert "writer in its own process" in log
    assert "the serving process is gone" not in log, log
    assert "writer process exited" not in log, log
