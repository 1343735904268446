"""MoySklad (JSON API 1.2): the client.

Customer orders out: moysklad_orders.py; demands (shipments) in: moysklad_demands.py; the webhook
registry: moysklad_webhooks.py; the stock report for reconciliation: snapshots.py and
moysklad_stock.py.

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
  reserved item among them: we always send `quantityMode=all`. Its `archived` filter leaves out
  archived products and variants unless asked ("to get both archived and not archived, pass both
  values true and false"), and a product archived with stock still on the shelf would read as
  absent, counted 0 under `--absent-as-zero` (seed 001: "check via archived: true"): we always
  send `archived=false;archived=true`. Pages of `limit` (1 to 1000,
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
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.http import HttpClient, Response, TransportError
from adapters.limits import SlidingWindow
from adapters.masking import secret_safe_logger
from adapters.outbound import RETRY_AFTER_S_MAX, TargetUnavailable
from ledger.access.scopes import ADAPTER_PRINCIPAL_PREFIX

log = secret_safe_logger("adapters.moysklad")

SYSTEM = "moysklad"
SOURCE = "moysklad"
PRINCIPAL = ADAPTER_PRINCIPAL_PREFIX + SYSTEM  # who recorded a shipment, in the history
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
WINDOW_MARGIN_S = 0.1
ORDER_POSITIONS_MAX = 1000  # _restrictions.md: at most 1000 elements in an array (and a page)
POSITION_PAGES_MAX = 100  # a document's positions read through their resource: 100,000 at most


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
        """A customer order's positions (GET entity/customerorder/{id}/positions), every page."""
        return self.document_positions("customerorder", str(order["id"]))

    def document_positions(self, entity: str, document_id: str) -> list[dict[str, Any]]:
        """Every position of a document, page by page (GET entity/{entity}/{id}/positions). A
        document may hold more than 1000 positions, added through this resource, and reading it
        with `expand=positions` shows only the first 1000 ("позиции большого документа, количество
        строк в котором превышает лимит на количество строк в выдаче документа. Этот лимит равен
        1000", the documents' pages): the rest are read here. A list whose size changed between
        pages is refused (TargetUnavailable: read again later), as a partial one would be taken for
        the whole."""
        rows: list[dict[str, Any]] = []
        first_size: int | None = None
        for _ in range(POSITION_PAGES_MAX):
            answer = self.request(
                "GET",
                f"entity/{entity}/{document_id}/positions",
                params={"limit": ORDER_POSITIONS_MAX, "offset": len(rows)},
            )
            if answer.status != 200:
                raise TargetUnavailable(f"moysklad {entity} positions: HTTP {answer.status}")
            body = answer.json() or {}
            page = list(body.get("rows") or [])
            size = int((body.get("meta") or {}).get("size") or 0)
            first_size = size if first_size is None else first_size
            if size != first_size:
                raise TargetUnavailable(
                    f"moysklad {entity} {document_id}: its positions changed while they were read "
                    f"({first_size}, then {size})"
                )
            rows.extend(page)
            if len(rows) >= size or not page:
                if len(rows) != size:
                    raise TargetUnavailable(
                        f"moysklad {entity} {document_id}: {size} positions announced, {len(rows)} read"
                    )
                return rows
        raise TargetUnavailable(f"moysklad {entity} {document_id}: more than {POSITION_PAGES_MAX} pages")

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

    def stock_rows(
        self, store_id: str | None, assortments: Sequence[tuple[str, str]] = ()
    ) -> Iterator[dict[str, Any]]:
        """Every row of report/stock/all (for one store if given, and only these `assortments`,
        (entity type, uuid) each, if given), zero available ones included, page by page until the
        report's own row count is reached."""
        conditions = ["quantityMode=all", "archived=false", "archived=true"]
        for entity, assortment_id in assortments:
            kind = "variant" if entity == "variant" else "product"  # the report's filters (bundles too)
            conditions.append(f"{kind}={self.meta(kind, assortment_id)['meta']['href']}")
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
