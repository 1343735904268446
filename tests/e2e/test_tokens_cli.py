"""`ledger tokens` and `ledger serve`'s access checks at start, as a user meets them (CONTRACT §5)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
from support import db
from support.server import free_port

from .test_cli import LEDGER, _env, assert_refused_in_one_line, ledger

TOKEN = re.compile(r"sl_live_[A-Za-z0-9_-]{43}")
START_DEADLINE_S = 30.0


def _create(tmp_path: Path, *args: str) -> str:
    done = ledger(tmp_path, "tokens", "create", *args)
    assert done.returncode == 0, done.stderr
    assert TOKEN.fullmatch(done.stdout.removesuffix("\n")), done.stdout  # alone, on one line
    token = done.stdout.strip()
    assert token not in done.stderr
    return token


def test_a_token_is_printed_once_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    token = _create(
        tmp_path,
        "--name",
        "till-12",
        "--role",
        "producer",
        "--store",
        "store-12",
        "--source",
        "pos/store-12/",
        "--expires-in",
        "90d",
        "--rate-per-s",
        "5",
    )
    url = _env(tmp_path)["LEDGER_DATABASE_URL"]
    [row] = db.query(url, "SELECT * FROM ledger_tokens")
    assert row["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row) and token[len("sl_live_") :] not in str(row)

    listed = ledger(tmp_path, "tokens", "list")
    assert listed.returncode == 0 and token not in listed.stdout
    assert re.search(r"till-12\s+producer\s+store-12\s+pos/store-12/\s+\S+Z\s+5\s+-\s+active", listed.stdout)
    [public] = [
        orjson.loads(line) for line in ledger(tmp_path, "tokens", "list", "--json").stdout.splitlines()
    ]
    assert public["name"] == "till-12" and public["stores"] == ["store-12"]
    assert public["sources"] == ["pos/store-12/"] and public["rate_per_s"] == 5
    assert public["last_used_at"] is None and public["status"] == "active"
    assert set(public) == {"name", "role", "stores", "sources", "expires_at", "rate_per_s"} | {
        "created_at",
        "last_used_at",
        "status",
    }
    assert token not in str(public)


def test_a_second_token_of_the_same_name_is_refused_revoked_or_not(tmp_path: Path) -> None:
    _create(tmp_path, "--name", "analyst", "--role", "reader")
    assert_refused_in_one_line(
        ledger(tmp_path, "tokens", "create", "--name", "analyst", "--role", "admin"), "analyst"
    )
    revoked = ledger(tmp_path, "tokens", "revoke", "analyst")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in ledger(tmp_path, "tokens", "list").stdout
    assert_refused_in_one_line(ledger(tmp_path, "tokens", "create", "--name", "analyst", "--role", "reader"))
    assert_refused_in_one_line(ledger(tmp_path, "tokens", "revoke", "analyst"), "analyst")


def test_what_cannot_be_granted_is_refused_in_one_line(tmp_path: Path) -> None:
    assert ledger(tmp_path, "migrate").returncode == 0
    for args in (
        ["--name", "kafka", "--role", "reader"],
        ["--name", "ledger", "--role", "reader"],
        ["--name", "a/b", "--role", "reader"],
        ["--name", "x", "--role", "reader", "--expires-in", "90"],
        ["--name", "x", "--role", "reader", "--expires-in", "1w"],
        ["--name", "x", "--role", "reader", "--expires-in", "999999999d"],  # past the year 9999
        ["--name", "x", "--role", "reader", "--expires-in", "36601d"],
        ["--name", "x", "--role", "reader", "--store", "no/slash"],
        ["--name", "x", "--role", "reader", "--rate-per-s", "0"],
    ):
        assert_refused_in_one_line(ledger(tmp_path, "tokens", "create", *args))
    assert_refused_in_one_line(ledger(tmp_path, "tokens", "create", "--name", "x", "--role", "root"))
    assert ledger(tmp_path, "tokens", "list").stdout.count("\n") == 1  # the header only


def test_serve_refuses_to_listen_beyond_loopback_while_open(tmp_path: Path) -> None:
    line = assert_refused_in_one_line(
        ledger(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port())), "0.0.0.0", "LEDGER_AUTH"
    )
    assert "open" in line


def _serves(tmp_path: Path, host: str, **settings: str) -> str:
    """Runs `ledger serve` on host until it answers on loopback; returns what it logged."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(LEDGER), "serve", "--host", host, "--port", str(port), "--log-level", "warning"],
            env=_env(tmp_path, **settings),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(START_DEADLINE_S)
    return log_path.read_text()


def test_serve_listens_beyond_loopback_when_told_to_serve_openly_or_once_a_token_exists(
    tmp_path: Path,
) -> None:
    opened = _serves(tmp_path, "0.0.0.0", LEDGER_AUTH="off")
    assert "OPEN" in opened and "LEDGER_ALLOWED_HOSTS" in opened
    token = _create(tmp_path, "--name", "admin", "--role", "admin")
    closed = _serves(tmp_path, "0.0.0.0", LEDGER_ALLOWED_HOSTS="ledger.example")
    assert "OPEN" not in closed and token not in closed


def test_the_open_service_says_so_at_start(tmp_path: Path) -> None:
    assert "OPEN" in _serves(tmp_path, "127.0.0.1")
