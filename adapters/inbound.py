"""Webhooks in: store the delivery durably, answer at once, process it later from the inbox.

MoySklad waits 1500 ms for an answer, retries 3 times at once and then drops the notification
(adapters/moysklad.py), so the receiver only stores the delivery (webhook_store.py: in the
database within a named wait, else in the local spool) and answers 200. The delivery id
(MoySklad's requestId) makes a redelivery a no-op. Only a delivery that is unauthenticated (an
unknown path, a missing or wrong signature), too large or malformed is answered 4xx; a full spool,
the one local limit left, is answered 503 so that the sender tries again.

Each webhook is authenticated by its own secret, never by a ledger token: MoySklad's by the secret
in its path, the WMS's by the secret in its path or an HMAC signature of its body (signatures.py).
Secrets are compared in constant time, as digests, so that neither their content nor their length
shows in the time taken. The ledger's tokens guard only `/metrics`, with LEDGER_METRICS_AUTH=required;
and, as the API does, the server answers only the `Host` names LEDGER_ALLOWED_HOSTS lists (400
otherwise; /healthz excepted).

A delivery whose processing would send a credential elsewhere (a `meta.href` outside the
configured MoySklad URL: adapters/http.py) is given up at once, with an alert: it is forged, or
the base URL is wrong; retrying cannot help.

`InboxWorker` processes the stored deliveries in its own thread, oldest first: each round it moves
the spool's deliveries into the inbox, then processes those received at least `settle_s` ago (by
then every delivery received before them is stored, in the database or the spool, so none is
processed ahead of an earlier one). What cannot be processed now stays pending and is retried:
with the ledger unreachable, every delivery waits; with one system unreachable, that system's
later deliveries wait behind it, in order, and the other system's go on. What is wrong in itself
is given up after `retries_max` attempts and raised as an alert, and so is a delivery whose
processing fails unexpectedly: one odd delivery cannot hold back those behind it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from adapters.db import is_data_error, is_database_unavailable, journal, now_text, transaction
from adapters.deliveries import DELIVERY_ID_CHARS_MAX, Delivery, insert_delivery
from adapters.exchange import Reply, Request
from adapters.http import ForeignUrl
from adapters.limits import RETRY_JITTER, Stopper
from adapters.masking import mask, secret_safe_logger
from adapters.outbound import TargetUnavailable
from adapters.signatures import SignatureScheme
from adapters.sink import SinkError
from adapters.spool import DeliverySpool, SpoolFull, UnreadableSpoolFile
from adapters.status import metrics_text
from adapters.webhook_store import DeliveryStore
from ledger.access.hosts import NOT_ALLOWED_DETAIL, host_allowed, host_lines_refusal
from ledger.access.metrics import MetricsGuard
from ledger.backoff import Backoff
from ledger.clock import utc_now, utc_text
from ledger.http_problems import PROBLEM_MEDIA_TYPE, WWW_AUTHENTICATE

log = secret_safe_logger("adapters.inbound")

DELIVERY_BYTES_MAX = 4 * 1024 * 1024
SPOOL_FULL_RETRY_AFTER_S = 1
MOYSKLAD_PATH = "/moysklad/webhook/"  # + the secret
# A delivery its handler refused (a SKU not mapped yet, a body it cannot read) is tried again after
# this, doubled at each attempt up to the most: its attempts are spaced in time, so that a mapping
# loaded meanwhile (read again every LEDGER_ADAPTERS_MAPPINGS_REFRESH_S) is seen before it is given
# up. Counted in rounds, a busy inbox gave one up within a second.
INBOX_RETRY_FIRST_S = 5.0
INBOX_RETRY_MAX_S = 300.0
WMS_PATH = "/wms/status"  # + "/" and the secret, or signed
# Refused in the text the adapters keep as keys: PostgreSQL cannot store a NUL in text at all, and
# the other control characters are no one's id, only a way to make logs and keys ambiguous.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def store_delivery(recorder: Any, source: str, delivery_id: str, payload: Any) -> bool:
    """Stores one delivery in the inbox, waiting for the database as long as it takes; False if that
    delivery id was stored before (a redelivery). The receiver uses DeliveryStore instead."""
    delivery = Delivery(source, delivery_id, now_text(), orjson.dumps(payload).decode())
    with transaction(recorder) as tx:
        return insert_delivery(tx, delivery)


def _problem(
    status: int, type_: str, title: str, detail: str = "", headers: dict[str, str] | None = None
) -> Reply:
    body = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    headers = dict(headers or {})
    if status == 503:
        headers["Retry-After"] = str(SPOOL_FULL_RETRY_AFTER_S)
    return Reply(status, body, headers=headers, content_type=PROBLEM_MEDIA_TYPE)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class WebhookAccess:
    """How each webhook and /metrics are authenticated, and which Host names are answered."""

    moysklad_secret: str | None = None  # POST /moysklad/webhook/<secret>
    wms_secret: str | None = None  # POST /wms/status/<secret>
    wms_signature: SignatureScheme | None = None  # POST /wms/status, signed
    allowed_hosts: frozenset[str] | None = None  # None: any Host (ledger.access.hosts)
    metrics_guard: MetricsGuard | None = None  # None: /metrics is open


class WebhookReceiver:
    """The HTTP side: POST /moysklad/webhook/<secret>, POST /wms/status/<secret> or /wms/status
    signed, GET /metrics, GET /healthz."""

    def __init__(self, recorder: Any, access: WebhookAccess, store: DeliveryStore | None = None) -> None:
        self.recorder = recorder
        self.store = store
        self.access = access
        # (path prefix, the secret's digest, source): the secret is what follows the prefix.
        self.secret_paths: list[tuple[str, bytes, str]] = []
        if access.moysklad_secret:
            self.secret_paths.append((MOYSKLAD_PATH, _digest(access.moysklad_secret), "moysklad"))
        if access.wms_secret:
            self.secret_paths.append((WMS_PATH + "/", _digest(access.wms_secret), "wms"))

    # The app (webhook_app.py) routes each request to one of these; `delivery` takes every webhook.

    def host_refusal(self, request: Request, host_lines: int = 1, http_version: str = "1.1") -> Reply | None:
        """400 for a Host this service is not reached by (LEDGER_ALLOWED_HOSTS), and whatever they
        allow for more than one Host line or none past HTTP/1.0 (RFC 9112 §3.2:
        ledger.access.hosts); probes never ask."""
        if (lines_refused := host_lines_refusal(host_lines, http_version)) is not None:
            return _problem(400, "invalid-host", "Host not allowed", lines_refused)
        if self._host_allowed(request):
            return None
        return _problem(400, "invalid-host", "Host not allowed", NOT_ALLOWED_DETAIL)

    def healthz(self) -> Reply:
        return Reply(200, {"status": "ok"})

    def not_found(self) -> Reply:
        return _problem(404, "not-found", "Not found")

    def stopping(self) -> Reply:
        return _problem(503, "stopping", "The receiver is stopping", "send it again")

    def incomplete(self) -> Reply:
        return _problem(
            400, "incomplete-body", "Incomplete body", "the connection ended before the whole body arrived"
        )

    def over_capacity(self) -> Reply:
        """Past LEDGER_ADAPTERS_HTTP_CONNECTIONS_MAX (the server marks the request), as the API's
        `over-capacity`: the connection closed, the sender told to come back."""
        return _problem(
            503,
            "over-capacity",
            "Too many connections",
            "the receiver holds LEDGER_ADAPTERS_HTTP_CONNECTIONS_MAX connections or requests now; "
            "send it again",
            {"Connection": "close"},
        )

    def failed(self) -> Reply:
        """What a request that failed here is answered: no detail, which could carry a secret."""
        return _problem(500, "internal-error", "Internal error")

    def too_large(self) -> Reply:
        return _problem(413, "delivery-too-large", "Content too large", f"at most {DELIVERY_BYTES_MAX} bytes")

    def takes(self, path: str) -> bool:
        """Whether a POST to `path` is a webhook's (its secret compared in constant time)."""
        return self._source(path) is not None

    def delivery(self, request: Request) -> Reply:
        """A webhook's POST: authenticated, checked, stored durably, answered."""
        received_at = now_text()
        source = self._source(request.path)
        if source is None:
            return self.not_found()
        if len(request.body) > DELIVERY_BYTES_MAX:
            return self.too_large()
        signature = self.access.wms_signature
        if request.path == WMS_PATH:
            assert signature is not None, "_source answers the signed path only with a scheme"
            if not signature.verifies(request.body, request.header(signature.header)):
                return _problem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    f"the {signature.header} header is missing or is not the body's HMAC-SHA256",
                )
        try:
            payload = request.json()
        except ValueError:
            return _problem(400, "delivery-malformed", "The body is not JSON")
        complaint = _malformed(source, payload)
        delivery_id, id_field = _delivery_id(source, request, payload)
        if not complaint and CONTROL_CHARACTER.search(delivery_id):
            complaint = f"`{id_field}`, the delivery's id, holds a control character"
        if complaint:
            return _problem(400, "delivery-malformed", "The delivery is malformed", complaint)
        try:
            payload_text = orjson.dumps(payload).decode()
        except orjson.JSONEncodeError:  # parsed, but not stored or read back as the same JSON
            return _problem(
                400,
                "delivery-malformed",
                "The delivery is malformed",
                "the body holds an integer beyond 64 bits or an unpaired surrogate (\\ud800-\\udfff)",
            )
        delivery = Delivery(source, delivery_id, received_at, payload_text)
        try:
            stored_in = self._store(delivery)
        except SpoolFull as error:
            log.error("ALERT %s delivery %s refused: %s", source, delivery.delivery_id, error)
            return _problem(503, "spool-full", "The webhook spool is full", str(error))
        if stored_in == "before":
            log.info("%s delivery %s received again: already stored", source, delivery.delivery_id)
        return Reply(200, {"stored": stored_in})

    def _source(self, path: str) -> str | None:
        """Whose webhook this path is, its secret compared in constant time; None for any other."""
        found = None
        for prefix, secret_digest, source in self.secret_paths:
            given = path[len(prefix) :] if path.startswith(prefix) else ""
            if hmac.compare_digest(_digest(given), secret_digest) and given:
                found = source
        if found is None and path == WMS_PATH and self.access.wms_signature is not None:
            found = "wms"
        return found

    def _host_allowed(self, request: Request) -> bool:
        host = request.header("Host")
        return host_allowed(self.access.allowed_hosts, host.encode("latin-1", "replace") if host else None)

    def metrics(self, request: Request) -> Reply:
        guard = self.access.metrics_guard
        if guard is not None and (refused := guard(request.header("Authorization"))) is not None:
            return _problem(
                401, "unauthorized", "Unauthorized", refused, {"WWW-Authenticate": WWW_AUTHENTICATE}
            )
        return Reply(200, metrics_text(self.recorder), content_type="text/plain; version=0.0.4")

    def _store(self, delivery: Delivery) -> str:
        if self.store is not None:
            return self.store.store(delivery).value
        with transaction(self.recorder) as tx:  # no spool (tests of the processing only)
            return "database" if insert_delivery(tx, delivery) else "before"


