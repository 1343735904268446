"""How the fake MoySklad delivers a webhook notification, as md/dictionaries/_webhook.md says
MoySklad does: a POST with `?requestId=...` that must be answered 200 or 204 within 1500 ms; on any
other answer, or none in time, 3 more attempts follow at once, with no pause between them; then the
notification is dropped for good. What is notified, and when: moysklad.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

# _webhook.md: "200 or 204 within 1500 ms", then "3 more attempts", one after the other.
WEBHOOK_ANSWER_DEADLINE_S = 1.5
WEBHOOK_ATTEMPTS_MAX = 1 + 3
WEBHOOK_ACCEPTED_STATUSES = (200, 204)


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    status: int | None  # None: no answer within the deadline (or no connection)
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    request_id: str
    attempts: tuple[WebhookAttempt, ...]

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].status in WEBHOOK_ACCEPTED_STATUSES


def send_webhook(url: str, body: dict[str, Any], request_id: str | None = None) -> WebhookOutcome:
    """Delivers one notification as MoySklad does: up to 4 attempts in a row, then dropped."""
    request_id = request_id or str(uuid.uuid4())
    data = json.dumps(body, ensure_ascii=False).encode()
    target = f"{url}{'&' if '?' in url else '?'}requestId={request_id}"
    attempts = []
    for _ in range(WEBHOOK_ATTEMPTS_MAX):
        started = time.monotonic()
        status: int | None
        request = urllib.request.Request(
            target, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_ANSWER_DEADLINE_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            status = None
        elapsed_s = time.monotonic() - started
        if status in WEBHOOK_ACCEPTED_STATUSES and elapsed_s > WEBHOOK_ANSWER_DEADLINE_S:
            status = None  # answered, but too late: MoySklad has given up on this attempt
        attempts.append(WebhookAttempt(status, elapsed_s))
        if status in WEBHOOK_ACCEPTED_STATUSES:
            break
    return WebhookOutcome(request_id, tuple(attempts))
