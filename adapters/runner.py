"""Wires the adapters from the settings: outbound workers, the webhook receiver, the inbox and the WMS poller.

Each outbound target runs in its own thread from its own tracked position, never inside a request
of the ledger's API. `ledger adapters run` is the process that hosts them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.bitrix import BitrixConfig, BitrixTarget, Supplier
from adapters.db import open_database
from adapters.http import HttpClient
from adapters.inbound import InboxWorker, WebhookAccess, WebhookReceiver
from adapters.limits import RETRY_JITTER, Stopper
from adapters.mappings import Mappings
from adapters.masking import remember_settings, secret_safe_logger
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.moysklad_stock import StockWebhook, is_stock_notification
from adapters.outbound import OutboundWorker, Target, TargetUnavailable, WorkerLimits
from adapters.signatures import SignatureScheme
from adapters.sink import EventSink, LedgerSink
from adapters.spool import DeliverySpool, default_spool_dir
from adapters.webhook_server import ServerLimits, WebhookServer
from adapters.webhook_store import DeliveryStore
from adapters.wms import WmsClient, WmsConfig, WmsPickingTarget
from adapters.wms_inbound import WmsArrivals, WmsInboundTarget
from adapters.wms_statuses import WmsStatusProcessor
from ledger.access.book import TokenBook
from ledger.access.hosts import allowed_hosts, is_loopback
from ledger.access.metrics import metrics_guard
from ledger.backoff import Backoff
from ledger.cli_errors import CommandError
from ledger.config import Settings

log = secret_safe_logger("adapters.runner")

# RFC 3986's unreserved characters: a path segment every sender sends as it is, never encoded.
# RFC 3986's path characters (pchar) but `%`: what a sender puts in a path segment as it is. A
# base64 secret's `+` and `=` are among them; its `/` is not, nor a space or a non-ASCII letter.
WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")
WEBHOOK_SECRET_CHARACTERS = "A-Za-z0-9 and ._~!$&'()*+,;=:@-"


def worker_limits(settings: Settings) -> WorkerLimits:
    return WorkerLimits(
        read_events_max=settings.adapters_read_events_max,
        retries_max=settings.adapters_retries_max,
        request_retries_max=settings.adapters_request_retries_max,
        backoff_initial_s=settings.adapters_backoff_initial_ms / 1000,
        backoff_max_s=settings.adapters_backoff_max_ms / 1000,
        poll_interval_s=settings.adapters_poll_interval_ms / 1000,
    )


def bitrix_config(settings: Settings) -> BitrixConfig | None:
    if not settings.bitrix_webhook_url:
        return None
    return BitrixConfig(
        webhook_url=settings.bitrix_webhook_url,
        push=frozenset(part.strip() for part in settings.bitrix_push.split(",")),
        batch_commands_max=settings.bitrix_batch_commands_max,
        burst_requests_max=settings.bitrix_burst_requests_max,
        requests_per_s=settings.bitrix_requests_per_s,
        timeout_s=settings.bitrix_timeout_s,
        document_currency=settings.bitrix_document_currency,
        responsible_id=settings.bitrix_responsible_id,
        store_amount=settings.bitrix_store_amount,
        receipt_supplier=Supplier.parse(settings.bitrix_receipt_supplier),
        channel=settings.bitrix_channel,
    )


def moysklad_config(settings: Settings) -> MoySkladConfig | None:
    if not settings.moysklad_token:
        return None
    return MoySkladConfig(
        base_url=settings.moysklad_base_url,
        token=settings.moysklad_token,
        requests_per_window=settings.moysklad_requests_per_window,
        window_s=settings.moysklad_window_s,
        parallel_max=settings.moysklad_parallel_max,
        timeout_s=settings.moysklad_timeout_s,
        organization_id=settings.moysklad_organization_id,
        agent_id=settings.moysklad_agent_id,
    )


def wms_config(settings: Settings) -> WmsConfig | None:
    if not settings.wms_base_url or not settings.wms_api_key:
        return None
    return WmsConfig(
        settings.wms_base_url,
        settings.wms_api_key,
        settings.wms_requests_per_s,
        settings.wms_timeout_s,
        settings.wms_stock_per_page,
        settings.wms_stock_pages_max,
    )


@dataclass
class Adapters:
    recorder: Any
    mappings: Mappings
    workers: dict[str, OutboundWorker] = field(default_factory=dict)
    inbox: InboxWorker | None = None
    wms_status: WmsStatusProcessor | None = None
    wms_arrivals: WmsArrivals | None = None
    moysklad_catch_up: MoySkladCatchUp | None = None
    receiver: WebhookReceiver | None = None
    delivery_store: DeliveryStore | None = None
    tokens: TokenBook | None = None  # with LEDGER_METRICS_AUTH=required: who may read /metrics
    http_clients: list[HttpClient] = field(default_factory=list)  # one per target, kept open for reuse

    def close_connections(self) -> None:
        """Closes the targets' kept connections: after the threads that use them have stopped."""
        for client in self.http_clients:
            client.close()


