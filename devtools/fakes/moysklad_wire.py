"""MoySklad JSON API 1.2's wire format, as the fake speaks it: the base path, moments in Moscow
time, error bodies, the `Accept` it admits and `filter=` conditions (md/_general.md,
md/_errors.md). The fake's parts (moysklad.py, moysklad_reports.py) share these."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from adapters.httpserver import Reply, Request

BASE_PATH = "/api/remap/1.2/"
MOSCOW = timezone(timedelta(hours=3))
ACCEPTED_MEDIA = "application/json;charset=utf-8"
ACCOUNT_ID = "00000000-0000-0000-0000-000000000001"
PAGE_ROWS_MAX = 1000  # a list's or a report's page: `limit` 1 to 1000


def moment_text(when: datetime) -> str:
    """MoySklad's wire format: Moscow time, `YYYY-MM-DD HH:MM:SS.fff`."""
    local = when.astimezone(MOSCOW)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def moment_key(text: str) -> str:
    """A MoySklad moment comparable as text: milliseconds made explicit (`...:SS` is `...:SS.000`)."""
    return text if "." in text else text + ".000"


def error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"errors": [{"error": message, "code": code}]})


def accepts_json(accept: str | None) -> bool:
    """No Accept, a wildcard, or the one documented value."""
    if accept is None:
        return True
    for part in accept.split(","):
        media = part.split(";q=")[0].replace(" ", "").lower()
        if media in ("*/*", "application/*", ACCEPTED_MEDIA):
            return True
    return False


def filter_conditions(request: Request) -> list[tuple[str, str]]:
    """`filter=store=<href>;quantityMode=all` -> [("store", "<href>"), ("quantityMode", "all")]."""
    conditions = []
    for flt in request.query.get("filter", []):
        for part in flt.split(";"):
            name, _, value = part.partition("=")
            if name:
                conditions.append((name, value))
    return conditions


def page_bounds(
    request: Request, default: int = PAGE_ROWS_MAX, most: int = PAGE_ROWS_MAX
) -> tuple[int, int] | Reply:
    """`limit` (1 to `most`, else `default`) and `offset` (0 or more, default 0), or the error that
    refuses them (1040: the page names the rule, not the code; assumed)."""
    try:
        limit = int((request.query.get("limit") or [str(default)])[0])
        offset = int((request.query.get("offset") or ["0"])[0])
    except ValueError:
        return error(400, 1040, "Неверно заданы параметры запроса: limit и offset - целые числа")
    if not 1 <= limit <= most or offset < 0:
        return error(400, 1040, f"Неверно заданы параметры запроса: limit 1-{most}, offset >= 0")
    return limit, offset
