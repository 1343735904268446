"""A database that holds the API's reads (a lock taken by hand or by a migration, a stalled
server) answers them 503 within LEDGER_REQUEST_TIMEOUT_S: a read waited as long as the database
did, each holding one of the threads every read of the worker shares, so that a few held reads
left every other read waiting for a thread, with no answer at all."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from support.postgres import EmbeddedPostgres

REQUEST_TIMEOUT_S = 3
READS = 6
HELD_S = 45.0  # how long the lock is held: a read that waits for it answers after this
ANSWER_S_MAX = REQUEST_TIMEOUT_S + 15.0  # the bound and a slow machine's


def test_a_held_read_answers_503_within_the_request_timeout_and_reads_again_once_let_go(
    postgres: EmbeddedPostgres, serve: Any
) -> None:
    database_url = postgres.create_database("reads_held")
    server = serve(database_url, {"LEDGER_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)})
    history = "/v1/stores/store-1/history"
    explain = "/v1/stores/store-1/stock/SKU-1/explain"  # its reads agree in one snapshot
    with server.client() as client:
        assert client.get(history).status_code == 200
        assert client.get(explain).status_code == 200
        answers: list[tuple[int, float, str, str]] = []
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE ledger_history IN ACCESS EXCLUSIVE MODE")  # held until rollback

            def read(path: str) -> None:
                started = time.monotonic()
                answer = client.get(path, timeout=HELD_S + 30)
                took_s = time.monotonic() - started
                content_type = answer.headers.get("content-type", "")
                answers.append((answer.status_code, took_s, content_type, answer.text))

            began = time.monotonic()
            paths = [history, explain] * (READS // 2)
            readers = [threading.Thread(target=read, args=(path,)) for path in paths]
            for thread in readers:
                thread.start()
            for thread in readers:  # held for at most HELD_S in all
                thread.join(max(began + HELD_S - time.monotonic(), 0))
            holder.rollback()
        for thread in readers:
            thread.join(30)
        assert len(answers) == READS
        for status, took_s, content_type, text in answers:
            assert took_s < ANSWER_S_MAX, f"a read took {took_s:.1f} s"
            assert status == 503 and content_type == "application/problem+json", (status, text)
        deadline = time.monotonic() + 30
        while client.get(history).status_code != 200 or client.get(explain).status_code != 200:
            assert time.monotonic() < deadline, "no read answered after the lock was let go"
            time.sleep(0.2)


def test_the_consoles_adapter_page_held_by_a_lock_answers_503_within_the_request_timeout(
    postgres: EmbeddedPostgres, serve: Any
) -> None:
    """The page's plug-ins read with connections of their own, bounded by the same timeout."""
    from adapters.db import open_database

    database_url = postgres.create_database("adapters_page_held")
    open_database(database_url, 2, 30).close()  # the adapters' tables, as `ledger adapters` makes them
    server = serve(database_url, {"LEDGER_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)})
    with server.client() as client:
        assert client.get("/ui/adapters").status_code == 200
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE adapter_positions IN ACCESS EXCLUSIVE MODE")
            answered: list[Any] = []
            reader = threading.Thread(
                target=lambda: answered.append(client.get("/ui/adapters", timeout=HELD_S + 30))
            )
            began = time.monotonic()
            reader.start()
            reader.join(HELD_S)
            holder.rollback()
        reader.join(30)
        took_s = time.monotonic() - began
        assert answered and took_s < ANSWER_S_MAX, f"the page took {took_s:.1f} s"
        assert answered[0].status_code == 503, answered[0].text
        assert answered[0].headers["content-type"] == "application/problem+json"
