"""MoySklad (JSON API 1.2): the client, and customer orders out.

Demands (shipments) in: moysklad_demands.py; the webhook registry: moysklad_webhooks.py; the stock
report for reconciliation: snapshots.py and moysklad_stock.py.

What the public documentation says, and where (moysklad/api-remap-1.2-doc on GitHub, the source
of dev.moysklad.ru/doc/api/remap/1.2):

- Limits (md/_restrictions.md): at most 45 requests per 3-second period, at most 5 parallel
  requests per user or solution, at most 1000 elements in an array; `report/stock/all` costs
  5 units of the 3-second budget (we count it as 5 requests). Past a limit the answer is 429; the
  headers X-RateLimit-Limit, X-RateLimit-Remaining, X-Lognex-Retry-TimeInterval and
  X-Lognex-Retry-After (milliseconds until the limit resets) come with it (md/_general.md).
- Webhooks (md/dictionaries/_webhook.md): a POST to our URL with `?requestId=...` and a body
  `{"auditContext": {...}, "events": [{"meta": {"type", "href"}, "action": "CREATE"|"UPDATE"|...,
  "accountId"}]}`; MoySklad expects 200 or 204 within 1500 ms, then tries 3 more times; a
  redelivery keeps the same requestId, and the docs advise to separate receiving from processing.
  So the receiver only stores the delivery (keyed by requestId) and answers; a worker processes it.
- The stock report (md/reports/_report_stock.md): `GET report/stock/all`, rows with `meta` (the
  product or variant), `stock` (on hand), `reserve`, `inTransit`, `quantity` (available = stock -
  reserve); `filter=store=<store href>` narrows it to one store. Its `quantityMode` filter
  defaults to `nonEmpty`, which leaves out every row whose *available* quantity is 0, a fully
  reserved item among them: we always send `quantityMode=all`. Pages of `limit` (1 to 1000,
  default 1000) from `offset`; `meta.size` is the whole report's row count and `meta.nextHref`
  is present while more pages follow (md/_general.md). Even then the report is not a complete
  list of products: it leaves out products whose stock is not recomputed yet and those the user
  may not see, so a product missing from it is unknown, not 0 (reconcile.py).
- Headers (md/_general.md, md/_errors.md): responses are gzip'ed and a request without
  `Accept-Encoding: gzip` is answered 415; error 1062 says the only `Accept` supported is
  `application/json;charset=utf-8`, which we send.
- Seed 001: customerorder needs `organization`, `agent` and `positions` with `assortment` (a
  product or variant meta) and `quantity`; a partial shipment is a demand with fewer items linked
  to the customer order; dates are in Moscow time (UTC+3) as `YYYY-MM-DD HH:MM:SS[.mmm]`.

Idempotency: a customer order's `externalCode` is the ledger order id; before creating one we look
it up (`filter=externalCode=...;store=...`: a reservation across stores is an order at each of its
stores under one order id), so a retried push never creates a duplicate. Only one worker
pushes at a time (a lease in adapter_positions), so the lookup and the create do not race.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from adapters.http import HttpClient, Response, TransportError
from adapters.limits import SlidingWindow
from adapters.mappings import Mappings
from adapters.masking import secret_safe_logger
from adapters.outbound import RETRY_AFTER_S_MAX, Failure, Item, TargetUnavailable
from ledger.access.scopes import ADAPTER_PRINCIPAL_PREFIX
from ledger.domain.model import Entry, EventType, ReservationStatus
from ledger.sql import SqlTx

log = secret_safe_logger("adapters.moysklad")

SYSTEM = "moysklad"
SOURCE = "moysklad"
PRINCIPAL = ADAPTER_PRINCIPAL_PREFIX + SYSTEM  # who recorded a shipment, in the history
ORDER_KEY = "order:"
MOSCOW = timezone(timedelta(hours=3), "MSK")
REPORT_PAGE_MAX = 1000
# One store's report of at most a million rows: past it the read fails. (Each page after the first
# starts one row early, at the last row read: 1000 new rows, then 999 a page.)
REPORT_ROWS_MAX = 1_000_000
REPORT_PAGES_MAX = 1 + -(-(REPORT_ROWS_MAX - REPORT_PAGE_MAX) // (REPORT_PAGE_MAX - 1))
REPORT_REQUEST_WEIGHT = 5  # _restrictions.md: report/stock/all weighs 5 units
ACCEPT = "application/json;charset=utf-8"  # _errors.md, error 1062: the only value accepted
# _webhook.md and _webhookstock.md ("Заголовок временного отключения через API"): a request carrying
# it, with any value, notifies no webhook, so the ledger's own writes do not come back to it.
WEBHOOK_DISABLE_HEADER = "X-Lognex-WebHook-Disable"
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
MEDIA_TYPE = "application/json"
CLOSED_STATUSES = frozenset({"released", "expired"})  # a reservation that holds nothing any more
WINDOW_MARGIN_S = 0.1
ORDER_POSITIONS_MAX = 1000  # _restrictions.md: at most 1000 elements in an array


@dataclass(frozen=True, slots=True)
class MoySkladConfig:
    base_url: str
    token: str
    requests_per_window: int = 45
    window_s: float = 3.0
    parallel_max: int = 5
    timeout_s: float = 10.0
    organization_id: str | None = None
    agent_id: str | None = None


def parse_moment(text: str) -> datetime:
    """MoySklad's `2026-11-22 10:15:00.000` (Moscow time) as an aware datetime."""
    return datetime.fromisoformat(text.strip().replace(" ", "T")).replace(tzinfo=MOSCOW)


