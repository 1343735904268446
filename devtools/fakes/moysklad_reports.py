"""The fake MoySklad's stock reports, from its figures by (assortment, store):
- `report/stock/all` (md/reports/_report_stock.md): totals by assortment, optionally for some
  stores (`filter=store=<href>`); `quantityMode` defaults to `nonEmpty`, so rows whose available
  quantity (`quantity` = stock - reserve) is 0 are left out unless `quantityMode=all` is sent; an
  unknown mode is error 1041; archived products and variants are left out unless `archived=true`
  is sent (the page: "to get both archived and not archived, pass both values true and false";
  each value true or false, else error 1041, assumed); pages of at most 1000 rows, `meta.size`
  counts the whole report and `meta.nextHref` is given while pages follow;
- the short report `report/stock/{all,bystore}/current`: one JSON array of one `stockType`;
  `changedSince` in Moscow time as `YYYY-MM-DD HH:MM:SS`, at most 24 hours back and not in the
  future, zero lines included with it (or with `include=zeroLines`).
Where a page names a rule but not its error code, the code here is marked as assumed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.httpserver import Reply, Request
from devtools.fakes.moysklad_wire import BASE_PATH, MOSCOW, error, filter_conditions, page_bounds

REPORT_WEIGHT = 5  # a stock report counts as 5 requests of the rate limit
# report/stock/all's documented filters (md/reports/_report_stock.md), as filter_conditions splits
# them at their first `=`: those taking `=` only, and those taking `!=` too ("name!"). `search`
# takes `=` and `!~`; an additional field or characteristic is named by its href. Any other is
# refused (1002, assumed). The fake acts on `store`, `product`, `variant`, `quantityMode` and
# `archived`; the others are taken and ignored (the ledger sends none of them).
FILTERS_EQUAL_ONLY = frozenset(
    {
        "archived",
        "inTransitOnly",
        "moment",
        "quantityMode",
        "reserveOnly",
        "soldByWeight",
        "stockDaysFrom",
        "stockDaysTo",
        "stockMode",
        "withSubFolders",
    }
)
FILTERS_EQUAL_OR_NOT = frozenset({"consignment", "product", "productFolder", "store", "supplier", "variant"})
QUANTITY_MODES = ("all", "positiveOnly", "negativeOnly", "empty", "nonEmpty", "underMinimum")
STOCK_TYPES = ("stock", "freeStock", "quantity", "reserve", "inTransit")
REPORT_TYPES = ("all", "bystore")
CHANGED_SINCE_BACK_MAX = timedelta(hours=24)

Figures = dict[tuple[str, str], dict[str, float]]  # (assortment, store) -> stock, reserve, inTransit


def current_stock(
    figures: Figures,
    changed_at: dict[tuple[str, str], datetime],
    report_type: str,
    request: Request,
    archived: frozenset[str] | set[str] = frozenset(),
    deleted_stores: frozenset[str] | set[str] = frozenset(),
) -> Reply:
    """The short report. With `changedSince`, an assortment archived in the interval is listed at
    0, whatever its stock ("если за запрашиваемый интервал был удален или архивирован товар или
    склад, то будет выведен остаток равный 0"): the fake lists every archived one changed since so,
    and every row of a deleted store."""
    if report_type not in REPORT_TYPES:
        return error(404, 1002, f"unknown report {report_type}")
    stock_type = (request.query.get("stockType") or ["stock"])[0]
    if stock_type not in STOCK_TYPES:
        return error(400, 1041, f"stockType is one of {', '.join(STOCK_TYPES)}")  # assumed code
    since_texts = request.query.get("changedSince")
    since = None
    if since_texts:
        try:
            since = datetime.strptime(since_texts[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=MOSCOW)
        except ValueError:
            return error(400, 1038, f"changedSince '{since_texts[0]}': YYYY-MM-DD HH:MM:SS")  # assumed
        now = datetime.now(UTC)
        if since > now or now - since > CHANGED_SINCE_BACK_MAX:
            return error(400, 1038, "changedSince: at most 24 hours back, not in the future")  # assumed
    zero_lines = since is not None or "zeroLines" in request.query.get("include", [])
    by_store = report_type == "bystore"
    totals: dict[tuple[str, str | None], float] = {}
    for (assortment, store_id), values in sorted(figures.items()):
        changed = changed_at.get((assortment, store_id))
        if since is not None and (changed is None or changed < since.replace(microsecond=0)):
            continue
        value = {
            "stock": values.get("stock", 0.0),
            "freeStock": values.get("stock", 0.0) - values.get("reserve", 0.0),
            "quantity": values.get("stock", 0.0) - values.get("reserve", 0.0) + values.get("inTransit", 0.0),
            "reserve": values.get("reserve", 0.0),
            "inTransit": values.get("inTransit", 0.0),
        }[stock_type]
        if since is not None and (assortment in archived or store_id in deleted_stores):
            value = 0.0
        key = (assortment, store_id if by_store else None)
        totals[key] = totals.get(key, 0.0) + value
    rows = [
        {"assortmentId": a, **({"storeId": st} if by_store else {}), stock_type: v}
        for (a, st), v in totals.items()
        if v or zero_lines
    ]
    return Reply(200, rows)


def stock_report(
    figures: Figures,
    products: dict[str, str],
    archived: set[str],
    href: Callable[[str, str], str],
    origin: str,
    request: Request,
) -> Reply:
    """One page of `report/stock/all`; `products` gives each assortment's kind, `archived` those
    in the archive, `href` an entity's address."""
    conditions = filter_conditions(request)
    for name, _ in conditions:
        if not _documented_filter(name):
            return error(400, 1002, f"Неизвестное поле или оператор фильтрации '{name}'")  # assumed code
    archived_asked = [value for name, value in conditions if name == "archived"]
    if any(value not in ("true", "false") for value in archived_asked):
        return error(400, 1041, "Неверное значение параметра фильтрации 'archived': true или false")
    archived_shown = {value == "true" for value in archived_asked} or {False}
    stores = {value.split("/")[-1] for name, value in conditions if name == "store"}
    # `product=` and `variant=` (several values: any of them), as the page describes them.
    wanted = {
        value.split("?")[0].rstrip("/").split("/")[-1]
        for name, value in conditions
        if name in ("product", "variant")
    }
    modes = [value for name, value in conditions if name == "quantityMode"]
    mode = modes[-1] if modes else "nonEmpty"  # the documented default
    if mode not in QUANTITY_MODES:
        return error(
            400,
            1041,
            f"Неверное значение '{mode}' параметра фильтрации 'quantityMode', допустимые значения: "
            f"'{', '.join(QUANTITY_MODES)}'",
        )
    bounds = page_bounds(request)
    if isinstance(bounds, Reply):
        return bounds
    limit, offset = bounds
    totals: dict[str, dict[str, float]] = {}
    for (assortment, store_id), values in sorted(figures.items()):
        if (
            (not stores or store_id in stores)
            and (not wanted or assortment in wanted)
            and (assortment in archived) in archived_shown
        ):
            total = totals.setdefault(assortment, {"stock": 0.0, "reserve": 0.0, "inTransit": 0.0})
            for name in total:
                total[name] += values.get(name, 0.0)
    rows: list[dict[str, Any]] = [
        {
            "meta": {"href": href(products[a], a) + "?expand=supplier", "type": products[a]},
            "name": a,
            "code": a,
            "externalCode": a,
            **t,
            "quantity": t["stock"] - t["reserve"],
        }
        for a, t in totals.items()
        if in_quantity_mode(mode, t["stock"] - t["reserve"])
    ]
    meta: dict[str, Any] = {"size": len(rows), "limit": limit, "offset": offset}
    if offset + limit < len(rows):
        meta["nextHref"] = f"{origin}{BASE_PATH}report/stock/all?limit={limit}&offset={offset + limit}"
    return Reply(200, {"meta": meta, "rows": rows[offset : offset + limit]})


def _documented_filter(name: str) -> bool:
    """Whether `name` (a filter's text before its first `=`) is one of report/stock/all's, with an
    operator it takes."""
    if name in FILTERS_EQUAL_ONLY or name in FILTERS_EQUAL_OR_NOT:
        return True
    if name.endswith("!") and name[:-1] in FILTERS_EQUAL_OR_NOT:
        return True
    return name == "search" or name.startswith("search!~") or name.startswith(("http://", "https://"))


def in_quantity_mode(mode: str, available: float) -> bool:
    return {
        "all": True,
        "positiveOnly": available > 0,
        "negativeOnly": available < 0,
        "empty": available == 0,
        "nonEmpty": available != 0,
        "underMinimum": available < 0,  # no minimum balances in the fake: below 0 only
    }[mode]
