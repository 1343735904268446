"""Instances that share a PostgreSQL database, their writers' peer address and secret: one writer
leads and records for all; the others relay to it (ledger/writer/leadership.py, relay.py). Every
guarantee of instances without peers holds: no oversell between them, nothing acknowledged lost
when the leader is killed under load, and then another instance leads by itself and the third
relays to it. Neither side of a link reads anything of the other before it has proved that it
shares the secret (peer_link.py)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import selectors
import socket
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest
from support import events as ev
from support.api import level, post_events, record, reserve
from support.postgres import EmbeddedPostgres
from support.server import LedgerServer, free_port, run_ledger_command

from ledger.writer import peer_link
from ledger.writer.leadership import LEADER_LOCK_KEY, Leader
from ledger.writer.process import default_socket_path
from ledger.writer.relay import LeaderUnreachable, Relay, _End, connect_to_leader
from ledger.writer.server import PEER_HANDSHAKE_S_MAX
from ledger.writer.wire import (
    FRAME,
    FrameReader,
    Identify,
    Identity,
    Replies,
    Subscribe,
    WriteRequest,
    decode_from_writer,
    encode,
)

TAKE_OVER_DEADLINE_S = 60.0
STORE = "peers"
RESEND_ARRAY_MAX = 500  # events per array when the acknowledged ones are sent again (the API takes 1,000)
SECRET = "a-secret-the-test-instances-share"


@pytest.fixture
def pg_url(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database()


def _peer_env(**extra: str) -> dict[str, str]:
    return {
        "LEDGER_WRITER_PEER_ADDRESS": f"127.0.0.1:{free_port()}",
        "LEDGER_WRITER_PEER_SECRET": SECRET,
        **extra,
    }


def _peers(serve: Any, database_url: str, count: int) -> list[LedgerServer]:
    return [serve(database_url, _peer_env()) for _ in range(count)]


def _port(server: LedgerServer) -> int:
    return int(server.extra_env["LEDGER_WRITER_PEER_ADDRESS"].rpartition(":")[2])


def _leader(database_url: str) -> Leader | None:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT host, port, leader_id, pid FROM ledger_writer_leader").fetchone()
    return None if row is None else Leader(*row)


def _logs_in_time(server: LedgerServer, text: str) -> bool:
    """A line logged by another process may land a moment after what it reports is seen."""
    deadline = time.monotonic() + 10
    while text not in server.log_tail(50_000):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _writer_events(server: LedgerServer) -> int:
    """The events the writer batched, as this instance's /metrics has them from the writer it reaches
    (the writer process sends its figures every second, so they may be a second old)."""
    with server.client() as client:
        found = re.search(r"^ledger_writer_batch_events_sum (\S+)", client.get("/metrics").text, re.M)
    return int(float(found.group(1))) if found else -1


def test_the_first_instance_leads_and_the_second_relays_to_it_with_no_oversell(pg_url: str, serve) -> None:
    first, second = _peers(serve, pg_url, 2)
    leader = _leader(pg_url)
    assert leader is not None and (leader.host, leader.port) == ("127.0.0.1", _port(first))
    assert f"relaying to it at 127.0.0.1:{_port(first)}" in second.log_tail(20_000)

    with first.client() as a, second.client() as b:
        record(a, ev.receipt(STORE, ("SKU-1", 30)))
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
    # One writer recorded both instances' writes: the second instance's workers hear the figures
    # of the first's writer (their own writer process only relays, and has no figures).
    # Both report the same figure, and it covers the 32 events recorded (2 receipts, 30 reservations);
    # equal but older figures are a report still on its way.
    deadline = time.monotonic() + 10
    while (events := (_writer_events(first), _writer_events(second)))[0] != events[1] or events[0] < 32:
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert "recording" not in first.log_tail(50_000) + second.log_tail(50_000)


def test_when_the_leader_is_killed_under_load_another_leads_the_third_relays_and_nothing_is_lost(
    pg_url: str, serve
) -> None:
    first, second, third = _peers(serve, pg_url, 3)
    acknowledged: dict[str, list[dict[str, Any]]] = {"b": [], "c": []}
    statuses: list[int] = []
    without_retry_after: list[str] = []
    stop = threading.Event()

    def write_through(server: LedgerServer, name: str) -> None:
        with server.client(timeout_s=10.0) as client:
            number = 0
            while not stop.is_set():
                number += 1
                envelope = ev.receipt(STORE, (f"SKU-{name}-{number % 50}", 1))
                try:
                    response = client.post("/v1/events", json=envelope)
                except httpx.TransportError:
                    continue
                statuses.append(response.status_code)
                if response.status_code == 503 and not response.headers.get("Retry-After"):
                    without_retry_after.append(response.text)
                if response.status_code == 200 and response.json()["results"][0]["outcome"] == "accepted":
                    acknowledged[name].append(envelope)
                elif response.status_code != 200:
                    time.sleep(0.05)

    def recorded_through_both_since(before: dict[str, int]) -> bool:
        return all(len(acknowledged[name]) >= before[name] + 20 for name in acknowledged)

    writers = [threading.Thread(target=write_through, args=(s, n)) for s, n in ((second, "b"), (third, "c"))]
    for thread in writers:
        thread.start()
    try:
        time.sleep(2)  # under way
        before = {name: len(events) for name, events in acknowledged.items()}
        first.kill()
        # Both survivors write again: the one that leads now, and the one that relays to it (which
        # may take a few seconds longer, retrying while the dead leader is still published).
        deadline = time.monotonic() + TAKE_OVER_DEADLINE_S
        while not recorded_through_both_since(before) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in writers:
            thread.join(30)
    assert recorded_through_both_since(before), (
        f"{before} {[len(events) for events in acknowledged.values()]} {statuses[-20:]}\n"
        f"{second.log_tail()}\n{third.log_tail()}"
    )
    # While nobody led, writes were told to come back (503), never failed (500).
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert not without_retry_after, without_retry_after[:3]  # a 503 says when to come back
    leader = _leader(pg_url)
    assert leader is not None and leader.port in (_port(second), _port(third))
    relaying = third if leader.port == _port(second) else second
    assert _logs_in_time(relaying, f"relaying to it at 127.0.0.1:{leader.port}"), relaying.log_tail()
    with second.client() as b:
        # Every acknowledged event is there once: sent again, each is a duplicate (in arrays of at
        # most the API's 1,000: a fast run acknowledges more than that).
        every = acknowledged["b"] + acknowledged["c"]
        results = [
            result
            for start in range(0, len(every), RESEND_ARRAY_MAX)
            for result in post_events(b, *every[start : start + RESEND_ARRAY_MAX])
        ]
        assert [result["outcome"] for result in results] == ["duplicate"] * len(every)


def _fake_leader_answering(answer: bytes) -> tuple[socket.socket, Leader]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(1024)  # the hello
            connection.sendall(answer)
            connection.recv(1024)

    threading.Thread(target=serve_once, daemon=True).start()
    return listener, Leader("127.0.0.1", port, "fake", 0)


def test_both_sides_of_a_link_prove_they_share_the_secret_before_anything_else(pg_url: str, serve) -> None:
    (first,) = _peers(serve, pg_url, 1)
    leader = _leader(pg_url)
    assert leader is not None
    with pytest.raises(LeaderUnreachable):  # the leader lets a relay with another secret go
        connect_to_leader(leader, b"not-the-secret-of-these-peers")
    # A "leader" that does not know the secret is found out before a byte of it is unpickled.
    for answer in (
        peer_link.welcome(b"not-the-secret-of-these-peers", b"0" * 32, b"1" * 32),
        FRAME.pack(1 << 30),  # a length the relay must not wait to read
    ):
        listener, fake = _fake_leader_answering(answer)
        with listener, pytest.raises(LeaderUnreachable):
            connect_to_leader(fake, SECRET.encode(), timeout_s=5)
    with socket.create_connection((leader.host, leader.port), timeout=5) as oversized:
        oversized.sendall(FRAME.pack(1 << 30) + b"x" * 64)
        assert oversized.recv(1024) == b""  # let go at once, its length refused unread
    with socket.create_connection((leader.host, leader.port), timeout=PEER_HANDSHAKE_S_MAX + 10) as silent:
        assert silent.recv(1024) == b""  # let go: it did not prove itself in PEER_HANDSHAKE_S_MAX
    # A hello that arrives a byte at a time is read whole; a relay that proved itself is served.
    relay_nonce = peer_link.new_nonce()
    with socket.create_connection((leader.host, leader.port), timeout=10) as link:
        for byte in peer_link.hello(relay_nonce):
            link.sendall(bytes([byte]))
        buffer = bytearray()
        while (body := peer_link.cut_frame(buffer)) is None:
            buffer += link.recv(1024)
        leader_nonce = peer_link.leader_nonce_of(body, SECRET.encode(), relay_nonce)
        link.sendall(
            peer_link.proof(SECRET.encode(), relay_nonce, leader_nonce)
            + encode(WriteRequest(7, [ev.stock_event("linked-1", "stock.receipt", STORE, [("SKU-L", 2)])]))
        )
        frames = FrameReader()
        replies: list[Any] = []
        while not replies:
            replies = [
                m
                for body in frames.feed(link.recv(1 << 16))
                if isinstance(m := decode_from_writer(body), Replies)
            ]
        (reply,) = replies[0].replies
        assert reply.request_id == 7 and reply.results is not None
        assert reply.results[0].outcome.value == "accepted"
    with first.client() as a:
        assert level(a, STORE, "SKU-L", min_position=1)["on_hand"] == 2


def test_a_client_of_a_relay_that_never_reads_is_cut_off_and_the_writes_go_on(pg_url: str, serve) -> None:
    small = str(64 * 1024)
    leader = serve(pg_url, _peer_env(LEDGER_WRITER_CLIENT_OUTBOX_BYTES_MAX=small))
    relaying = serve(pg_url, _peer_env(LEDGER_WRITER_CLIENT_OUTBOX_BYTES_MAX=small))
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
        assert _logs_in_time(relaying, "has not read"), relaying.log_tail()
        sleeper.settimeout(20.0)
        while sleeper.recv(1 << 20):
            pass  # what was relayed before the cut, then the end: the relay closed its side
    finally:
        sleeper.close()


def test_a_client_of_a_relay_that_reads_is_kept_though_one_frame_is_over_the_limit() -> None:
    """The leader's commit of a batch of a million levels is one frame of tens of megabytes: the
    relay read it faster than its HTTP worker took it, and cut the worker off (its callers answered
    503) past LEDGER_WRITER_CLIENT_OUTBOX_BYTES_MAX, though the worker was reading. A client that
    stops reading is still cut off once frames pile up behind the one it reads."""
    relay = Relay("/nonexistent", Leader("127.0.0.1", 1, "leader", 1), b"", 4096, None)
    relayed, client = socket.socketpair()
    upstream, leader = socket.socketpair()
    local_end = _End(relayed, "client 1")
    upstream_end = _End(upstream, "the leader's side of client 1", local_end, leaders_side=True)
    local_end.other = upstream_end
    for end in (local_end, upstream_end):
        end.sock.setblocking(False)
        relay.selector.register(end.sock, selectors.EVENT_READ, end)
    leader.setblocking(False)
    client.setblocking(False)
    body = bytes(range(256)) * 4096  # 1 MiB, 256 times the limit
    frame = FRAME.pack(len(body)) + body
    outgoing, received = bytearray(frame), bytearray()

    def turn(reading: bool) -> None:
        with contextlib.suppress(BlockingIOError):
            del outgoing[: leader.send(outgoing)]
        relay._read(upstream_end)
        if local_end.other is not None:
            relay._send(local_end)
        if reading:
            with contextlib.suppress(BlockingIOError):
                received.extend(client.recv(1 << 16))

    try:
        for _ in range(100_000):
            if len(received) == len(frame):
                break
            turn(reading=True)
            assert local_end.other is not None, "cut off while it read"
        assert received == frame
        for _ in range(100_000):  # frames pile up behind, unread: cut off
            if local_end.other is None:
                break
            outgoing += FRAME.pack(1000) + bytes(1000)
            turn(reading=False)
        assert local_end.other is None
    finally:
        relay.close()
        for sock in (relayed, client, upstream, leader):
            sock.close()


def test_a_relay_says_which_database_it_records_into_and_passes_on_the_rest() -> None:
    """A client first asks which database the writer records into (wire.Identify). A relay answers
    it with its own instance's database, which is the leader's, and does not pass it on: the
    leader may run the release before, which would drop a link that sends it. What follows, and
    a first frame of a client that does not ask, reach the leader as they were."""
    relay = Relay(
        "/nonexistent", Leader("127.0.0.1", 1, "leader", 1), b"", 1 << 20, None, "postgresql://db:5432/x"
    )
    pairs = []
    try:
        for asks in (True, False):
            relayed, client = socket.socketpair()
            upstream, leader = socket.socketpair()
            pairs += [relayed, client, upstream, leader]
            local_end = _End(relayed, "client", opening=bytearray())
            upstream_end = _End(upstream, "the leader's side", local_end, leaders_side=True)
            local_end.other = upstream_end
            for end in (local_end, upstream_end):
                end.sock.setblocking(False)
                relay.selector.register(end.sock, selectors.EVENT_READ, end)
            request = encode(Subscribe()) + encode(WriteRequest(1, []))
            sent = encode(Identify()) + request if asks else request
            for at in range(0, len(sent), 3):  # a few bytes at a time
                client.sendall(sent[at : at + 3])
                relay._read(local_end)
            leader.settimeout(5)
            passed = bytearray()
            while len(passed) < len(request):
                passed += leader.recv(1 << 16)
            assert bytes(passed) == request
            client.setblocking(False)
            if asks:
                [body] = FrameReader().feed(client.recv(1 << 16))
                assert decode_from_writer(body) == Identity("postgresql://db:5432/x")
            else:
                with pytest.raises(BlockingIOError):
                    client.recv(1 << 16)
    finally:
        relay.close()
        for sock in pairs:
            sock.close()


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
    (first,) = _peers(serve, pg_url, 1)
    published = _leader(pg_url)
    holder = _lead_holder(pg_url)
    assert holder is not None
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(%s)", (holder,))
    deadline = time.monotonic() + TAKE_OVER_DEADLINE_S
    while (again := _lead_holder(pg_url)) in (None, holder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert again not in (None, holder), first.log_tail()
    assert _leader(pg_url) == published  # the same leader at the same address: its relays go on
    assert _logs_in_time(first, "taken again"), first.log_tail()
    with first.client() as a:
        record(a, ev.receipt(STORE, ("SKU-1", 1)))


@pytest.mark.parametrize(
    ("database", "secret", "says"),
    [
        ("sqlite", SECRET, "LEDGER_WRITER_PEER_ADDRESS needs a PostgreSQL"),
        ("postgres", "", "LEDGER_WRITER_PEER_ADDRESS needs LEDGER_WRITER_PEER_SECRET"),
        ("postgres", "too-short", "LEDGER_WRITER_PEER_ADDRESS needs LEDGER_WRITER_PEER_SECRET"),
    ],
)
def test_a_peer_address_without_postgresql_or_a_secret_is_one_line_and_exit_2(
    database: str, secret: str, says: str, tmp_path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if database == "sqlite" else request.getfixturevalue("pg_url")
    env = {"LEDGER_WRITER_PEER_ADDRESS": "127.0.0.1:7071", "LEDGER_WRITER_PEER_SECRET": secret}
    done = run_ledger_command(url, "serve", env=env)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"ledger serve: {says}"), done.stderr  # the rule's words, nothing before
