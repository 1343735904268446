"""`ledger adapters register-webhooks`: subscribes the ledger's URL to what it follows in MoySklad.

md/dictionaries/_webhook.md: `GET entity/webhook` lists the account's webhooks (made through API
1.2); `POST entity/webhook` with `url` (at most 255 characters), `action` and `entityType` makes
one; the combination entityType, action and url must be unique, and at most 5 urls may share an
entityType and action (1 for a solution); `PUT entity/webhook/{id}` with `enabled` turns one on.
md/dictionaries/_webhookstock.md: the same for `entity/webhookstock`, keyed by stockType,
reportType and url.

The ledger follows `demand` CREATE, UPDATE and DELETE (moysklad_demands.py), `customerorder`
UPDATE and DELETE (moysklad_order_ends.py) and the stock notification `stock`/`bystore`
(moysklad_stock.py), all at one URL. The command lists what exists
first and creates only what is missing (a disabled one is enabled again), so running it twice
creates nothing (one whose diffType differs is updated); it prints one line per subscription
saying what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.masking import mask
from adapters.moysklad import MoySkladClient, errors_text
from adapters.outbound import TargetUnavailable

WEBHOOK_URL_CHARS_MAX = 255  # _webhook.md: url, "Допустимая длина до 255 символов"
LIST_PAGE_MAX = 1000
LIST_PAGES_MAX = 100
DEMAND_ACTIONS = ("CREATE", "UPDATE", "DELETE")
STOCK_SUBSCRIPTION = {"stockType": "stock", "reportType": "bystore"}


class RegistrationError(ValueError):
    """MoySklad refused a subscription (its own error text, masked)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    resource: str  # entity/webhook | entity/webhookstock
    key: dict[str, str]  # what, with the url, makes it unique
    settings: dict[str, str] = field(default_factory=dict)  # set on it too, not part of the key

    @property
    def label(self) -> str:
        return " ".join(self.key.values())


SUBSCRIPTIONS = (
    *(Subscription("entity/webhook", {"entityType": "demand", "action": a}) for a in DEMAND_ACTIONS),
    # FIELDS: each notification lists the fields changed (`updatedFields`), so that an order's
    # edit that is not of its state is passed without reading the order back.
    Subscription(
        "entity/webhook", {"entityType": "customerorder", "action": "UPDATE"}, {"diffType": "FIELDS"}
    ),
    Subscription("entity/webhook", {"entityType": "customerorder", "action": "DELETE"}),
    Subscription("entity/webhookstock", STOCK_SUBSCRIPTION),
)


def webhook_url(public_base_url: str, secret: str) -> str:
    url = f"{public_base_url.rstrip('/')}/moysklad/webhook/{secret}"
    if not url.startswith(("https://", "http://")):
        raise RegistrationError(f"the webhook URL must be http(s): {mask(url)}")
    if len(url) > WEBHOOK_URL_CHARS_MAX:
        raise RegistrationError(f"MoySklad takes webhook URLs of at most {WEBHOOK_URL_CHARS_MAX} characters")
    return url


def register_webhooks(client: MoySkladClient, url: str) -> list[str]:
    """Makes sure each subscription exists and is enabled for `url`; returns what was done."""
    done = []
    existing = {resource: _list(client, resource) for resource in {s.resource for s in SUBSCRIPTIONS}}
    for subscription in SUBSCRIPTIONS:
        found = next(
            (
                row
                for row in existing[subscription.resource]
                if row.get("url") == url and all(row.get(k) == v for k, v in subscription.key.items())
            ),
            None,
        )
        settled = all(found.get(k) == v for k, v in subscription.settings.items()) if found else False
        if found is not None and found.get("enabled", True) and settled:
            done.append(f"{subscription.label}: subscribed already ({found.get('id')})")
            continue
        if found is not None:
            answer = client.request(
                "PUT",
                f"{subscription.resource}/{found['id']}",
                json_body={"enabled": True, **subscription.settings},
            )
            verb = "updated" if found.get("enabled", True) else "enabled again"
        else:
            body: dict[str, Any] = {"url": url, **subscription.key, **subscription.settings}
            if subscription.resource == "entity/webhookstock":
                body["enabled"] = True
            answer = client.request("POST", subscription.resource, json_body=body)
            verb = "subscribed"
        if answer.status != 200:
            raise RegistrationError(
                mask(f"{subscription.label}: MoySklad answered HTTP {answer.status}: {errors_text(answer)}")
            )
        made = (answer.json() or {}).get("id") or (found or {}).get("id")
        done.append(f"{subscription.label}: {verb} ({made})")
    return done


def _list(client: MoySkladClient, resource: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(LIST_PAGES_MAX):
        answer = client.request("GET", resource, params={"limit": LIST_PAGE_MAX, "offset": len(rows)})
        if answer.status != 200:
            raise TargetUnavailable(f"moysklad {resource}: HTTP {answer.status}: {errors_text(answer)}")
        body = answer.json() or {}
        page = list(body.get("rows") or [])
        rows += page
        if not page or len(rows) >= int((body.get("meta") or {}).get("size") or 0):
            return rows
    raise TargetUnavailable(f"moysklad {resource}: more than {LIST_PAGES_MAX} pages")
