"""Tokens for tests (CONTRACT §5): made in the ledger's database directly, as `ledger tokens create`
makes them, and waited for until a server takes them (every process re-reads them within a second)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from ledger.access.scopes import Role
from ledger.access.store import create_token
from ledger.storage.opening import open_recorder

TOKEN_DEADLINE_S = 2.0  # CONTRACT §5: a new token works everywhere within 2 s
POLL_S = 0.05
PROBE_PATH = "/v1/no-such-route"  # 401 without a valid token, 404 with one: it records nothing


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def new_token(
    database_url: str,
    name: str,
    role: str,
    *,
    stores: tuple[str, ...] = (),
    sources: tuple[str, ...] = (),
    expires_in_s: float | None = None,
    rate_per_s: float | None = None,
) -> str:
    recorder = open_recorder(database_url, 2, 30)
    now = datetime.now(UTC)
    try:
        return create_token(
            recorder,
            name=name,
            role=Role(role),
            stores=frozenset(stores) or None,
            sources=sources or None,
            expires_at=None if expires_in_s is None else now + timedelta(seconds=expires_in_s),
            rate_per_s=rate_per_s,
            now=now,
        )
    finally:
        recorder.close()


def wait_until_taken(base_url: str, token: str, deadline_s: float = TOKEN_DEADLINE_S) -> None:
    """Until the server knows the token (the deadline is the contract's)."""
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while True:
            if client.get(PROBE_PATH, headers=bearer(token)).status_code == 404:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"a new token did not work within {deadline_s} s")
            time.sleep(POLL_S)
