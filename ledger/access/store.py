"""The tokens table: create, list, revoke, and the last use, on either database.

The database is declared here by what this module needs of it (`TokenDatabase`): a read
transaction and a plain committed one. The ledger's recorders provide both; neither takes the
event log's write lock, so managing tokens never makes the ledger's writer wait.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from ledger.access.scopes import Grant, Role
from ledger.access.tokens import new_token, token_digest
from ledger.clock import utc_text
from ledger.sql import Row, SqlTx

TOKENS_MAX = 100_000  # rows read into each process's memory; past it, creating one is refused


class TokenDatabase(Protocol):
    def read_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...
    def plain_transaction(self) -> contextlib.AbstractContextManager[SqlTx]: ...


class TokenNameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name} exists (names are never reused, revoked or not)")
        self.name = name


class TooManyTokens(Exception):
    def __init__(self) -> None:
        super().__init__(f"the ledger holds {TOKENS_MAX} tokens, its limit")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One row of the table: everything but the token itself, which is never stored."""

    name: str
    token_sha256: str
    role: Role
    stores: tuple[str, ...] | None
    sources: tuple[str, ...] | None
    expires_at: datetime | None
    rate_per_s: float | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    def grant(self) -> Grant:
        return Grant(
            name=self.name,
            role=self.role,
            stores=None if self.stores is None else frozenset(self.stores),
            sources=self.sources,
            expires_at_s=None if self.expires_at is None else self.expires_at.timestamp(),
            rate_per_s=self.rate_per_s,
        )


def _list_or_none(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(orjson.loads(text))


def _record(row: Row) -> TokenRecord:
    expires_at = row["expires_at"]
    rate = row["rate_per_s"]
    return TokenRecord(
        name=row["name"],
        token_sha256=row["token_sha256"],
        role=Role(row["role"]),
        stores=_list_or_none(row["stores"]),
        sources=_list_or_none(row["sources"]),
        expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
        rate_per_s=None if rate is None else float(rate),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def tokens_exist(tx: SqlTx) -> bool:
    """Was a token ever created? (Revoked ones count: access control, once on, stays on.)"""
    return tx.fetchone("SELECT name FROM ledger_tokens LIMIT 1") is not None


def read_tokens(tx: SqlTx) -> list[TokenRecord]:
    """Every token, revoked ones too, by name in code point order: PostgreSQL's ORDER BY would
    follow the database's collation, which may be linguistic, and list them apart from SQLite."""
    rows = tx.fetchall("SELECT * FROM ledger_tokens")  # at most TOKENS_MAX
    return sorted((_record(row) for row in rows), key=lambda record: record.name)


def create_token(
    database: TokenDatabase,
    *,
    name: str,
    role: Role,
    stores: frozenset[str] | None,
    sources: tuple[str, ...] | None,
    expires_at: datetime | None,
    rate_per_s: float | None,
    now: datetime,
) -> str:
    """Stores a new token's hash and grant; returns the token, which exists nowhere else."""
    token = new_token()
    row: tuple[Any, ...] = (
        name,
        token_digest(token),
        role.value,
        None if stores is None else orjson.dumps(sorted(stores)).decode(),
        None if sources is None else orjson.dumps(list(sources)).decode(),
        None if expires_at is None else utc_text(expires_at),
        rate_per_s,
        utc_text(now),
    )
    with database.plain_transaction() as tx:
        if tx.fetchone("SELECT name FROM ledger_tokens WHERE name = %s", (name,)) is not None:
            raise TokenNameTaken(name)
        count = tx.fetchone("SELECT COUNT(*) AS n FROM ledger_tokens")
        if count is not None and int(count["n"]) >= TOKENS_MAX:
            raise TooManyTokens
        tx.execute(
            "INSERT INTO ledger_tokens (name, token_sha256, role, stores, sources, expires_at, "
            "rate_per_s, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            row,
        )
    return token


def revoke_token(database: TokenDatabase, name: str, now: datetime) -> bool:
    """Marks the token revoked; False when no unrevoked token has that name."""
    with database.plain_transaction() as tx:
        found = tx.fetchone("SELECT name FROM ledger_tokens WHERE name = %s AND revoked_at IS NULL", (name,))
        if found is None:
            return False
        tx.execute("UPDATE ledger_tokens SET revoked_at = %s WHERE name = %s", (utc_text(now), name))
    return True


def note_last_use(database: TokenDatabase, used: dict[str, str]) -> None:
    """Moves each token's last use forward to the given UTC text (never back)."""
    with database.plain_transaction() as tx:
        tx.executemany(
            "UPDATE ledger_tokens SET last_used_at = %s "
            "WHERE name = %s AND (last_used_at IS NULL OR last_used_at < %s)",
            [(at, name, at) for name, at in sorted(used.items())],
        )