def build_adapters(settings: Settings, sink: EventSink | None = None, recorder: Any = None) -> Adapters:
    """Every configured adapter; inbound ones need a sink to record their events in."""
    remember_settings(settings)
    recorder = recorder or open_database(
        settings.database_url, settings.db_pool_size, settings.db_lock_timeout_s
    )
    mappings = Mappings(recorder, settings.adapters_mappings_refresh_s)
    adapters = Adapters(recorder, mappings)
    limits = worker_limits(settings)
    targets: list[Target] = []
    handlers: dict[str, Callable[[Any], None]] = {}
    if (bitrix := bitrix_config(settings)) is not None:
        bitrix_target = BitrixTarget(recorder, mappings, bitrix)
        targets.append(bitrix_target)
        adapters.http_clients.append(bitrix_target.client.http)
    if (moysklad := moysklad_config(settings)) is not None:
        if not (moysklad.organization_id and moysklad.agent_id):
            # Else every customer order would be refused by MoySklad, and parked, one by one.
            raise CommandError(
                "LEDGER_MOYSKLAD_ORGANIZATION_ID and LEDGER_MOYSKLAD_AGENT_ID are required with "
                "LEDGER_MOYSKLAD_TOKEN: MoySklad creates no customer order without its organization "
                "and counterparty"
            )
        client = MoySkladClient(moysklad)
        adapters.http_clients.append(client.http)
        targets.append(MoySkladOrdersTarget(recorder, mappings, client))
        if sink is not None:
            demands = DemandSync(recorder, mappings, client, sink)
            order_ends = OrderEnds(recorder, mappings, client, sink)
            handlers["moysklad"] = moysklad_handler(
                demands, order_ends, StockWebhook(recorder, mappings, client)
            )
            if settings.moysklad_catch_up_s > 0:
                adapters.moysklad_catch_up = MoySkladCatchUp(recorder, client, demands, order_ends)
    if (wms := wms_config(settings)) is not None:
        wms_client = WmsClient(wms)
        adapters.http_clients.append(wms_client.http)
        targets.append(WmsPickingTarget(recorder, mappings, wms_client))
        targets.append(WmsInboundTarget(recorder, mappings, wms_client))
        if sink is not None:
            adapters.wms_status = WmsStatusProcessor(
                recorder, mappings, sink, wms_client, settings.wms_poll_orders_max
            )
            adapters.wms_arrivals = WmsArrivals(
                recorder, mappings, sink, wms_client, settings.wms_poll_orders_max
            )
            handlers["wms"] = adapters.wms_status.handle_delivery
    for target in targets:
        adapters.workers[target.name] = OutboundWorker(recorder, target, limits)
    spool = webhook_spool(settings)
    if handlers:
        adapters.inbox = InboxWorker(
            recorder,
            handlers,
            batch_max=settings.adapters_inbox_batch_max,
            retries_max=settings.adapters_retries_max,
            backoff=Backoff(limits.backoff_initial_s, limits.backoff_max_s, jitter=RETRY_JITTER),
            spool=spool,
            settle_s=settings.adapters_inbox_settle_ms / 1000,
        )
    adapters.delivery_store = DeliveryStore(
        recorder,
        spool,
        database_wait_s=settings.adapters_webhook_database_wait_ms / 1000,
        attempts_max=settings.adapters_webhook_database_attempts_max,
    )
    if settings.metrics_auth == "required":
        adapters.tokens = TokenBook(
            recorder,
            refresh_interval_s=settings.auth_refresh_ms / 1000,
            last_use_flush_s=settings.auth_last_use_flush_s,
        )
    adapters.receiver = WebhookReceiver(
        recorder, webhook_access(settings, adapters.tokens), adapters.delivery_store
    )
    return adapters


