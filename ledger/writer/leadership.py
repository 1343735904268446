"""Which instance's writer records for a database, when several share it (PostgreSQL only).

Two writers on one database take turns under the writers' lock, and each reads back what the
other wrote: together they recorded less than one alone (DESIGN.md, Scaling). With
LEDGER_WRITER_PEER_ADDRESS set on every instance, one writer leads and the others relay their
instance's requests to it (writer/relay.py), so that one writer records for all of them.

The leader is the writer whose session holds `LEADER_LOCK_KEY`, a session-level advisory lock: it
is released when that session ends, however the process ended (kill -9 included). The leader then
publishes where it listens, and a token a peer must show, in `ledger_writer_leader`; whoever may
read the database may write to it anyway. Correctness never rests on this: should two writers
lead at once for a while (the lock's session was lost, and another took it), both still record
under the writers' lock, as two instances without peers do.

A leader whose session is lost (PostgreSQL restarted, the connection cut) keeps recording for its
relays, and `keep()` takes the lock again, every `KEEP_INTERVAL_S`, so that a writer started
meanwhile finds it held; its thread never holds up the writer, and each of its queries waits for
the server at most pg_sessions.ANSWER_WAIT_S_MAX.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from ledger.storage.pg_sessions import ANSWER_WAIT_S_MAX, AnsweredInTime
from ledger.storage.recorders import CONNECT_TIMEOUT_S

log = logging.getLogger("ledger.writer")

# A PostgreSQL advisory lock key of this service's own (the writers' is 0x1ED6E7: storage/writers_lock.py).
LEADER_LOCK_KEY = 0x1ED6E8
TOKEN_BYTES = 24
KEEP_INTERVAL_S = 1.0


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class Leader:
    host: str
    port: int
    token: str
    pid: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Leadership:
    """One session of its own on the database, held while this process leads (or may lead)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._connection: Any = None
        self._published: Leader | None = None
        self._keeping = threading.Event()
        self._keeper: threading.Thread | None = None

    def _session(self) -> Any:
        if self._connection is None or self._connection.closed:
            self._connection = AnsweredInTime.connect(
                self.database_url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
            )
        return self._connection

    def take_lead(self) -> bool:
        """True if this process now leads (no other writer did); publish() once it listens."""
        (took,) = self._session().execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
        return bool(took)

    def publish(self, host: str, port: int, token: str) -> Leader:
        """Tells the other instances where this leader listens, and the token they must show."""
        leader = Leader(host, port, token, os.getpid())
        self._session().execute(
            "INSERT INTO ledger_writer_leader (id, host, port, token, pid, since) "
            "VALUES (1, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET host = excluded.host, port = excluded.port, "
            "token = excluded.token, pid = excluded.pid, since = excluded.since",
            (leader.host, leader.port, leader.token, leader.pid, datetime.now(UTC).isoformat()),
        )
        self._published = leader
        return leader

    def keep(self) -> None:
        """Watches the lead this process published, from a thread of its own, and takes it again
        should its session be lost; until close()."""
        self._keeper = threading.Thread(target=self._keep, name="writer-leadership", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        said_lost = False
        while not self._keeping.wait(KEEP_INTERVAL_S):
            published = self._published
            assert published is not None, "keep() after publish()"
            try:
                self._session().execute("SELECT 1")
                continue  # the session lives, and a session-level lock with it
            except psycopg.Error:
                self._drop_session()
            try:
                if self.take_lead():
                    self.publish(published.host, published.port, published.token)
                    log.info("this writer's lead was lost with its database session, and taken again")
                    said_lost = False
                elif not said_lost:
                    said_lost = True
                    log.warning(
                        "this writer's lead was lost with its database session and another writer "
                        "leads now; both record safely under the writers' lock, this one for its relays"
                    )
            except psycopg.Error as error:
                self._drop_session()
                if not said_lost:
                    said_lost = True
                    log.warning("this writer's lead was lost with its database session: %s", error)

    def _drop_session(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def leader(self) -> Leader | None:
        """Who last published that it leads (it may have gone since: a peer finds out on connecting)."""
        row = (
            self._session()
            .execute("SELECT host, port, token, pid FROM ledger_writer_leader WHERE id = 1")
            .fetchone()
        )
        return Leader(*row) if row is not None else None

    def close(self) -> None:
        """Ends the session, and so the lead, if this process held it; and takes back what it
        published, so that the others need not try it."""
        self._keeping.set()
        if self._keeper is not None:
            self._keeper.join(KEEP_INTERVAL_S + 2 * ANSWER_WAIT_S_MAX)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                if self._published is not None:
                    self._connection.execute(
                        "DELETE FROM ledger_writer_leader WHERE token = %s", (self._published.token,)
                    )
                self._connection.close()
            self._connection = None


def parse_peer_address(address: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` too) as a pair; ValueError says what is wrong."""
    host, separator, port = address.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, such as 10.0.0.5:7071, not {address!r}")
    return host, int(port)
