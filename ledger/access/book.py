"""This process's copy of the tokens: checked on every request without a database round trip.

A thread reads the whole (small) table every `refresh_interval_s` (at most 1 s), so that a token
created or revoked anywhere works, or stops working, in every process within 2 s. The same thread
writes back, every `last_use_flush_s`, when each token was last used here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.access.scopes import Grant
from ledger.access.store import TokenDatabase, note_last_use, read_tokens
from ledger.access.tokens import bearer_token, same_digest, token_digest
from ledger.clock import utc_text

log = logging.getLogger("ledger.access")

REFRESH_INTERVAL_S_MAX = 1.0  # with a read's own time, a change reaches every process within 2 s
# Authorization header values already found valid among the tokens read last; past it, forgotten all
# at once. Only valid tokens enter, so it holds at most a few spellings of each token in force.
HEADERS_REMEMBERED_MAX = 4096


NO_TOKEN = "no bearer token (send Authorization: Bearer <token>)"
NOT_VALID = "the token is not valid: unknown, expired or revoked"


class Unauthenticated(Exception):
    """No token, or one that is unknown, expired or revoked. The message never holds the token."""


@dataclass(frozen=True, slots=True)
class _Known:
    token_sha256: str
    grant: Grant


class TokenBook:
    def __init__(
        self,
        database: TokenDatabase,
        *,
        refresh_interval_s: float,
        last_use_flush_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert 0 < refresh_interval_s <= REFRESH_INTERVAL_S_MAX, refresh_interval_s
        self.database = database
        self.refresh_interval_s = refresh_interval_s
        self.last_use_flush_s = last_use_flush_s
        self.clock = clock
        # Replaced whole by the refresher (one assignment), read by the event loop.
        self._by_digest: dict[str, _Known] = {}
        # Authorization header value -> the token it was found to be, among `_by_digest`'s. Replaced
        # with it, so a revoked token is forgotten here at the same refresh that forgets it there.
        self._by_header: dict[bytes, _Known] = {}
        self.any_tokens = False  # a token was ever created: access control applies
        self._used: dict[str, float] = {}  # name -> when last used here (Unix time), not yet written
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._failing = False

    # -- the hot path ---------------------------------------------------------------------------

    def grant_for(self, token: str | None) -> Grant:
        """The grant of a valid token; raises Unauthenticated otherwise."""
        if token is None:
            raise Unauthenticated(NO_TOKEN)
        return self._in_force(self._known(token))

    def grant_for_header(self, authorization: bytes | None) -> Grant:
        """The grant of an `Authorization: Bearer <token>` header value; raises Unauthenticated when
        there is none, or it is not a valid token.

        A value found valid once is remembered until the next refresh, which skips the parsing and
        the hash on every later request that sends it (measured: from 2.3 to about 1 µs a request).
        Remembering it reveals nothing through timing: the lookup hashes the value with the
        process's secret string-hash key, so nobody can make a value of their choosing meet a stored
        one there, and only values that were valid tokens are stored at all."""
        by_header = self._by_header
        known = by_header.get(authorization) if authorization is not None else None
        if known is None:
            token = bearer_token(authorization)
            if token is None:
                raise Unauthenticated(NO_TOKEN if authorization is None else NOT_VALID)
            known = self._known(token)
            if len(by_header) >= HEADERS_REMEMBERED_MAX:
                by_header.clear()
            by_header[authorization] = known  # type: ignore[index]  # not None: bearer_token found one
        # _in_force, written out: this runs on every request, and a call is a good part of its cost.
        grant = known.grant
        now = self.clock()
        if grant.expires_at_s is not None and now >= grant.expires_at_s:
            raise Unauthenticated(NOT_VALID)
        self._used[grant.name] = now
        return grant

    def _known(self, token: str) -> _Known:
        digest = token_digest(token)
        # Found by its hash, then the hashes compared in constant time: the lookup's timing can
        # only tell about a hash of what the caller sent, never about a stored token.
        known = self._by_digest.get(digest)
        if known is None or not same_digest(known.token_sha256, digest):
            raise Unauthenticated(NOT_VALID)
        return known

    def _in_force(self, known: _Known) -> Grant:
        now = self.clock()
        if known.grant.expired(now):
            raise Unauthenticated(NOT_VALID)
        self._used[known.grant.name] = now
        return known.grant

    # -- keeping up with the table ----------------------------------------------------------------

    def refresh(self) -> None:
        """Reads every token; raises the database's error (the caller decides what it means)."""
        with self.database.read_transaction() as tx:
            records = read_tokens(tx)
        by_digest = {
            record.token_sha256: _Known(record.token_sha256, record.grant())
            for record in records
            if record.revoked_at is None
        }
        # The remembered header values go first: between the two assignments a request may find a
        # header missing (and check it again in full), never a revoked token remembered.
        self._by_header = {}
        self._by_digest = by_digest
        self._by_header = {}
        self.any_tokens = bool(records)

    def flush_last_use(self) -> None:
        swapped, self._used = self._used, {}
        used = dict(swapped)  # one C call: a late write from the event loop cannot break it
        if used:
            note_last_use(
                self.database,
                {name: utc_text(datetime.fromtimestamp(at, UTC)) for name, at in used.items()},
            )

    def start(self) -> None:
        """Reads the tokens now (a failure here fails the start), then keeps them current."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="ledger-tokens", daemon=True)
        self._thread.start()
        # Noting last uses writes, and a write may wait for the database's write lock (on SQLite as
        # long as a rebuild holds it): on a thread of its own, so that reading the tokens (a
        # revocation must reach this process within 2 s) never waits behind it.
        self._flusher = threading.Thread(target=self._flush_run, name="ledger-tokens-last-use", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in (self._thread, self._flusher):
            if thread is not None:
                thread.join(5)
        try:
            self.flush_last_use()
        except Exception as error:  # noqa: BLE001 - the last uses are a convenience, never a reason to fail
            log.warning("could not note when tokens were last used: %s", error)

    def _flush_run(self) -> None:
        while not self._stopping.wait(self.last_use_flush_s):
            try:
                self.flush_last_use()
            except Exception as error:  # noqa: BLE001 - the last uses are a convenience; tried next time
                log.warning("could not note when tokens were last used: %s", error)

    def _run(self) -> None:
        while not self._stopping.wait(self.refresh_interval_s):
            try:
                self.refresh()
                if self._failing:
                    log.warning("tokens are read again")
                self._failing = False
            except Exception as error:  # noqa: BLE001 - the tokens known stay in force; retried next interval
                if not self._failing:
                    log.warning("cannot read the tokens, the last ones read stay in force: %s", error)
                self._failing = True
