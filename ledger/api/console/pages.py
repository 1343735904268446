"""The console's pages at /ui (CONTRACT §8): find a SKU, its levels at every store, one store's
figures with their explanation and timeline, a store's open reservations, the adapters' state.

Every page only reads, and declares the reader role like any GET of the API. Figures come from the
API itself, asked in process with the caller's grant (ledger/api/console/api_client.py); the few reads
the API has no route for are the console's own, bounded and indexed (ledger/api/console/queries.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import Response

from ledger.access.scopes import Grant
from ledger.api.console import queries
from ledger.api.console.adapter_states import installed_readers
from ledger.api.console.api_client import ANSWER_BYTES_MAX, Answer, AnswerTooLarge, api_get, path_of
from ledger.api.console.negotiation import wants_page
from ledger.api.console.rendering import page
from ledger.api.console.session import SESSION_KEY
from ledger.api.console.window import refusal_text, window_bound
from ledger.api.deps import LedgerDep, ReadableStore, ReaderGrant, SettingsDep, Sku, request_grant
from ledger.api.openapi import package_version
from ledger.api.problems import Problem, problem_for, problem_response, validation_problem
from ledger.clock import utc_now, utc_text
from ledger.domain.ids import ID_REGEX
from ledger.http_problems import RETRY_AFTER_S
from ledger.service import Ledger


def _problem_page(request: Request, grant: Grant | None, problem: Problem, what: str) -> Response:
    """A problem as a page a person reads: the API's status, title and detail (and its
    Retry-After on a 503, as the API sends it). A program gets the API's problem+json."""
    if not wants_page(request.scope["headers"]):
        return problem_response(problem, request.url.path)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if problem.status == 503 else None
    return page(
        "problem.html",
        problem.status,
        headers,
        what=what,
        status=problem.status,
        title=problem.title,
        detail=problem.detail or "",
        **_frame(request, grant),
    )


# The heading of a problem page, by status, for a refusal before the page's own reads.
_REFUSED_HEADINGS = {403: "Not for this token", 422: "Not a page of the console", 503: "Not available now"}


class ConsolePageRoute(APIRoute):
    """A console page refused before its own reads (a store the token may not see: 403; an address
    whose parameters are wrong: 422) or whose read meets an unavailable ledger (its database down,
    a timeout: 503) answers the problem the API answers for it, as a page rather than
    problem+json. A bug (500) goes on to the application's handlers. (A 401 never gets here: the
    console's session middleware answers it with the login form before routing.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_page(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as error:
                problem = validation_problem(error)
            except Exception as error:
                found = problem_for(error)
                if found is None or found.status not in _REFUSED_HEADINGS:
                    raise
                problem = found
            return _problem_page(request, request_grant(request), problem, _REFUSED_HEADINGS[problem.status])

        return handle_as_page


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=ConsolePageRoute)
_ID = re.compile(ID_REGEX)
# The most a timeline point takes in JSON: three texts of up to 256 characters (id, source,
# reference), two ids of up to 64, each character at most 6 bytes (a control character escaped).
TIMELINE_POINT_BYTES_MAX = 8 * 1024
# The most an explanation's item takes (a reservation: an order id of 256 characters, at most 6
# bytes each escaped, and three ids; a transfer: its id of 256 characters and a store): an
# explanation lists at most LEDGER_EXPLAIN_ITEMS_MAX reservations and as many transfers, and
# answers 422 beyond.
EXPLAIN_ITEM_BYTES_MAX = 2 * 1024
# The entries page (every entry of a SKU at a store): the most one page's answer takes (an entry's
# texts of up to 256 characters, its codes: CONTRACT §10 allows 1000 of 200).
ENTRIES_PAGE_ROWS_FEWER = (10, 1)  # tried in turn when LEDGER_CONSOLE_ENTRIES_PAGE_ROWS are too large
ENTRIES_PAGE_BYTES_MAX = 16 * 1024 * 1024
STATIC_CACHE_S = 86400  # assets are named with the package's version (?v=): a new version is a new URL
# What a store-scoped reader sees in place of an adapter's last error.
ERROR_HIDDEN = "(hidden: this token reads only some stores)"
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}


def _frame(request: Request, grant: Grant | None) -> dict[str, Any]:
    """What every page's frame shows: who is looking, and whether there is a login to leave."""
    return {
        "grant": grant,
        "signed_in": bool(request.scope.get(SESSION_KEY)),
        "version": package_version(),
    }


_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "headers"})


def _problem(request: Request, grant: Grant | None, answer: Answer, what: str) -> Response:
    """The API's refusal of a read a page needs, shown as the page."""
    body = answer.body if isinstance(answer.body, dict) else {}
    extra = {key: value for key, value in body.items() if key not in _PROBLEM_MEMBERS}
    problem = Problem(
        answer.status,
        str(body.get("type", "")),
        body.get("title", "Not available"),
        body.get("detail", ""),
        **extra,
    )
    return _problem_page(request, grant, problem, what)


def _read(ledger: Ledger, read: Any, *args: Any) -> Any:
    with ledger.reading("reading for the console") as tx:
        return read(tx, *args)


