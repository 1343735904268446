"""Which instance's writer records for a database, when several share it (PostgreSQL only).

Two writers on one database take turns under the writers' lock, and each reads back what the
other wrote: together they recorded less than one alone (DESIGN.md, Limits). With
LEDGER_WRITER_PEER_ADDRESS (and the peers' secret) set on every instance, one writer leads and the
others relay their instance's requests to it (writer/relay.py), so that one writer records for all.

The leader is the writer whose session holds `LEADER_LOCK_KEY`, a session-level advisory lock: it
is released when that session ends, however the process ended (kill -9 included; a machine lost
is found out within seconds by the session's TCP keepalives, `KEEPALIVE_OPTIONS`, at both ends).
The leader then publishes where it listens in `ledger_writer_leader`; the secret is not there
(peer_link.py). Correctness never rests on this: should two writers lead at once for a while (the
lock's session was lost, and another took it), both still record under the writers' lock, as two
instances without peers do.

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

from ledger.storage.opening import CONNECT_TIMEOUT_S
from ledger.storage.pg_sessions import AnsweredInTime, session_options

log = logging.getLogger("ledger.writer")

# A PostgreSQL advisory lock key of this service's own (the writers' is 0x1ED6E7: storage/writers_lock.py).
LEADER_LOCK_KEY = 0x1ED6E8
LEADER_ID_BYTES = 12
KEEP_INTERVAL_S = 1.0
CLOSE_WAIT_S = 2.0  # for the keeper to finish what it is at, when the writer stops


@dataclass(frozen=True, slots=True)
class Leader:
    host: str
    port: int
    leader_id: str  # this lead's own, so that it takes back only its own row
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
                self.database_url,
                autocommit=True,
                connect_timeout=int(CONNECT_TIMEOUT_S),
                **session_options(self.database_url),
            )
        return self._connection

    def take_lead(self) -> bool:
        """True if this process now leads (no other writer did); publish() once it listens."""
        (took,) = self._session().execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
        return bool(took)

    def publish(self, host: str, port: int) -> Leader:
        """Tells the other instances where this leader listens."""
        published = self._published
        leader_id = published.leader_id if published is not None else secrets.token_hex(LEADER_ID_BYTES)
        leader = Leader(host, port, leader_id, os.getpid())
        self._session().execute(
            "INSERT INTO ledger_writer_leader (id, host, port, leader_id, pid, since) "
            "VALUES (1, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET host = excluded.host, port = excluded.port, "
            "leader_id = excluded.leader_id, pid = excluded.pid, since = excluded.since",
            (leader.host, leader.port, leader.leader_id, leader.pid, datetime.now(UTC).isoformat()),
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
                    self.publish(published.host, published.port)
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
            .execute("SELECT host, port, leader_id, pid FROM ledger_writer_leader WHERE id = 1")
            .fetchone()
        )
        return Leader(*row) if row is not None else None

    def close(self) -> None:
        """Ends the session, and so the lead, if this process held it; and takes back what it
        published, so that the others need not try it."""
        self._keeping.set()
        if self._keeper is not None:
            self._keeper.join(CLOSE_WAIT_S)
            if self._keeper.is_alive():
                return  # still at the database: the session ends with the process, the lead with it
        if self._connection is not None:
            with contextlib.suppress(Exception):
                if self._published is not None:
                    self._connection.execute(
                        "DELETE FROM ledger_writer_leader WHERE leader_id = %s", (self._published.leader_id,)
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