def refuse_unusable_webhook_secrets(settings: Settings) -> None:
    """A webhook secret is the last segment of its URL's path, compared as received: one with a
    `/`, or a character a sender percent-encodes (a space, `%`, `?`, `#`, a non-ASCII letter), is
    never matched, and every delivery is a 404. Refused by the variable's name; the secret itself is
    never shown."""
    for variable, secret in (
        ("LEDGER_MOYSKLAD_WEBHOOK_SECRET", settings.moysklad_webhook_secret),
        ("LEDGER_WMS_WEBHOOK_SECRET", settings.wms_webhook_secret),
    ):
        if secret is not None and not (WEBHOOK_SECRET_PATTERN.fullmatch(secret) and secret.strip(".")):
            raise CommandError(
                f"{variable} must be made of {WEBHOOK_SECRET_CHARACTERS} only (not only dots): it is a "
                "URL path segment, and any other character makes every delivery a 404"
            )


def webhook_access(settings: Settings, tokens: TokenBook | None) -> WebhookAccess:
    """The webhooks' own secrets, the Host names answered, and who reads /metrics (with `tokens`)."""
    refuse_unusable_webhook_secrets(settings)
    key = settings.wms_webhook_signing_key
    return WebhookAccess(
        moysklad_secret=settings.moysklad_webhook_secret,
        wms_secret=settings.wms_webhook_secret,
        wms_signature=SignatureScheme(
            key.get_secret_value().encode(),
            settings.wms_webhook_signature_header,
            settings.wms_webhook_signature_prefix,
            settings.wms_webhook_signature_encoding,
        )
        if key is not None
        else None,
        allowed_hosts=allowed_hosts(settings.allowed_hosts),
        metrics_guard=metrics_guard(tokens, required=settings.auth == "required") if tokens else None,
    )


def webhook_spool(settings: Settings) -> DeliverySpool:
    """The spool of deliveries the database could not take in time (adapters/spool.py)."""
    if settings.adapters_webhook_database_wait_ms >= settings.adapters_webhook_deadline_ms:
        raise CommandError(
            "LEDGER_ADAPTERS_WEBHOOK_DATABASE_WAIT_MS must be below LEDGER_ADAPTERS_WEBHOOK_DEADLINE_MS: "
            "a delivery the database cannot take must still reach the spool before the deadline"
        )
    directory = (
        Path(settings.adapters_spool_dir)
        if settings.adapters_spool_dir
        else default_spool_dir(settings.database_url)
    )
    return DeliverySpool(directory, settings.adapters_spool_deliveries_max)


def moysklad_handler(
    demands: DemandSync, order_ends: OrderEnds, stock: StockWebhook
) -> Callable[[Any], None]:
    """MoySklad posts both kinds to one URL: entity notifications (`events`: demands, customer
    orders) and stock ones (`reportUrl`). A delivery tried again is harmless to both entity kinds:
    each records a change once."""

    def handle(delivery: Any) -> None:
        if is_stock_notification(delivery):
            stock.handle(delivery)
        else:
            demands.handle(delivery)
            order_ends.handle(delivery)

    return handle


