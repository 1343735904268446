"""MoySklad's audit read back in windows of time: the changes whose notification was lost.

MoySklad tries a webhook a few times in a row and then drops it (md/dictionaries/_webhook.md), but
its audit (md/audit/_audit.md) keeps every change: contexts filtered by `moment>=`, `moment<=` (to
the second, Moscow time), `entityType` and `eventType`, then each context's events (a bulk change is
one context of many), each naming its entity, its moment and, for an update, the fields it changed
(`diff`, keyed by the fields' JSON API names). `AuditWindows` reads one kind of change (the demands
deleted, the customer orders updated) and hands each to the catch-up that wants it.

The audit is read in windows of at most WINDOW_S, oldest first, at most WINDOWS_PER_RUN_MAX a
catch-up; the cursor (`adapter_cursors`) moves to a window's end once it is read in full, so a
long outage is caught up a window at a time and a window cut short (stopped, MoySklad or the
ledger away) is read again whole. A window ends SETTLE_S before now and starts OVERLAP_S before
the last one's end: MoySklad's clock may run behind ours, and an audit row may be written late.
What cannot be read or taken is given up with an ALERT in the journal and passed, never held for
good: a change the taker refuses (the ledger answers `invalid`, an address another MoySklad would
answer), an audit row without its entity's address or moment, a context of more than
AUDIT_PAGES_MAX pages of events (its other events unread; the window's other contexts are read), a
window of more than AUDIT_PAGES_MAX pages of contexts (the rest of it). The same alert is said once
in a process, though the overlap reads it again. A cursor ahead of this host's clock by more than
OVERLAP_S (the clock was set back) is alerted and the audit read again from FIRST_LOOK_BACK_S
before now. The token needs the right to view the audit; without it MoySklad answers 403, said as
such on every catch-up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.cursors import load_cursor, save_cursor
from adapters.db import journal, transaction
from adapters.http import ForeignUrl, under_base
from adapters.masking import secret_safe_logger
from adapters.moysklad import SYSTEM, MoySkladClient, parse_moment, second_text
from adapters.outbound import TargetUnavailable

log = secret_safe_logger("adapters.moysklad_audit")

WINDOW_S = 600.0
SETTLE_S = 60.0
OVERLAP_S = 60.0
FIRST_LOOK_BACK_S = 3_600.0  # a restart's worth, as the catch-up by `updated`
# The audit's pages hold at most 100 rows (`limit` 1 to 100, default 25).
AUDIT_PAGE_ROWS = 100
AUDIT_PAGES_MAX = 50  # of contexts in one window, or of one context's events
WINDOWS_PER_RUN_MAX = 144  # a day of windows a catch-up; the rest, the next one
ALERTS_REMEMBERED_MAX = 1_000  # alerts said in this process, not said again when read again


class AuditOverflow(Exception):
    """More rows than AUDIT_PAGES_MAX pages: the rest is not read."""


@dataclass(frozen=True, slots=True)
class Change:
    """One entity's change: its address, when it was made, the fields an update changed, the
    address of the audit context it is in (a notification of the change names the same), and the
    login of who made it."""

    href: str
    moment: datetime
    fields: frozenset[str] = frozenset()
    context: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An audit context or event the catch-up cannot take: alerted, then passed."""

    subject: str
    detail: str


def audit_changes(
    client: MoySkladClient,
    since: datetime,
    until: datetime,
    entity_type: str,
    event_type: str,
    page_rows: int = AUDIT_PAGE_ROWS,
    not_by: str | None = None,
) -> Iterator[Change | Unreadable]:
    """Every `event_type` change of an `entity_type` the audit records from `since` to `until`,
    and what could not be read; with `not_by`, a login, not the contexts of that login's changes
    (their events are not asked for). An update is read with the fields it changed: one without
    its `diff` is unreadable. Raises AuditOverflow past AUDIT_PAGES_MAX pages of contexts."""
    window = (
        f"moment>={second_text(since)};moment<={second_text(until)};"
        f"entityType={entity_type};eventType={event_type}"
    )
    for context in _rows(client, "audit", {"filter": window}, page_rows):
        if not_by is not None and context.get("uid") == not_by:
            continue
        subject = f"audit context {context.get('id')} ({context.get('moment')})"
        context_href = str((context.get("meta") or {}).get("href") or "")
        events = ((context.get("events") or {}).get("meta") or {}).get("href")
        if not isinstance(events, str) or not _ours(client, events):
            yield Unreadable(subject, f"its events' address is missing or not MoySklad's: {events!r}"[:300])
            continue
        try:
            for event in _rows(client, events, {}, page_rows):
                if event.get("entityType") == entity_type and event.get("eventType") == event_type:
                    yield _change(client, subject, context_href, entity_type, event)
        except AuditOverflow as overflow:
            yield Unreadable(subject, f"{overflow} of events: the rest of them were not read")


