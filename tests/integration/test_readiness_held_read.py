"""A database that holds the readiness probe's read (a lock taken by a migration or by hand, a
stalled server) makes /readyz say "not ready" within READY_PROBE_TIMEOUT_S: it hung as long as the
read did, and each probe held one more thread of the pool every read of the API shares."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from support.postgres import EmbeddedPostgres

from ledger.service import READY_PROBE_TIMEOUT_S

PROBES = 8
ANSWER_S_MAX = READY_PROBE_TIMEOUT_S + 10.0  # the probe's wait and a slow machine's; held, it is 60 s


def test_a_held_read_is_not_ready_at_once_and_ready_again_once_let_go(
    postgres: EmbeddedPostgres, serve: Any
) -> None:
    database_url = postgres.create_database("readiness_held")
    server = serve(database_url)
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE")  # held until rollback
            time.sleep(0.3)  # a write landing now would have moved the head the probe reads
            answers: list[tuple[int, float, str]] = []

            def probe() -> None:
                started = time.monotonic()
                answer = client.get("/readyz", timeout=60)
                answers.append((answer.status_code, time.monotonic() - started, answer.text))

            probes = [threading.Thread(target=probe) for _ in range(PROBES)]
            for thread in probes:
                thread.start()
            for thread in probes:
                thread.join(60)
            assert client.get("/healthz", timeout=5).status_code == 200  # the worker itself answers
            holder.rollback()
        assert len(answers) == PROBES
        for status, took_s, text in answers:
            assert status == 503 and "did not answer a read" in text, text
            assert took_s < ANSWER_S_MAX, f"a probe took {took_s:.1f} s"
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready again after the lock was let go"
            time.sleep(0.2)
