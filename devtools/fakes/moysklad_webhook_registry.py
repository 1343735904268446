"""The fake MoySklad's webhook registries: `entity/webhook` (md/dictionaries/_webhook.md) and
`entity/webhookstock` (md/dictionaries/_webhookstock.md): list, create, get, update, delete, and
the rules the pages state: unique by entityType, action and url (stockType, reportType and url for
stock webhooks); at most 5 urls per entityType and action; url at most 255 characters; no webhook
for some entity types. What is notified, and when: moysklad.py; the delivery:
moysklad_webhooks.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from adapters.httpserver import Reply, Request
from devtools.fakes.moysklad_reports import REPORT_TYPES
from devtools.fakes.moysklad_wire import ACCOUNT_ID, error

WEBHOOK_ACTIONS = ("CREATE", "UPDATE", "DELETE")
WEBHOOK_ENTITY_TYPES_REFUSED = ("webhook", "discount", "notes")
WEBHOOK_URL_CHARS_MAX = 255
WEBHOOK_URLS_PER_KIND_MAX = 5  # for a user; 1 for a solution
WEBHOOK_RULE_ERROR_CODE = 3000  # assumed: the pages state the rules, not their error codes
# diffType: "Указывается только для действия UPDATE. Возможные значения: [NONE, FIELDS] (по
# умолчанию NONE)"; with FIELDS an UPDATE notification lists the fields changed (updatedFields).
DIFF_TYPES = ("NONE", "FIELDS")

Registry = dict[str, dict[str, Any]]  # a webhook by its id
Meta = Callable[[str, str], dict[str, Any]]  # (entity, id) -> {"meta": ...}


def handle_registry(registry: Registry, meta: Meta, parts: list[str], request: Request) -> Reply:
    """`parts`: the path after the base, split: `entity/webhook[/id]` or `entity/webhookstock[/id]`."""
    kind = parts[1]
    stock = kind == "webhookstock"
    if len(parts) == 2 and request.method == "GET":
        rows = list(registry.values())
        return Reply(200, {"meta": {"size": len(rows), "limit": 1000, "offset": 0}, "rows": rows})
    if len(parts) == 2 and request.method == "POST":
        body = request.json()
        if not isinstance(body, dict):
            return error(400, 2016, "one webhook per request in this fake")
        return _create(registry, meta, kind, body, stock)
    if len(parts) == 3 and parts[2] in registry:
        hook = registry[parts[2]]
        if request.method == "GET":
            return Reply(200, hook)
        if request.method == "DELETE":
            del registry[parts[2]]
            return Reply(200, b"")
        if request.method == "PUT":
            asked = {k: v for k, v in (request.json() or {}).items() if k != "meta"}
            changed = {**hook, **asked}
            if not stock and changed.get("action") != "UPDATE" and "diffType" not in asked:
                changed.pop("diffType", None)  # an UPDATE webhook's default, not kept past its action
            refused = _refused(registry, changed, stock, besides=parts[2])
            if refused is not None:
                return refused
            registry[parts[2]] = changed
            return Reply(200, changed)
    return error(404, 1021, f"{kind} {'/'.join(parts[2:])} not found")


def _create(registry: Registry, meta: Meta, kind: str, body: dict[str, Any], stock: bool) -> Reply:
    hook_id = str(uuid.uuid4())
    hook = {
        **meta(kind, hook_id),
        "id": hook_id,
        "accountId": ACCOUNT_ID,
        "enabled": body.get("enabled", True),
        **{k: v for k, v in body.items() if k != "meta"},
    }
    if not stock:
        hook["method"] = "POST"
        if hook.get("action") == "UPDATE":
            hook.setdefault("diffType", "NONE")  # shown for UPDATE webhooks, as the listing does
    refused = _refused(registry, hook, stock)
    if refused is not None:
        return refused
    registry[hook_id] = hook
    return Reply(200, hook)


def _refused(registry: Registry, hook: dict[str, Any], stock: bool, besides: str = "") -> Reply | None:
    key_fields = ("stockType", "reportType") if stock else ("entityType", "action")
    for name in (*key_fields, "url"):
        if not hook.get(name):
            return error(400, 3000, f"'{name}' is required")  # assumed code
    url = str(hook["url"])
    if len(url) > WEBHOOK_URL_CHARS_MAX:
        return error(400, WEBHOOK_RULE_ERROR_CODE, f"url longer than {WEBHOOK_URL_CHARS_MAX}")
    if stock and (hook["stockType"] not in ("stock",) or hook["reportType"] not in REPORT_TYPES):
        return error(400, WEBHOOK_RULE_ERROR_CODE, "stockType [stock], reportType [all, bystore]")
    if not stock and (
        hook["action"] not in WEBHOOK_ACTIONS or hook["entityType"] in WEBHOOK_ENTITY_TYPES_REFUSED
    ):
        return error(400, WEBHOOK_RULE_ERROR_CODE, "no webhook for that entityType or action")
    diff_type = hook.get("diffType")
    if not stock and diff_type is not None and (diff_type not in DIFF_TYPES or hook["action"] != "UPDATE"):
        # Assumed: the page says diffType is given for UPDATE only, not how another is answered.
        return error(400, WEBHOOK_RULE_ERROR_CODE, "diffType is NONE or FIELDS, for UPDATE only")
    same_kind = [
        other
        for other_id, other in registry.items()
        if other_id != besides and all(other.get(k) == hook.get(k) for k in key_fields)
    ]
    if any(other["url"] == url for other in same_kind):
        return error(400, WEBHOOK_RULE_ERROR_CODE, f"{', '.join(key_fields)} and url must be unique")
    if len(same_kind) >= WEBHOOK_URLS_PER_KIND_MAX:
        return error(400, WEBHOOK_RULE_ERROR_CODE, f"at most {WEBHOOK_URLS_PER_KIND_MAX} urls")
    return None