@router.get("")
async def home(
    request: Request,
    ledger: LedgerDep,
    settings: SettingsDep,
    grant: ReaderGrant,
    q: Annotated[str, Query(max_length=64, description="the start of a SKU")] = "",
) -> Response:
    prefix = q.strip()
    stores = None if grant is None or grant.stores is None else grant.stores
    found: list[str] = []
    if prefix and _ID.fullmatch(prefix):
        found = await asyncio.to_thread(
            _read, ledger, queries.skus_by_prefix, prefix, stores, settings.console_skus_found_max
        )
    if stores is None:
        store_list = await asyncio.to_thread(_read, ledger, queries.store_ids, settings.console_stores_max)
    else:
        store_list = sorted(stores)[: settings.console_stores_max]  # a scoped token's own stores
    return page(
        "home.html",
        q=prefix,
        bad_query=bool(prefix) and not _ID.fullmatch(prefix),
        found=found,
        found_max=settings.console_skus_found_max,
        stores=store_list,
        stores_max=settings.console_stores_max,
        **_frame(request, grant),
    )


@router.get("/skus/{sku}")
async def sku_page(request: Request, sku: Sku, grant: ReaderGrant) -> Response:
    try:
        answer = await api_get(request.app, grant, path_of("v1", "stock", sku))
    except AnswerTooLarge:  # a SKU at tens of thousands of stores: the API has no pages of them
        problem = Problem(
            413,
            "answer-too-large",
            "Too many stores to show",
            f"{sku} is at more stores than one page shows (its levels are over {ANSWER_BYTES_MAX} bytes): "
            "read them through GET /v1/stock/{sku}, or open one store's page",
        )
        return _problem_page(request, grant, problem, f"SKU {sku}")
    if not answer.ok:
        return _problem(request, grant, answer, f"SKU {sku}")
    return page("sku.html", sku=sku, across=answer.body, **_frame(request, grant))


@router.get("/stores/{store}/skus/{sku}")
async def store_sku_page(
    request: Request,
    store: ReadableStore,
    sku: Sku,
    grant: ReaderGrant,
    settings: SettingsDep,
    axis: Annotated[str, Query(pattern="^(recorded|occurred)$")] = "recorded",
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Every figure of the page at one position: the explanation's (read first, in one snapshot),
    then the levels and the timeline at that position (`?position=`), so that the figures at the
    top, the explanation and the plot's end agree however busy the SKU. (Read apart, a write
    between the reads showed one figure at the top, another in the explanation and a third at the
    plot's end; cutting a later timeline's points at the position dropped its last point, which
    thinning always keeps, and left the business-time axis summing the entries cut.)"""
    base = ("v1", "stores", store, "stock", sku)
    start, end = window_bound(from_, end=False), window_bound(to, end=True)
    window = {"axis": axis, **({"from": start} if start else {}), **({"to": end} if end else {})}
    try:
        explain = await api_get(
            request.app,
            grant,
            path_of(*base, "explain"),
            bytes_max=ANSWER_BYTES_MAX + 2 * settings.explain_items_max * EXPLAIN_ITEM_BYTES_MAX,
        )
    except AnswerTooLarge:  # not within those sizes: the page shows the figures without it
        explain = Answer(413, {})
    position = int(explain.body["position"]) if explain.ok else None
    at = {} if position is None else {"position": str(position)}
    level, timeline = await asyncio.gather(
        api_get(request.app, grant, path_of(*base), at),
        api_get(
            request.app,
            grant,
            path_of(*base, "timeline"),
            {**window, **at},
            bytes_max=max(ANSWER_BYTES_MAX, settings.timeline_points_max * TIMELINE_POINT_BYTES_MAX),
        ),
    )
    if not level.ok:
        return _problem(request, grant, level, f"{sku} at {store}")
    window_refused = None
    if timeline.status == 422:  # the window typed: the page stays, the form says what is wrong
        window_refused, timeline = refusal_text(timeline.body), Answer(200, {"points": [], "thinned": False})
    elif not timeline.ok:
        return _problem(request, grant, timeline, f"the timeline of {sku} at {store}")
    points = timeline.body["points"]  # each names its entry's type, source, reference and principal
    plot = {"axis": axis, "points": points, "thinned": timeline.body.get("thinned", False)}
    return page(
        "store_sku.html",
        store=store,
        sku=sku,
        level=level.body,
        explain=explain.body if explain.ok else None,
        explain_status=explain.status,
        timeline=timeline.body,
        points=points,
        # Inside <script>: a `<` in any value (a reference, a source) must not end the element.
        plot_json=orjson.dumps(plot).decode().replace("<", "\\u003c"),
        axis=axis,
        from_=from_ or "",
        to=to or "",
        window_refused=window_refused,
        **_frame(request, grant),
    )


@router.get("/stores/{store}/skus/{sku}/entries")
async def entries_page(
    request: Request,
    store: ReadableStore,
    sku: Sku,
    grant: ReaderGrant,
    settings: SettingsDep,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Every entry of a SKU at a store, oldest first, a page at a time: the timeline thins a long
    history to its points, and this is where each entry is read (the history API's own pages)."""
    start, end = window_bound(from_, end=False), window_bound(to, end=True)
    params = {
        "sku": sku,
        **({"from": start} if start else {}),
        **({"to": end} if end else {}),
        **({"after": after} if after else {}),
    }
    history, rows = None, 0
    wanted = min(settings.console_entries_page_rows, settings.history_page_max)  # the API's own limit
    tried = sorted({wanted, *(rows for rows in ENTRIES_PAGE_ROWS_FEWER if rows < wanted)}, reverse=True)
    for rows in tried:  # an entry may carry a thousand marking codes: fewer a page
        try:
            history = await api_get(
                request.app,
                grant,
                path_of("v1", "stores", store, "history"),
                {**params, "limit": str(rows)},
                bytes_max=ENTRIES_PAGE_BYTES_MAX,
            )
            break
        except AnswerTooLarge:
            continue
    if history is None:
        problem = Problem(
            413,
            "entry-too-large",
            "An entry too large to show",
            f"the next entry of {sku} at {store} is over {ENTRIES_PAGE_BYTES_MAX} bytes: read it through "
            "GET /v1/stores/{store}/history with sku, limit=1 and after",
        )
        return _problem_page(request, grant, problem, f"the entries of {sku} at {store}")
    window_refused = None
    if history.status == 422:
        window_refused, history = refusal_text(history.body), Answer(200, {"entries": [], "next": None})
    elif not history.ok:
        return _problem(request, grant, history, f"the entries of {sku} at {store}")
    return page(
        "entries.html",
        store=store,
        sku=sku,
        entries=history.body["entries"],
        next=history.body.get("next"),
        first_page=after is None,
        from_=from_ or "",
        to=to or "",
        window_refused=window_refused,
        page_rows=rows,
        **_frame(request, grant),
    )