def second_text(moment: datetime) -> str:
    """A moment to the second, in Moscow time: how a list's `updated>=` filter takes it."""
    return moment.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")


# The demand catch-up's pages (adapters/moysklad_catchup.py): MoySklad's largest, and how many.
DEMAND_PAGE_ROWS = 1000
DEMAND_PAGES_MAX = 100


def format_moment(moment: datetime) -> str:
    """An aware datetime in MoySklad's format and time zone (for filters such as `updated>=`)."""
    return moment.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def entity_id(href: str) -> tuple[str, str]:
    """`.../entity/variant/<id>?expand=...` -> ("variant", "<id>")."""
    path = href.split("?", 1)[0].rstrip("/")
    parts = path.split("/")
    return parts[-2], parts[-1]


def pause_after_429_s(retry_ms: str | None, window_s: float) -> float:
    """How long every thread of a client sends nothing after a 429: the milliseconds MoySklad names
    (X-Lognex-Retry-After), at most RETRY_AFTER_S_MAX, or the rate window when the header is absent
    or not a number of milliseconds. A remote header must not stall the client (and the inbox thread
    that shares it with the WMS's deliveries) for a day, nor fail it with an error of its own."""
    try:
        retry_s = float(retry_ms) / 1000 if retry_ms else window_s
    except ValueError:
        return window_s
    if not math.isfinite(retry_s) or retry_s < 0:
        return window_s
    return min(retry_s, RETRY_AFTER_S_MAX)


