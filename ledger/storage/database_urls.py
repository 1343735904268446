"""What LEDGER_DATABASE_URL names: a SQLite file, or a PostgreSQL database and the libpq options to
reach it with; and which database that is, however the URL spells it. Pure reading of the URL: no
connection is made here (opening.py opens what these name)."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import psycopg.conninfo


def sqlite_file(database_url: str) -> str | None:
    """The file of a `sqlite:///` URL (sqlite:///ledger.db is relative, sqlite:////var/lib/ledger.db
    absolute), or None for any other database."""
    parts = urlsplit(database_url)
    if parts.scheme != "sqlite":
        return None
    return unquote(parts.path)[1:] or "ledger.db"


def database_identity(database_url: str) -> str:
    """Which database a URL names, the same whichever way it is spelt: a SQLite file by its real
    path (sqlite:///ledger.db run in /srv is sqlite:////srv/ledger.db), a PostgreSQL database by
    its server and name, without user or password. A writer process states it to each client that
    asks (writer/wire.py's Identify), so that a client configured for one ledger never records
    through a writer of another."""
    path = sqlite_file(database_url)
    if path is not None:
        return f"sqlite:///{os.path.realpath(path)}"
    parts = urlsplit(database_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[-1]
    return f"postgresql://{host}:{parts.port or 5432}/{unquote(parts.path.lstrip('/')) or 'postgres'}"


def postgres_url_options(database_url: str) -> dict[str, str]:
    """The libpq options in the URL's query (`?host=/a/dir` for a Unix socket directory,
    `sslmode=verify-full`, ...), each as libpq reads it; an option libpq does not know is a
    ValueError naming it, without the URL's password."""
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(database_url)  # libpq's own check of the names
    except psycopg.ProgrammingError as error:
        problem = str(error).strip().splitlines()[0].replace(database_url, "<the URL>")
        password = urlsplit(database_url).password
        if password:
            problem = problem.replace(password, "***").replace(unquote(password), "***")
        raise ValueError(f"LEDGER_DATABASE_URL: {problem}") from None
    # The names in the query, with their values as libpq decodes them (%XX only: a `+` stays a `+`,
    # where a form's decoding, parse_qs, made it a space).
    named = parse_qs(urlsplit(database_url).query, keep_blank_values=True)
    return {name: str(parsed[name]) for name in named if name in parsed}
