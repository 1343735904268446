"""Instances that share a PostgreSQL database and their writers' peer address: one writer leads and
records for all; the others relay to it (ledger/writer/leadership.py, relay.py). Every guarantee
of two instances without peers holds: no oversell between them, nothing acknowledged lost when
the leader is killed, and another instance leads then by itself. A peer that does not show the
leader's token is refused before anything of it is read."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from typing import Any

import httpx
import psycopg
import pytest
from support import events as ev
from support.api import level, post_events, record, reserve
from support.postgres import EmbeddedPostgres
from support.server import LedgerServer, free_port, run_ledger_command

from ledger.writer.leadership import LEADER_LOCK_KEY
from ledger.writer.process import default_socket_path
from ledger.writer.server import PEER_HELLO_WAIT_S
from ledger.writer.wire import FRAME, PEER_HELLO, PEER_WELCOME, Subscribe, encode, encode_peer_hello

TAKE_OVER_DEADLINE_S = 60.0
STORE = "peers"


@pytest.fixture
def pg_url(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database()


def _peers(serve: Any, database_url: str, count: int) -> list[tuple[LedgerServer, int]]:
    instances = []
    for _ in range(count):
        port = free_port()
        instances.append((serve(database_url, {"LEDGER_WRITER_PEER_ADDRESS": f"127.0.0.1:{port}"}), port))
    return instances


def _leader_row(database_url: str) -> tuple[str, int, str] | None:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT host, port, token FROM ledger_writer_leader").fetchone()
    return None if row is None else (row[0], row[1], row[2])


def test_the_first_instance_leads_and_the_second_relays_to_it_with_no_oversell(pg_url: str, serve) -> None:
    (first, first_port), (second, _) = _peers(serve, pg_url, 2)
    leader = _leader_row(pg_url)
    assert leader is not None and leader[:2] == ("127.0.0.1", first_port)
    assert f"relaying to it at 127.0.0.1:{first_port}" in second.log_tail(20_000)

    with first.client() as a, second.client() as b:
        record(a, ev.receipt(STORE, ("SKU-1", 30)))
        # One write through each instance, then read on the other: both writes reached one log.
        record(b, ev.receipt(STORE, ("SKU-2", 5)))
        assert level(b, STORE, "SKU-1", min_position=1)["on_hand"] == 30

        def take(job: tuple[httpx.Client, int]) -> int:
            client, number = job
            return reserve(client, STORE, f"r-{number}", ("SKU-1", 1)).status_code

        jobs = [(a if number % 2 else b, number) for number in range(60)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(take, jobs))
        assert statuses.count(201) == 30, statuses
        assert set(statuses) == {201, 409}, statuses
        for client in (a, b):
            answer = level(client, STORE, "SKU-1")
            assert (answer["on_hand"], answer["reserved"], answer["available"]) == (30, 30, 0)
    assert "recording" not in first.log_tail(50_000) + second.log_tail(50_000)


def test_when_the_leader_is_killed_another_instance_leads_and_nothing_acknowledged_is_lost(
    pg_url: str, serve
) -> None:
    (first, _), (second, second_port) = _peers(serve, pg_url, 2)
    acknowledged: list[dict[str, Any]] = []
    with second.client(timeout_s=10.0) as b:
        for number in range(20):
            envelope = ev.receipt(STORE, (f"SKU-{number}", 1))
            record(b, envelope)
            acknowledged.append(envelope)
        first.kill()
        deadline = time.monotonic() + TAKE_OVER_DEADLINE_S
        statuses = []
        while time.monotonic() < deadline:
            envelope = ev.receipt(STORE, ("SKU-after", 1))
            response = b.post("/v1/events", json=envelope)
            statuses.append(response.status_code)
            if response.status_code == 200 and response.json()["results"][0]["outcome"] == "accepted":
                acknowledged.append(envelope)
                break
            # Meanwhile the relay is down: the answer is 503 with Retry-After, never a 500.
            assert response.status_code == 503, response.text
            assert response.headers.get("Retry-After"), response.headers
            time.sleep(0.2)
        else:
            raise AssertionError(
                f"nobody led within {TAKE_OVER_DEADLINE_S} s: {statuses}\n{second.log_tail()}"
            )
        assert _leader_row(pg_url)[1] == second_port  # type: ignore[index]
        # Every acknowledged event is there once: sent again, each is a duplicate.
        results = post_events(b, *acknowledged)
        assert [result["outcome"] for result in results] == ["duplicate"] * len(acknowledged)
        assert level(b, STORE, "SKU-after")["on_hand"] == 1


def test_a_peer_that_does_not_show_the_token_is_refused_and_the_leader_goes_on(pg_url: str, serve) -> None:
    ((first, port),) = _peers(serve, pg_url, 1)
    host, _, token = _leader_row(pg_url)  # type: ignore[misc]
    with socket.create_connection((host, port), timeout=5) as wrong:
        wrong.sendall(encode_peer_hello("x" * len(token)))
        assert wrong.recv(1024) == b""  # closed, with nothing said
    with socket.create_connection((host, port), timeout=5) as oversized:
        oversized.sendall(FRAME.pack(1 << 30) + PEER_HELLO)  # a length it must not wait to read
        assert oversized.recv(1024) == b""
    with socket.create_connection((host, port), timeout=PEER_HELLO_WAIT_S + 10) as silent:
        assert silent.recv(1024) == b""  # let go: it said nothing within PEER_HELLO_WAIT_S
    with socket.create_connection((host, port), timeout=5) as right:
        right.sendall(encode_peer_hello(token))
        assert right.recv(len(PEER_WELCOME)) == PEER_WELCOME
    with first.client() as a:
        record(a, ev.receipt(STORE, ("SKU-1", 1)))


def test_a_client_of_a_relay_that_never_reads_is_cut_off_and_the_writes_go_on(pg_url: str, serve) -> None:
    small = {"LEDGER_WRITER_CLIENT_OUTBOX_BYTES_MAX": str(64 * 1024)}
    leader = serve(pg_url, {"LEDGER_WRITER_PEER_ADDRESS": f"127.0.0.1:{free_port()}", **small})
    relaying = serve(pg_url, {"LEDGER_WRITER_PEER_ADDRESS": f"127.0.0.1:{free_port()}", **small})
    assert relaying.process is not None
    sleeper = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sleeper.connect(default_socket_path(relaying.process.pid))
    sleeper.sendall(encode(Subscribe()))  # every commit is relayed to it; it never reads one
    try:
        with leader.client(timeout_s=20.0) as a, relaying.client(timeout_s=20.0) as b:
            # Some 3 MB of commits, far past what the sockets between buffer (a few hundred KB).
            for batch in range(40):
                skus = [(f"SKU-{batch}-{n}", 1) for n in range(400)]
                record(a, ev.receipt(STORE, *skus[:200]))
                record(b, ev.receipt(STORE, *skus[200:]))
        assert "has not read" in relaying.log_tail(50_000), relaying.log_tail()
        sleeper.settimeout(20.0)
        while sleeper.recv(1 << 20):
            pass  # what was relayed before the cut, then the end: the relay closed its side
    finally:
        sleeper.close()


def _lead_holder(database_url: str) -> int | None:
    """The pid of the session that holds the writers' leader lock, if any."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            (LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def test_a_leader_whose_session_is_cut_takes_its_lead_again(pg_url: str, serve) -> None:
    ((first, _),) = _peers(serve, pg_url, 1)
    token = _leader_row(pg_url)[2]  # type: ignore[index]
    holder = _lead_holder(pg_url)
    assert holder is not None
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(%s)", (holder,))
    deadline = time.monotonic() + TAKE_OVER_DEADLINE_S
    while (again := _lead_holder(pg_url)) in (None, holder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert again not in (None, holder), first.log_tail()
    assert _leader_row(pg_url)[2] == token  # type: ignore[index]  # the same leader, its relays unchanged
    assert "taken again" in first.log_tail(20_000)
    with first.client() as a:
        record(a, ev.receipt(STORE, ("SKU-1", 1)))


def test_a_peer_address_without_postgresql_is_one_line_and_exit_2(tmp_path) -> None:
    done = run_ledger_command(
        f"sqlite:///{tmp_path / 'ledger.db'}", "serve", env={"LEDGER_WRITER_PEER_ADDRESS": "127.0.0.1:7071"}
    )
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "LEDGER_WRITER_PEER_ADDRESS needs a PostgreSQL" in done.stderr