def _malformed(source: str, payload: Any) -> str | None:
    """What makes a delivery unusable whatever is retried: the documented shape is missing."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    events = payload.get("events")
    if source == "moysklad" and isinstance(events, list) and not all(isinstance(e, dict) for e in events):
        return "each entry of a MoySklad webhook's `events` is an object (md/dictionaries/_webhook.md)"
    if (
        source == "moysklad"
        and not isinstance(payload.get("events"), list)
        and not isinstance(payload.get("reportUrl"), str)
    ):
        return (
            "a MoySklad webhook carries an `events` array (md/dictionaries/_webhook.md), a stock "
            "webhook a `reportUrl` (md/dictionaries/_webhookstock.md)"
        )
    if source == "wms" and not (payload.get("id") and payload.get("status")):
        return "a WMS status delivery carries `id` and `status`"
    if source == "wms":  # both are keys of the WMS's picking orders as the adapters keep them
        for field in ("id", "status"):
            if CONTROL_CHARACTER.search(str(payload[field])):
                return f"`{field}` holds a control character"
    return None


def _delivery_id(source: str, request: Request, payload: Any) -> tuple[str, str]:
    """The delivery's id, and which field of the request it is (to name it in a refusal)."""
    if source == "moysklad":
        request_ids = request.query.get("requestId")
        if request_ids and request_ids[0]:
            return request_ids[0][:DELIVERY_ID_CHARS_MAX], "requestId"
    for header in ("X-Request-Id", "Idempotency-Key"):
        value = request.header(header)
        if value:
            return value[:DELIVERY_ID_CHARS_MAX], header
    if source == "wms" and isinstance(payload, dict) and payload.get("id") and payload.get("status"):
        return f"{payload['id']}:{payload['status']}"[:DELIVERY_ID_CHARS_MAX], "id"
    return hashlib.sha256(request.body).hexdigest(), "body"


