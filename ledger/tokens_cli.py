"""`ledger tokens create | list | revoke`: the tokens, managed in the ledger's database directly.

They work whether or not the service runs: every serving process reads the table within a second
(ledger/access/book.py). The token is printed once, alone on one line of standard output; what
else is said goes to standard error, and never holds it.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from typing import Any

import orjson

from ledger.access.scopes import (
    InvalidGrant,
    Role,
    check_name,
    check_rate,
    check_sources,
    check_stores,
    parse_duration_s,
    parse_role,
)
from ledger.access.store import (
    TokenNameTaken,
    TokenRecord,
    TooManyTokens,
    create_token,
    read_tokens,
    revoke_token,
)
from ledger.cli_errors import CommandError, database_url_checked
from ledger.clock import utc_now, utc_text
from ledger.config import Settings
from ledger.existing_ledger import missing_sqlite_file, refuse_no_ledger
from ledger.storage.migrator import plan_of
from ledger.storage.opening import open_read_only, open_recorder


def register(commands: argparse._SubParsersAction[Any]) -> None:
    tokens = commands.add_parser("tokens", help="create, list and revoke the API's bearer tokens")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create a token and print it, once, alone on one line of standard output"
    )
    create.add_argument("--name", required=True, help="unique; shown as the principal in the history")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument(
        "--store", action="append", default=[], metavar="STORE", help="only this store (repeat for more)"
    )
    create.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only events whose source starts with this (repeat for more)",
    )
    create.add_argument(
        "--expires-in", metavar="DURATION", help="e.g. 90d, 12h, 30m, 6s; at most 36600d; default: never"
    )
    create.add_argument(
        "--rate-per-s",
        type=float,
        metavar="N",
        help="requests a second, per serving process; default: no limit",
    )
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="every token's name, role, scopes, expiry and last use")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a token: refused everywhere within 2 s")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_revoke)


def _database(settings: Settings, *, may_make: bool = False, read_only: bool = False) -> Any:
    """The ledger's database. Listing or revoking in a SQLite file that is not there (a mistyped
    path, another directory than `ledger serve`'s) is refused rather than made; the first token may
    make the ledger (so that a service never runs open), and says so on stderr. `read_only`: a
    schema up to date is read as it is (a backup's SQLite file stays in its rollback-journal mode,
    not switched to WAL); one that lacks migrations gets them, as for the other actions."""
    if not may_make:
        refuse_no_ledger(settings, made_by="`ledger migrate`")
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        print(f"ledger tokens: no ledger at {os.path.abspath(missing)}: making a new one", file=sys.stderr)
    if read_only:
        with database_url_checked():
            reader = open_read_only(
                settings.database_url, settings.db_lock_timeout_s, settings.db_deadlock_timeout_ms
            )
            try:
                if not plan_of(reader).pending:
                    return reader
            except BaseException:
                reader.close()
                raise
            reader.close()
    with database_url_checked():
        return open_recorder(
            settings.database_url,
            2,
            settings.db_lock_timeout_s,
            migration_wait_s=settings.migration_wait_s,
            deadlock_timeout_ms=settings.db_deadlock_timeout_ms,
        )


def _create(args: argparse.Namespace, settings: Settings) -> int:
    now = utc_now()
    try:
        name = check_name(args.name)
        role = parse_role(args.role)
        stores = check_stores(args.store)
        sources = check_sources(args.source)
        expires_in_s = None if args.expires_in is None else parse_duration_s(args.expires_in)
        rate = check_rate(args.rate_per_s)
    except InvalidGrant as error:
        raise CommandError(str(error)) from None
    database = _database(settings, may_make=True)
    try:
        token = create_token(
            database,
            name=name,
            role=role,
            stores=stores,
            sources=sources,
            expires_at=None if expires_in_s is None else now + timedelta(seconds=expires_in_s),
            rate_per_s=rate,
            now=now,
        )
    except (TokenNameTaken, TooManyTokens) as error:
        raise CommandError(str(error)) from None
    finally:
        database.close()
    print(token, flush=True)
    print(
        f"created the {role} token {name}: keep it now, it is not shown again "
        "(the database holds only its hash)",
        file=sys.stderr,
    )
    return 0


def _status(record: TokenRecord) -> str:
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= utc_now():
        return "expired"
    return "active"


def _public(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": record.role.value,
        "stores": list(record.stores) if record.stores is not None else None,
        "sources": list(record.sources) if record.sources is not None else None,
        "expires_at": None if record.expires_at is None else utc_text(record.expires_at),
        "rate_per_s": record.rate_per_s,
        "created_at": record.created_at,
        "last_used_at": record.last_used_at,
        "status": _status(record),
    }


COLUMNS = ("name", "role", "stores", "sources", "expires_at", "rate_per_s", "last_used_at", "status")
# What an empty cell means, by column (a token without stores may act on every store, ...).
UNSET = {"stores": "all", "sources": "all", "expires_at": "never", "rate_per_s": "unlimited"}


def _cell(column: str, value: object) -> str:
    if value is None:
        return UNSET.get(column, "-")
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    database = _database(settings, read_only=True)
    try:
        with database.read_transaction() as tx:
            records = read_tokens(tx)
    finally:
        database.close()
    rows = [_public(record) for record in records]
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
        return 0
    table = [list(COLUMNS), *([_cell(column, row[column]) for column in COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    database = _database(settings)
    try:
        revoked = revoke_token(database, args.name, utc_now())
    finally:
        database.close()
    if not revoked:
        raise CommandError(f"no active token named {args.name}")
    print(f"revoked the token {args.name}: refused by every serving process within 2 s", file=sys.stderr)
    return 0
