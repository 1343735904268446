"""1C-Bitrix REST: how a call is made, paced, and told apart from a refusal (the client).

What the ledger pushes with it: bitrix.py; which error codes mean "not now": bitrix_errors.py.

Calls go to an inbound webhook URL, `https://<site>/rest/<user>/<token>/<method>`, and always
through `batch`. What the public REST documentation says, and where (bitrix24/b24restdocs on
GitHub, the source of apidocs.bitrix24.com):

- `batch` (api-reference/how-to-call-rest-api/batch.md): params `halt` and `cmd`, an object of
  commands written as `method?query` with URL-encoded parameters; "The number of requests in a
  batch is limited to 50"; later commands may use `$result[key][field]...` of earlier ones; the
  answer is `{"result": {"result": {...}, "result_error": {...}, ...}, "time": {...}}`, so one
  failing command is reported by its key while the others succeed (halt = 0).
- Limits (limits.md): a leaky bucket per portal; past X requests the answer is HTTP 503 with
  `QUERY_LIMIT_EXCEEDED`, and the counter drains by Y a second (X = 50, Y = 2; Enterprise 250
  and 5). A batch counts as one request. We keep our own bucket of the same shape and treat 503
  (and any 5xx or no answer) as "retry with backoff". A method whose calls ran more than 480 s in
  10 minutes is blocked (429 `OPERATION_TIME_LIMIT`; in a batch, each of its commands answers that
  in `result_error`): retried once the answer's `operating_reset_at` has passed, and a command the
  portal could not run (bitrix_errors.py) never counts against its item.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.bitrix_errors import OPERATION_TIME_LIMIT, is_unavailable, reset_after_s
from adapters.http import HttpClient, TransportError
from adapters.limits import LeakyBucket
from adapters.outbound import TargetUnavailable

BATCH_COMMANDS_MAX = 50  # batch.md: "The number of requests in a batch is limited to 50"


class Connection(Protocol):
    """What the client needs of the settings: where the portal is and how fast it may be called."""

    @property
    def webhook_url(self) -> str: ...

    @property
    def batch_commands_max(self) -> int: ...

    @property
    def burst_requests_max(self) -> int: ...  # X of the leaky bucket

    @property
    def requests_per_s(self) -> float: ...  # Y of the leaky bucket

    @property
    def timeout_s(self) -> float: ...


def php_query(params: Mapping[str, Any]) -> str:
    """Parameters as PHP's http_build_query writes them: fields[quantity]=5&fields[quantityReserved]=1."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), inner)
        elif isinstance(value, list | tuple):
            for index, inner in enumerate(value):
                walk(f"{prefix}[{index}]", inner)
        elif isinstance(value, bool):
            pairs.append((prefix, "Y" if value else "N"))
        elif value is not None:
            pairs.append((prefix, str(value)))

    walk("", params)
    # $result[...] references must stay readable by the server: keep $ [ ] unescaped.
    return urllib.parse.urlencode(pairs, safe="$[]")


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    results: dict[str, Any]
    errors: dict[str, str]  # commands refused for what they asked (bitrix_errors.py: not a limit)
    totals: dict[str, int]  # a list command's row count over all its pages (result_total)
    # Commands the portal could not run for now (a blocked method, an overload): by key, why.
    unavailable: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None  # the latest operating_reset_at of those, from now

    def raise_if_unavailable(self, done_keys: frozenset[str] = frozenset()) -> None:
        """A command the portal could not run stops the push to retry it later: its item is not refused."""
        if self.unavailable:
            key, reason = next(iter(self.unavailable.items()))
            raise TargetUnavailable(
                f"bitrix batch: {len(self.unavailable)} command(s) not run, {key}: {reason}",
                self.retry_after_s,
                done_keys,
            )


class BitrixClient:
    """Calls to one portal through its inbound webhook, paced by our copy of its leaky bucket."""

    def __init__(self, config: Connection) -> None:
        if not 1 <= config.batch_commands_max <= BATCH_COMMANDS_MAX:
            raise ValueError(f"a Bitrix batch holds 1 to {BATCH_COMMANDS_MAX} commands")
        self.config = config
        self.http = HttpClient(config.webhook_url, config.timeout_s)
        # One request of margin: the portal counts a request when it arrives, we when we send it.
        self.bucket = LeakyBucket(max(1, config.burst_requests_max - 1), config.requests_per_s)
        self.requests_sent = 0

    def batch(
        self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, halt: bool = False
    ) -> BatchAnswer:
        """Runs up to 50 commands in one request. Raises TargetUnavailable when the whole request failed."""
        if not 0 < len(commands) <= self.config.batch_commands_max:
            raise ValueError(
                f"a batch holds 1 to {self.config.batch_commands_max} commands, not {len(commands)}"
            )
        cmd = {key: f"{method}?{php_query(params)}" for key, (method, params) in commands.items()}
        body = self.call("batch", {"halt": 1 if halt else 0, "cmd": cmd})
        result = body.get("result") or {}
        results = result.get("result") or {}
        raw_errors = result.get("result_error") or {}
        times = result.get("result_time") or {}
        errors: dict[str, str] = {}
        unavailable: dict[str, str] = {}
        resets_s: list[float] = []
        for key, error in raw_errors.items() if isinstance(raw_errors, Mapping) else []:
            code = str(error.get("error", "error")) if isinstance(error, Mapping) else str(error)
            text = (
                f"{code}: {error.get('error_description', '')}".strip(": ")
                if isinstance(error, Mapping)
                else code
            )
            if not is_unavailable(code):
                errors[key] = text
                continue
            unavailable[key] = text
            reset_s = reset_after_s(times.get(key) if isinstance(times, Mapping) else None)
            if reset_s is not None:
                resets_s.append(reset_s)
        raw_totals = result.get("result_total") or {}
        totals = {
            key: int(total)
            for key, total in (raw_totals.items() if isinstance(raw_totals, Mapping) else [])
            if isinstance(total, int | str) and str(total).isdigit()
        }
        return BatchAnswer(
            dict(results) if isinstance(results, Mapping) else {},
            errors,
            totals,
            unavailable,
            max(resets_s) if resets_s else None,
        )

    def call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self.bucket.acquire()
        self.requests_sent += 1
        try:
            answer = self.http.request("POST", method, json_body=params)
        except TransportError as error:
            raise TargetUnavailable(f"bitrix {method}: {error}") from error
        body = _json_or_none(answer.body)
        error_code = body.get("error") if isinstance(body, dict) else None
        if answer.status == 503 or error_code == "QUERY_LIMIT_EXCEEDED":
            raise TargetUnavailable(f"bitrix {method}: QUERY_LIMIT_EXCEEDED", 1 / self.config.requests_per_s)
        if answer.status == 429 or error_code == OPERATION_TIME_LIMIT:
            # The method is blocked for minutes: calling again after the usual backoff only meets the
            # block again. Wait until the portal releases part of the limit, when it says so.
            time_info = body.get("time") if isinstance(body, dict) else None
            raise TargetUnavailable(f"bitrix {method}: {OPERATION_TIME_LIMIT}", reset_after_s(time_info))
        if answer.status >= 500 or not isinstance(body, dict):
            raise TargetUnavailable(f"bitrix {method}: HTTP {answer.status}")
        if error_code or answer.status >= 400:
            # A top-level error (bad token, no access, overload) concerns every item alike. Its code
            # may be 0 ("other errors") or missing: the status alone says it is one.
            code = f"HTTP {answer.status} {error_code}" if answer.status >= 400 else error_code
            raise TargetUnavailable(f"bitrix {method}: {code}: {body.get('error_description', '')}")
        return body


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