Handler = Callable[[Any], None]


class InboxWorker:
    def __init__(
        self,
        recorder: Any,
        handlers: dict[str, Handler],
        *,
        batch_max: int = 100,
        retries_max: int = 5,
        backoff: Backoff | None = None,
        poll_interval_s: float = 0.5,
        spool: DeliverySpool | None = None,
        settle_s: float = 0.0,
        retry_first_s: float = INBOX_RETRY_FIRST_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.recorder = recorder
        self.retry_first_s = retry_first_s
        self.clock = clock
        self.handlers = handlers
        self.batch_max = batch_max
        self.retries_max = retries_max
        self.backoff = backoff or Backoff(0.5, 30.0, jitter=RETRY_JITTER)
        self.poll_interval_s = poll_interval_s
        self.spool = spool
        self.settle_s = settle_s
        self.stopper = Stopper()

    def run_forever(self) -> None:
        failures_in_a_row = 0
        while not self.stopper.stopped:
            try:
                done, retry_later = self.run_once()
            except Exception:
                log.exception("inbox round failed")
                done, retry_later = 0, 1
            failures_in_a_row = failures_in_a_row + 1 if retry_later and not done else 0
            if failures_in_a_row:
                self.stopper.sleep(self.backoff.delay_s(failures_in_a_row))
            elif not done:
                self.stopper.sleep(self.poll_interval_s)

    def stop(self) -> None:
        self.stopper.stop()

    def run_once(self) -> tuple[int, int]:
        """Moves spooled deliveries into the inbox, then processes the settled pending ones;
        returns (processed, left for later)."""
        now = self.clock()
        settled_at, now_at = utc_text(now - timedelta(seconds=self.settle_s)), utc_text(now)
        self.drain_spool()
        # A page per source, each in the order it arrived: a system that is down holds back its
        # own deliveries only, however many of them wait (one page across sources could be all
        # of that system's, every round).
        rows: list[Any] = []
        with transaction(self.recorder) as tx:
            for source in self.handlers:
                rows += tx.fetchall(
                    "SELECT source, delivery_id, payload, attempts FROM adapter_inbox WHERE "
                    "processed_at IS NULL AND received_at <= %s AND source = %s "
                    "AND (next_attempt_at IS NULL OR next_attempt_at <= %s) "
                    "ORDER BY received_at, delivery_id LIMIT %s",
                    (settled_at, source, now_at, self.batch_max),
                )
        done = retry_later = 0
        waiting: set[str] = set()  # sources whose system is unavailable: the rest of theirs waits
        for row in rows:
            source, delivery_id, attempts = row["source"], row["delivery_id"], int(row["attempts"]) + 1
            if source in waiting:
                retry_later += 1
                continue
            try:
                self.handlers[source](orjson.loads(row["payload"]))
            except ForeignUrl as error:  # forged, or the base URL is wrong: no retry can help
                self._attempted(source, delivery_id, attempts, str(error), give_up=True)
                done += 1
                continue
            except TargetUnavailable as error:
                retry_later += 1
                self._attempted(source, delivery_id, attempts, str(error), give_up=False)
                log.warning("%s delivery %s: will retry: %s", source, delivery_id, error)
                # Its source's later deliveries wait, in order, for the next round; the other
                # sources' go on (one system's outage held them all back).
                waiting.add(source)
                continue
            except SinkError as error:
                retry_later += 1
                self._attempted(source, delivery_id, attempts, str(error), give_up=False)
                log.warning("%s delivery %s: will retry: %s", source, delivery_id, error)
                break  # the ledger itself: every delivery waits, in order, for the next round
            except Exception as error:
                if is_database_unavailable(error):
                    raise  # not this delivery's fault: the round fails, every delivery waits
                # Refused (ValueError, KeyError, TypeError: a SKU not mapped yet, a body it cannot
                # read) or failed unexpectedly: either way a failed attempt of this row only, so
                # that one odd delivery cannot hold every delivery behind it back for ever.
                if not isinstance(error, (ValueError, KeyError, TypeError)):
                    log.exception("%s delivery %s: the handler failed", source, delivery_id)
                give_up = self._failed_attempt(source, delivery_id, attempts, error)
                if give_up:
                    done += 1
                else:
                    retry_later += 1
                continue
            self._processed(source, delivery_id, attempts)
            done += 1
        return done, retry_later

    def _failed_attempt(self, source: str, delivery_id: str, attempts: int, error: Exception) -> bool:
        """Records a failed attempt, the next one spaced in time; True if it was the last allowed."""
        give_up = attempts >= self.retries_max
        wait_s = min(self.retry_first_s * 2 ** (attempts - 1), INBOX_RETRY_MAX_S)
        self._attempted(
            source,
            delivery_id,
            attempts,
            f"{type(error).__name__}: {error}",
            give_up=give_up,
            next_attempt_at=utc_text(self.clock() + timedelta(seconds=wait_s)),
        )
        return give_up

    def drain_spool(self) -> int:
        """Stores up to `batch_max` spooled deliveries in the inbox, oldest first; returns how many
        files it took. A file is deleted only after its row is committed."""
        if self.spool is None:
            return 0
        taken = 0
        with self.spool.draining() as mine:
            if not mine:
                return 0  # another process drains this spool now
            for path in self.spool.pending(self.batch_max):
                try:
                    delivery = self.spool.read(path)
                except (UnreadableSpoolFile, OSError) as error:
                    self._set_aside(path, str(error))
                    continue
                try:
                    with transaction(self.recorder) as tx:
                        insert_delivery(tx, delivery)
                except Exception as error:
                    if not is_data_error(error):
                        raise  # the database unavailable: the file waits for the next round
                    self._set_aside(path, f"the database refuses it: {type(error).__name__}: {error}")
                    continue
                self.spool.remove(path)
                taken += 1
        if taken:
            log.info("moved %d spooled delivery(ies) into the inbox", taken)
        return taken

    def _set_aside(self, path: Any, reason: str) -> None:
        assert self.spool is not None
        target = self.spool.set_aside(path)
        with transaction(self.recorder) as tx:
            journal(tx, "inbox", "alert", f"spool file {path.name}", f"set aside as {target}: {reason}")
        log.error("ALERT spool file %s set aside as %s: %s", path, target, reason)

    def _processed(self, source: str, delivery_id: str, attempts: int) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_inbox SET processed_at = %s, attempts = %s WHERE source = %s AND "
                "delivery_id = %s",
                (now_text(), attempts, source, delivery_id),
            )

    def _attempted(
        self,
        source: str,
        delivery_id: str,
        attempts: int,
        reason: str,
        *,
        give_up: bool,
        next_attempt_at: str | None = None,
    ) -> None:
        """`next_attempt_at`: not tried again before then (None: in the next round)."""
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_inbox SET attempts = %s, last_error = %s, processed_at = %s, "
                "next_attempt_at = %s WHERE source = %s AND delivery_id = %s",
                (
                    attempts,
                    mask(reason)[:2000],
                    now_text() if give_up else None,
                    next_attempt_at,
                    source,
                    delivery_id,
                ),
            )
            if give_up:
                journal(
                    tx,
                    source,
                    "alert",
                    f"delivery {delivery_id}",
                    f"given up after {attempts} attempts: {reason}",
                )
        if give_up:
            log.error(
                "ALERT %s delivery %s given up after %d attempts: %s", source, delivery_id, attempts, reason
            )