class Runner:
    """Runs the adapters' threads until stopped."""

    def __init__(self, adapters: Adapters, settings: Settings) -> None:
        self.adapters = adapters
        self.settings = settings
        self.stopper = Stopper()
        self.threads: list[threading.Thread] = []
        self.server: WebhookServer | None = None

    def start(self) -> Runner:
        check_portals(self.adapters)
        for name, worker in self.adapters.workers.items():
            self._thread(f"push-{name}", worker.run_forever)
        if self.adapters.inbox is not None:
            self._thread("inbox", self.adapters.inbox.run_forever)
        if self.adapters.wms_status is not None:
            self._thread("wms-poll", self._poll_wms)
        if self.adapters.moysklad_catch_up is not None:
            self._thread("moysklad-catch-up", self._catch_up_moysklad)
        if self.adapters.receiver is not None:
            if self.adapters.tokens is not None:
                self.adapters.tokens.start()  # reads the tokens now: a failure here fails the start
            host = self.settings.adapters_http_host
            self.server = WebhookServer(
                self.adapters.receiver, ServerLimits.of(self.settings), self.settings.adapters_http_port, host
            ).start()
            log.info("webhooks and /metrics on %s", self.server.url)
            if not is_loopback(host) and self.settings.allowed_hosts is None:
                log.warning(
                    "listening on %s, but only requests for localhost, 127.0.0.1 or [::1] are answered: "
                    "set LEDGER_ALLOWED_HOSTS to the names MoySklad, the WMS and the scraper reach "
                    "this by (or *)",
                    host,
                )
        return self

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _poll_wms(self) -> None:
        assert self.adapters.wms_status is not None
        while not self.stopper.sleep(self.settings.wms_poll_interval_s):
            try:
                self.adapters.wms_status.poll()
            except (TargetUnavailable, Exception) as error:  # noqa: BLE001 - polled again next interval
                log.warning("wms status poll failed: %s", error)
            if self.adapters.wms_arrivals is not None:
                try:
                    self.adapters.wms_arrivals.poll()
                except (TargetUnavailable, Exception) as error:  # noqa: BLE001 - polled again next interval
                    log.warning("wms arrivals poll failed: %s", error)

    def _catch_up_moysklad(self) -> None:
        assert self.adapters.moysklad_catch_up is not None
        while not self.stopper.sleep(self.settings.moysklad_catch_up_s):
            try:
                self.adapters.moysklad_catch_up.run_once(lambda: self.stopper.stopped)
            except Exception as error:  # noqa: BLE001 - MoySklad or the ledger away: next interval
                log.warning("moysklad catch-up failed: %s", error)

    def stop(self) -> None:
        self.stopper.stop()
        for worker in self.adapters.workers.values():
            worker.stop()
        if self.adapters.inbox is not None:
            self.adapters.inbox.stop()
        if self.server is not None:
            self.server.stop()
        if self.adapters.tokens is not None:
            self.adapters.tokens.stop()
        if self.adapters.delivery_store is not None:
            self.adapters.delivery_store.close()
        for thread in self.threads:
            thread.join(10)
        for worker in self.adapters.workers.values():
            worker.release_lease()
        self.adapters.close_connections()


def check_portals(adapters: Adapters) -> None:
    """What is checked of the targets at start: Bitrix's inventory management mode (logged)."""
    for worker in adapters.workers.values():
        if isinstance(worker.target, BitrixTarget):
            worker.target.check_mode()


def ledger_sink(settings: Settings) -> tuple[EventSink, Any]:
    """An in-process ledger to record inbound events in (started); returns (sink, ledger)."""
    from ledger.bootstrap import build_ledger

    ledger = build_ledger(settings)
    ledger.start()
    return LedgerSink(ledger), ledger