class MoySkladClient:
    def __init__(self, config: MoySkladConfig) -> None:
        self.config = config
        self.http = HttpClient(
            config.base_url, config.timeout_s, {"Authorization": f"Bearer {config.token}", "Accept": ACCEPT}
        )
        # Counted from when we send, while MoySklad counts from when a request arrives: a small margin
        # keeps a request that left late in one window from landing early in the next.
        self.window = SlidingWindow(config.requests_per_window, config.window_s + WINDOW_MARGIN_S)
        self.parallel = threading.BoundedSemaphore(config.parallel_max)
        self.requests_sent = 0

    def meta(self, entity: str, entity_uuid: str) -> dict[str, Any]:
        return {
            "meta": {
                "href": f"{self.http.base_url}entity/{entity}/{entity_uuid}",
                "type": entity,
                "mediaType": "application/json",
            }
        }

    def request(self, method: str, path: str, *, weight: int = 1, **kwargs: Any) -> Response:
        """One request within the limits. Raises TargetUnavailable for no answer, 429 and 5xx.
        Every write carries X-Lognex-WebHook-Disable: what the ledger changes does not echo back."""
        if method in WRITE_METHODS:
            kwargs["headers"] = {WEBHOOK_DISABLE_HEADER: "true", **(kwargs.get("headers") or {})}
        for _ in range(weight):
            self.window.acquire()
        with self.parallel:
            self.requests_sent += 1
            try:
                answer = self.http.request(method, path, **kwargs)
            except TransportError as error:
                raise TargetUnavailable(f"moysklad {method} {path}: {error}") from error
        if answer.status == 429:
            retry_ms = answer.header("X-Lognex-Retry-After") or answer.header("X-Lognex-Retry-TimeInterval")
            retry_s = pause_after_429_s(retry_ms, self.config.window_s)
            self.window.pause(retry_s)  # every thread of this client waits, not only this one
            raise TargetUnavailable(f"moysklad {method} {path}: 429", retry_s)
        if answer.status >= 500:
            raise TargetUnavailable(f"moysklad {method} {path}: HTTP {answer.status}")
        return answer

    def order_positions(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        """A customer order's positions (GET entity/customerorder/{id}/positions): one page holds
        them all, since a document has at most 1000 (_restrictions.md)."""
        answer = self.request(
            "GET", f"entity/customerorder/{order['id']}/positions", params={"limit": ORDER_POSITIONS_MAX}
        )
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad customerorder positions: HTTP {answer.status}")
        return list((answer.json() or {}).get("rows") or [])

    def login(self) -> str:
        """The login (`uid`) of the employee this token acts as (GET context/employee,
        md/dictionaries/_employee.md): what the audit names as the author of the ledger's own
        changes."""
        answer = self.request("GET", "context/employee")
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad context/employee: HTTP {answer.status}")
        uid = (answer.json() or {}).get("uid")
        if not isinstance(uid, str) or not uid:
            raise TargetUnavailable("moysklad context/employee: no uid in the answer")
        return uid

    def find_order(self, external_code: str, store_id: str) -> dict[str, Any] | None:
        """The customer order of one store with this `externalCode` (the ledger's order id). A
        reservation across stores (CONTRACT §6) is an order of each store's part under one order
        id: looked up by the code alone, the second store found the first's order as its own."""
        store_href = self.meta("store", store_id)["meta"]["href"]
        answer = self.request(
            "GET",
            "entity/customerorder",
            params={"filter": f"externalCode={external_code};store={store_href}"},
        )
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad customerorder lookup: HTTP {answer.status}")
        rows = (answer.json() or {}).get("rows") or []
        return rows[0] if rows else None

    def demands_updated_since(
        self, since: datetime, page_rows: int = DEMAND_PAGE_ROWS
    ) -> Iterator[dict[str, Any]]:
        """Every demand updated at or after `since`, oldest change first. Paged by time, not by
        offset: a demand changed while the list is read leaves its place, and every row after it
        moves up, so an offset skips one. Each page asks from the second of the last row read
        (the filter's unit: md/_errors.md, error 1035) and leaves out the ids read in that second
        already. At most DEMAND_PAGES_MAX pages: past them the rest waits for the next catch-up,
        which starts where this one got to."""
        after = since
        seen: set[str] = set()  # the ids read whose `updated` falls in the second of `after`
        for _ in range(DEMAND_PAGES_MAX):
            answer = self.request(
                "GET",
                "entity/demand",
                params={
                    "filter": f"updated>={second_text(after)}",
                    "order": "updated,asc;id,asc",
                    "limit": str(page_rows),
                },
            )
            if answer.status != 200:
                raise TargetUnavailable(f"moysklad demand list: HTTP {answer.status}")
            rows = (answer.json() or {}).get("rows") or []
            fresh = [row for row in rows if row["id"] not in seen]
            yield from fresh
            if len(rows) < page_rows:
                return
            if not fresh:
                raise TargetUnavailable(
                    f"moysklad demand list: more than {page_rows} demands updated in the second of "
                    f"{second_text(after)}: they cannot be paged by time"
                )
            last = parse_moment(rows[-1]["updated"])
            if second_text(last) != second_text(after):
                seen = set()
            after = last
            seen |= {
                row["id"] for row in rows if second_text(parse_moment(row["updated"])) == second_text(last)
            }

    def stock_rows(self, store_id: str | None) -> Iterator[dict[str, Any]]:
        """Every row of report/stock/all (for one store if given), zero available ones included,
        page by page until the report's own row count is reached."""
        conditions = ["quantityMode=all"]
        if store_id:
            conditions.insert(0, f"store={self.meta('store', store_id)['meta']['href']}")
        offset = 0
        first_size: int | None = None
        seen: set[str] = set()
        last_read: str | None = None  # the href of the last row read, once a page was
        for _ in range(REPORT_PAGES_MAX):
            # Pages are read by offset: a row that left the report (or came into it) before the
            # offset between two pages slides the rest by one, so a row would go unread, or be read
            # twice. So each page after the first starts one row early, at the last row read: had
            # the rows before it moved, another row would stand there. A report whose size changed,
            # that listed a row twice, or whose rows moved is refused, as the WMS reader refuses it.
            start = offset if last_read is None else offset - 1
            params = {"filter": ";".join(conditions), "limit": REPORT_PAGE_MAX, "offset": start}
            answer = self.request("GET", "report/stock/all", weight=REPORT_REQUEST_WEIGHT, params=params)
            if answer.status != 200:
                raise TargetUnavailable(
                    f"moysklad report/stock/all: HTTP {answer.status}: {errors_text(answer)}"
                )
            body = answer.json() or {}
            rows = body.get("rows") or []
            size = int((body.get("meta") or {}).get("size") or 0)
            first_size = size if first_size is None else first_size
            if size != first_size:
                raise TargetUnavailable(
                    f"moysklad report/stock/all changed while it was read ({first_size} rows, then "
                    f"{size}); run the reconciliation again"
                )
            if last_read is not None:
                if not rows or _row_href(rows[0]) != last_read:
                    raise TargetUnavailable(
                        f"moysklad report/stock/all changed while it was read (its rows moved before "
                        f"row {offset}); run the reconciliation again"
                    )
                rows = rows[1:]
            for row in rows:
                href = _row_href(row)
                if href and href in seen:
                    raise TargetUnavailable(
                        "moysklad report/stock/all listed a row twice: it changed while it was read; "
                        "run the reconciliation again"
                    )
                seen.add(href)
            yield from rows
            offset += len(rows)
            if rows:
                last_read = _row_href(rows[-1])
            if offset >= size or not rows:
                if offset < size:
                    raise TargetUnavailable(
                        f"moysklad report/stock/all: {size} rows announced, {offset} read"
                    )
                return
        raise TargetUnavailable(f"moysklad report/stock/all: more than {REPORT_PAGES_MAX} pages")


def _row_href(row: dict[str, Any]) -> str:
    """What names a report row: its assortment's href."""
    return str((row.get("meta") or {}).get("href") or "")


# A reservation placed creates the order; released or expired, the order's reserve is cleared.
ORDER_EVENT_TYPES = frozenset(
    {EventType.RESERVATION, EventType.RESERVATION_RELEASE, EventType.RESERVATION_EXPIRED}
)


class MoySkladOrdersTarget:
    """A reservation placed in the ledger for an order becomes a MoySklad customerorder; when the
    reservation is released or expires, the order's positions are reserved no more (`reserve` 0)
    and, with a `moysklad,status,released|expired,<state uuid>` mapping, the order takes that state,
    unless another reservation of its order id at that store still holds it (a later one reuses
    the order): then the last of them to end closes it."""

    name = "moysklad"
    batch_items_max = 20

    def __init__(self, recorder: Any, mappings: Mappings, client: MoySkladClient) -> None:
        self.recorder = recorder
        self.mappings = mappings
        self.client = client
        self.config = client.config

    def keys_for(self, entry: Entry, position: int) -> Iterable[str]:
        event = entry.event
        if event.type not in ORDER_EVENT_TYPES or not event.reservation_id:
            return ()
        if self.mappings.external(SYSTEM, "store", event.store_id) is None:
            return ()
        return [f"{ORDER_KEY}{event.store_id}|{event.reservation_id}"]

    def all_keys(self) -> Iterable[str]:
        return ()  # orders are created from their reservations as they happen, never in bulk

    def load(self, keys: Sequence[str]) -> list[Item]:
        items = []
        with self.recorder.read_transaction() as tx:
            for key in keys:
                if not key.startswith(ORDER_KEY):
                    continue
                store_id, reservation_id = key[len(ORDER_KEY) :].split("|", 1)
                row = tx.fetchone(
                    "SELECT * FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s",
                    (store_id, reservation_id),
                )
                if row is None:
                    continue
                lines = [[sku, int(qty)] for sku, qty, *_ in orjson.loads(row["lines"])]
                items.append(
                    Item(
                        key,
                        {
                            "store_id": store_id,
                            "reservation_id": reservation_id,
                            "order_id": row["order_id"] or reservation_id,
                            "lines": lines,
                            "status": row["status"],
                        },
                    )
                )
        return items

    def push(self, items: Sequence[Item]) -> dict[str, Failure]:
        failures: dict[str, Failure] = {}
        unavailable: list[TargetUnavailable] = []
        with ThreadPoolExecutor(max_workers=self.config.parallel_max) as pool:
            outcomes = list(pool.map(self._push_one, items))
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, TargetUnavailable):
                unavailable.append(outcome)
            elif outcome is not None:
                failures[item.key] = outcome
        if unavailable:
            done = frozenset(
                item.key for item, outcome in zip(items, outcomes, strict=True) if outcome is None
            )
            raise TargetUnavailable(str(unavailable[0]), unavailable[0].retry_after_s, done)
        return failures

    def _push_one(self, item: Item) -> Failure | TargetUnavailable | None:
        try:
            if item.payload.get("status") in CLOSED_STATUSES:
                return self._close_order(item)
            return self._create_order(item)
        except TargetUnavailable as error:
            return error

    def _close_order(self, item: Item) -> Failure | None:
        """The reservation holds nothing any more: every position's `reserve` goes to 0 (PUT
        .../positions/{id}: md/documents/_customerOrder.md, positions have resources of their
        own), and the order takes the state mapped to the reservation's status, if one is.
        Setting values, not moving them: a push retried after a crash finds them set and
        changes nothing."""
        payload = item.payload
        store = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if store is None:
            # Its mapping removed since: the order, if any, cannot be found to clear its reserve.
            return Failure(f"no moysklad store mapped to {payload['store_id']}", permanent=True)
        if self._held_by_another(payload["store_id"], payload["order_id"], payload["reservation_id"]):
            # A later reservation of the same order id reuses this customer order: it stays open
            # (its reserve and state), closed when the last reservation holding it ends. Moved to
            # the released state now, it would read as a person's cancel of the order
            # (moysklad_order_cancels.py) and release the reservation that still holds.
            return None
        order = self.client.find_order(payload["order_id"], store.external_id)
        if order is None:
            return None  # never created (placed and closed between two pushes): nothing reserved there
        for position in self.client.order_positions(order):
            if position.get("reserve"):
                answer = self.client.request(
                    "PUT",
                    f"entity/customerorder/{order['id']}/positions/{position['id']}",
                    json_body={"reserve": 0},
                )
                if answer.status != 200:
                    return Failure(
                        f"customerorder {payload['order_id']} position {position['id']}: "
                        f"HTTP {answer.status}: {errors_text(answer)}"
                    )
        rule = self.mappings.status(SYSTEM, payload["status"])
        if rule is None:
            return None
        state_href = f"{self.client.http.base_url}entity/customerorder/metadata/states/{rule.target_status}"
        if ((order.get("state") or {}).get("meta") or {}).get("href") == state_href:
            return None
        answer = self.client.request(
            "PUT",
            f"entity/customerorder/{order['id']}",
            json_body={
                "state": {"meta": {"href": state_href, "type": "state", "mediaType": "application/json"}}
            },
        )
        if answer.status == 200:
            return None
        return Failure(
            f"customerorder {payload['order_id']} state: HTTP {answer.status}: {errors_text(answer)}"
        )

    def _held_by_another(self, store_id: str, external_code: str, reservation_id: str) -> bool:
        """Whether a reservation at `store_id` other than `reservation_id`, of the customer order
        whose `externalCode` is `external_code` (the order id's, or one placed without an order id
        under that id), still holds units."""
        with self.recorder.read_transaction() as tx:
            row = tx.fetchone(
                "SELECT 1 AS held FROM ledger_reservations WHERE store_id = %s "
                "AND (order_id = %s OR (order_id IS NULL AND reservation_id = %s)) "
                "AND reservation_id <> %s AND status IN (%s, %s) LIMIT 1",
                (
                    store_id,
                    external_code,
                    external_code,
                    reservation_id,
                    ReservationStatus.ACTIVE.value,
                    ReservationStatus.PARTIALLY_SHIPPED.value,
                ),
            )
        return row is not None

    def _create_order(self, item: Item) -> Failure | None:
        payload = item.payload
        store = self.mappings.external(SYSTEM, "store", payload["store_id"])
        if store is None:
            return Failure(f"no moysklad store mapped to {payload['store_id']}", permanent=True)
        positions = []
        for sku, qty in payload["lines"]:
            ref = self.mappings.external(SYSTEM, "sku", sku)
            if ref is None:
                return Failure(f"no moysklad product or variant mapped to {sku}", permanent=True)
            quantity = self.mappings.to_external_units(SYSTEM, sku, qty)
            positions.append(
                {
                    "quantity": quantity,
                    "reserve": quantity,
                    "assortment": self.client.meta(ref.external_type or "product", ref.external_id),
                }
            )
        if self.client.find_order(payload["order_id"], store.external_id) is not None:
            return None  # created before (a retry after a crash or a timeout): nothing to do
        body: dict[str, Any] = {
            "externalCode": payload["order_id"],
            "store": self.client.meta("store", store.external_id),
            "positions": positions,
            "description": f"stock ledger reservation {payload['reservation_id']}",
        }
        if self.config.organization_id:
            body["organization"] = self.client.meta("organization", self.config.organization_id)
        if self.config.agent_id:
            body["agent"] = self.client.meta("counterparty", self.config.agent_id)
        answer = self.client.request("POST", "entity/customerorder", json_body=body)
        if answer.status in (200, 201):
            return None
        return Failure(f"customerorder {payload['order_id']}: HTTP {answer.status}: {errors_text(answer)}")

    def after_push(self, tx: SqlTx, pushed: Sequence[Item]) -> None:
        return None


# MoySklad's error code for a document the token's user may not see (md/_errors.md, 1016).
DOCUMENT_NOT_VISIBLE = 1016


def error_codes(answer: Response) -> set[int]:
    """The `code` of each of an answer's `errors` (md/_errors.md)."""
    try:
        body = answer.json() or {}
    except ValueError:
        return set()
    errors = body.get("errors") if isinstance(body, dict) else None
    return {int(e["code"]) for e in errors or () if isinstance(e, dict) and isinstance(e.get("code"), int)}


def errors_text(answer: Response) -> str:
    try:
        body = answer.json() or {}
    except ValueError:
        return answer.body[:200].decode(errors="replace")
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        return "; ".join(str(e.get("error", e)) for e in errors)
    return str(body)[:200]
