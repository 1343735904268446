"""The fake MoySklad's audit (md/audit/_audit.md): every change of a demand or a customer order,
made through the API or by a person (the fake's helpers), is one context with one event, whatever
a request's X-Lognex-WebHook-Disable says (that header silences webhooks, not the audit), naming
its author (`uid`: the token's employee for the API, a person for the helpers) and, for an update,
the fields it changed (`diff`). `GET context/employee` answers who the token is.

`GET audit` lists contexts: `filter` by `moment>=` and `moment<=` (the only operators the page
allows; `YYYY-MM-DD HH:MM:SS[.mmm]`, Moscow time, not before 1970-01-01 03:00:00), `entityType`,
`eventType` (one of the documented list), `source` and `uid`; `limit` 1 to 100, default 25, and
`offset`. Newest first: the page does not say, and the ledger's client must not depend on it.
`GET audit/{id}/events` lists a context's events, paged the same way, each with its `entity`'s
meta. Where a page names a rule but not its error code, the code here is marked as assumed."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from adapters.httpserver import Reply, Request
from devtools.fakes.moysklad_wire import ACCOUNT_ID, BASE_PATH, MOSCOW, error, filter_conditions, page_bounds

AUDIT_PAGE_DEFAULT = 25
AUDIT_PAGE_MOST = 100
EVENT_TYPES = (
    "registration",
    "bulkoperation",
    "closepublication",
    "create",
    "delete",
    "openpublication",
    "print",
    "puttoarchive",
    "puttorecyclebin",
    "replacetoken",
    "restorefromarchive",
    "restorefromrecyclebin",
    "sendemailfromentity",
    "update",
)
# The documented filters, as filter_conditions splits them at their first `=`: `moment>=` and
# `moment<=` arrive as `moment>` and `moment<`; `moment>` alone (no `=`) is refused. `employee`
# is taken and matches nothing: the fake's contexts name no employee.
FILTERS = ("moment>", "moment<", "entityType", "eventType", "source", "uid", "employee")
EARLIEST = datetime(1970, 1, 1, 3, 0, 0, tzinfo=MOSCOW)
# Who the audit names as a change's author (`uid`, a login): the employee the API token acts as
# (the ledger), and a person at MoySklad (the fake's test helpers).
API_LOGIN = "ledger@fake"
APP_LOGIN = "admin@fake"
EMPLOYEE_ID = "e1e10000-0000-0000-0000-000000000001"


def token_employee(origin: str) -> dict[str, Any]:
    """`GET context/employee`: the employee the token acts as (md/dictionaries/_employee.md:
    `uid`, the login the audit names)."""
    return {
        "meta": {
            "href": f"{origin}{BASE_PATH}context/employee",
            "metadataHref": f"{origin}{BASE_PATH}entity/employee/metadata",
            "type": "employee",
            "mediaType": "application/json",
        },
        "id": EMPLOYEE_ID,
        "accountId": ACCOUNT_ID,
        "name": "ledger",
        "uid": API_LOGIN,
    }


def update_diff(fields: Iterable[str], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """An update's `diff`: each field it changed, by its JSON API name, with its value before and
    after (md/audit/_audit.md, the format of the diff field)."""
    return {
        field: {"oldValue": before.get(field), "newValue": copy.deepcopy(after.get(field))}
        for field in fields
    }


def new_context(
    origin: str,
    entity: dict[str, Any],
    event_type: str,
    name: str,
    when: datetime,
    source: str,
    uid: str,
    diff: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A context of one event on `entity` (its meta), at `when`; an update's event has the `diff`
    of the fields it changed, keyed by their JSON API names (a creation's has none); `uid` is the
    login of who made it."""
    context_id = str(uuid.uuid4())
    href = f"{origin}{BASE_PATH}audit/{context_id}"
    moment = when.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")
    common = {
        "uid": uid,
        "source": source,
        "moment": moment,
        "eventType": event_type,
        "entityType": entity["meta"]["type"],
    }
    event = {
        **common,
        "name": name,
        "objectCount": 1,
        "audit": {"meta": {"href": href, "type": "audit", "mediaType": "application/json"}},
        "entity": entity,
        **({} if diff is None else {"diff": diff}),
    }
    return {
        "meta": {"href": href, "type": "audit", "mediaType": "application/json"},
        "id": context_id,
        **common,
        "objectCount": 1,
        "events": {"meta": {"href": href + "/events", "type": "auditevent", "mediaType": "application/json"}},
        "_events": [event],
    }


def list_contexts(contexts: list[dict[str, Any]], request: Request) -> Reply:
    bounds = page_bounds(request, AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MOST)
    if isinstance(bounds, Reply):
        return bounds
    limit, offset = bounds
    wanted: list[tuple[str, str]] = []
    for name, value in filter_conditions(request):
        if name not in FILTERS:
            return error(400, 1002, f"audit filter '{name}': moment>=, moment<=, entityType, ...")  # assumed
        if name.startswith("moment"):
            try:
                when = datetime.fromisoformat(value.strip().replace(" ", "T")).replace(tzinfo=MOSCOW)
            except ValueError:
                return error(400, 1038, f"moment '{value}': YYYY-MM-DD HH:MM:SS[.mmm]")  # assumed code
            if when < EARLIEST:
                return error(400, 1038, "moment: not before 1970-01-01 03:00:00")  # assumed code
            wanted.append((name, when.strftime("%Y-%m-%d %H:%M:%S")))
            continue
        if name == "eventType" and value not in EVENT_TYPES:
            return error(400, 1002, f"eventType '{value}' is not one of the audit's")  # assumed code
        wanted.append((name, value))
    rows = [
        _public(context)
        for context in reversed(contexts)
        if all(_matches(context, name, value) for name, value in wanted)
    ]
    return _page(rows, limit, offset)


def list_events(context: dict[str, Any], request: Request) -> Reply:
    bounds = page_bounds(request, AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MOST)
    if isinstance(bounds, Reply):
        return bounds
    limit, offset = bounds
    return _page(list(context["_events"]), limit, offset)


def _matches(context: dict[str, Any], name: str, value: str) -> bool:
    if name == "moment>":
        return bool(context["moment"] >= value)
    if name == "moment<":
        return bool(context["moment"] <= value)
    return bool(context.get(name) == value)


def _public(context: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in context.items() if not k.startswith("_")}


def _page(rows: list[dict[str, Any]], limit: int, offset: int) -> Reply:
    meta = {"size": len(rows), "limit": limit, "offset": offset}
    return Reply(200, {"meta": meta, "rows": rows[offset : offset + limit]})