def _reservation_row(row: Any, soon_before: str) -> dict[str, Any]:
    lines = [
        {"sku": sku, "qty": qty, "remaining": qty - shipped - released}
        for sku, qty, shipped, released in orjson.loads(row["lines"])
    ]
    expires_at = row["expires_at"]
    return {
        "reservation_id": row["reservation_id"],
        "order_id": row["order_id"],
        "status": row["status"],
        "expires_at": expires_at,
        "remaining": int(row["remaining"]),
        "lines": lines,
        "soon": expires_at is not None and expires_at <= soon_before,
    }


@router.get("/stores/{store}/reservations")
async def reservations_page(
    request: Request, store: ReadableStore, ledger: LedgerDep, settings: SettingsDep, grant: ReaderGrant
) -> Response:
    limit = settings.console_reservations_max
    rows = await asyncio.to_thread(_read, ledger, queries.open_reservations, store, limit)
    soon_before = utc_text(utc_now() + timedelta(seconds=settings.console_expiring_within_s))
    reservations = [_reservation_row(row, soon_before) for row in rows]
    return page(
        "reservations.html",
        store=store,
        reservations=reservations,
        soon=[r for r in reservations if r["soon"]],
        limit=limit,
        expiring_within_min=settings.console_expiring_within_s // 60,
        **_frame(request, grant),
    )


@router.get("/adapters")
async def adapters_page(request: Request, ledger: LedgerDep, grant: ReaderGrant) -> Response:
    readers = installed_readers()

    def read_all() -> list[Any]:
        with ledger.reads_bounded():
            return [state for reader in readers for state in reader(ledger.recorder)]

    states = await asyncio.to_thread(read_all)
    # An adapter pushes every store's entries, so its last error may name any store's SKU or
    # order: a token limited to some stores sees that there is one, not what it says.
    errors_hidden = grant is not None and grant.stores is not None
    if errors_hidden:
        states = [replace(state, last_error=ERROR_HIDDEN if state.last_error else None) for state in states]
    return page(
        "adapters.html",
        installed=bool(readers),
        states=states,
        errors_hidden=errors_hidden,
        head=ledger.cache.head,
        **_frame(request, grant),
    )


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


def _asset_names() -> frozenset[str]:
    static = files("ledger.api.console").joinpath("static")
    return frozenset(e.name for e in static.iterdir() if e.is_file() and _suffix(e.name) in _MEDIA_TYPES)


# The assets there are. Only these names are looked up, and each is kept once read: a name asked
# for that is none costs nothing to remember (each was kept for the process's life, and this path
# is held to no rate, so one reader token could fill the memory with names).
_ASSET_NAMES = _asset_names()


@cache
def _asset(name: str) -> bytes:
    return files("ledger.api.console").joinpath("static", name).read_bytes()


@router.get("/static/{name}")
async def static_asset(name: str, _: ReaderGrant) -> Response:
    suffix = _suffix(name)
    body = _asset(name) if name in _ASSET_NAMES else None
    if body is None:
        return problem_response(Problem(404, "not-found", "no such asset", name), f"/ui/static/{name}")
    return Response(
        body,
        media_type=_MEDIA_TYPES[suffix],
        headers={"Cache-Control": f"private, max-age={STATIC_CACHE_S}"},
    )