def _change(
    client: MoySkladClient, subject: str, context: str, entity_type: str, event: dict[str, Any]
) -> Change | Unreadable:
    href = ((event.get("entity") or {}).get("meta") or {}).get("href")
    try:
        moment = parse_moment(str(event["moment"]))
    except (KeyError, ValueError):
        moment = None
    if not isinstance(href, str) or not _ours(client, href) or moment is None:
        detail = f"an event without its {entity_type}'s address or moment: {event!r}"
        return Unreadable(subject, detail[:300])
    diff = event.get("diff")
    uid = str(event.get("uid") or "")
    if event.get("eventType") != "update":
        return Change(href, moment, frozenset(), context, uid)
    if not isinstance(diff, dict):
        # md/audit/_audit.md: an update's event names the fields it changed. Without them, whether
        # it changed one that matters is unknown: said, not taken for "nothing that matters".
        return Unreadable(subject, f"an update without the fields it changed (its diff): {event!r}"[:300])
    return Change(href, moment, frozenset(diff), context, uid)


def _ours(client: MoySkladClient, href: str) -> bool:
    return under_base(client.http.base_url, client.http.url(href))


def _rows(
    client: MoySkladClient, path: str, params: dict[str, str], page_rows: int
) -> Iterator[dict[str, Any]]:
    for page in range(AUDIT_PAGES_MAX):
        offset = page * page_rows
        answer = client.request(
            "GET", path, params={**params, "limit": str(page_rows), "offset": str(offset)}
        )
        if answer.status == 403:
            raise TargetUnavailable(
                "moysklad audit: HTTP 403: the token may lack the right to view the audit"
            )
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad audit: HTTP {answer.status}")
        body = answer.json() or {}
        rows = body.get("rows") or []
        yield from rows
        size = (body.get("meta") or {}).get("size")
        if len(rows) < page_rows or (isinstance(size, int) and offset + len(rows) >= size):
            return
    raise AuditOverflow(f"more than {AUDIT_PAGES_MAX} pages of {page_rows} rows")


# The changes of one window, read: (since, until) -> each change found, or what could not be read.
Read = Callable[[datetime, datetime], Iterable[Change | Unreadable]]
# One change taken: returns how many events it submitted; raises ValueError (or KeyError,
# TypeError) for a change it refuses for good, TargetUnavailable for an outage.
Take = Callable[[Change], int]


class AuditWindows:
    """Reads `read`'s changes from the cursor named `cursor` to SETTLE_S before now, a window at a
    time, and hands each to `take`. `kind` names them in alerts (`demand deletions`), `item`
    each one (`deleted demand`); `remedy` is what an alert tells the operator to do."""

    def __init__(
        self,
        recorder: Any,
        cursor: str,
        read: Read,
        take: Take,
        *,
        kind: str,
        item: str,
        remedy: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.recorder = recorder
        self.cursor = cursor
        self.read = read
        self.take = take
        self.kind = kind
        self.item = item
        self.remedy = remedy
        self.clock = clock
        self._alerted: OrderedDict[tuple[str, str], None] = OrderedDict()

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Until every window is read, WINDOWS_PER_RUN_MAX are, or `stopping()`; returns how many
        events it submitted."""
        end = self.clock() - timedelta(seconds=SETTLE_S)
        start = self._start(end)
        submitted = 0
        for _ in range(WINDOWS_PER_RUN_MAX):
            if start >= end or stopping():
                break
            until = min(end, start + timedelta(seconds=WINDOW_S))
            since = start - timedelta(seconds=OVERLAP_S)
            try:
                for found in self.read(since, until):
                    if stopping():
                        return submitted  # this window is read again whole
                    if isinstance(found, Unreadable):
                        self._alert(found.subject, found.detail)
                        continue
                    try:
                        submitted += self.take(found)
                    except ForeignUrl as error:  # an address another MoySklad would answer
                        self._alert(f"{self.item} {found.href}", str(error))
                    except (ValueError, KeyError, TypeError) as error:  # refused: so it would be again
                        self._alert(f"{self.item} {found.href}", f"{type(error).__name__}: {error}")
            except AuditOverflow as overflow:
                window = f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}"
                self._alert(f"{self.kind} {window}", f"{overflow} of contexts: the rest were not read")
            save_cursor(self.recorder, self.cursor, until)
            start = until
        return submitted

    def _start(self, end: datetime) -> datetime:
        cursor = load_cursor(self.recorder, self.cursor)
        # The overlap reads again what a clock set back by up to OVERLAP_S has left behind; more,
        # and what MoySklad recorded meanwhile would fall before the next window's start.
        if cursor is not None and cursor > end + timedelta(seconds=OVERLAP_S):
            self._alert(
                f"{self.kind} cursor",
                f"{cursor.isoformat(timespec='seconds')} is ahead of this host's clock (set back?): "
                f"the audit is read again from {FIRST_LOOK_BACK_S:.0f} s before now",
            )
            cursor = None
        return cursor or end - timedelta(seconds=FIRST_LOOK_BACK_S)

    def _alert(self, subject: str, detail: str) -> None:
        key = (subject, detail)
        if key in self._alerted:
            return
        self._alerted[key] = None
        if len(self._alerted) > ALERTS_REMEMBERED_MAX:
            self._alerted.popitem(last=False)
        detail = f"{detail}; {self.remedy}"
        with transaction(self.recorder) as tx:
            journal(tx, SYSTEM, "alert", subject, detail)
        log.error("ALERT moysklad %s: %s", subject, detail)
