"""Which Bitrix error codes mean the portal cannot take a call for now, and until when.

The REST documentation lists system errors that any method may answer, whatever its parameters
(bitrix24/b24restdocs, _includes/system-errors.md, included by error-codes.md). Among them, these
say the portal is limited or failing, not that it refused what the call asked for:

- 500 `INTERNAL_SERVER_ERROR` and 500 `ERROR_UNEXPECTED_ANSWER`: "Retry the call";
- 503 `QUERY_LIMIT_EXCEEDED`: the request intensity limit (limits.md: a leaky bucket per portal);
- 429 `OPERATION_TIME_LIMIT`: "Method is blocked due to operation time limit" (limits.md: a method
  whose calls ran more than 480 s within 10 minutes is blocked for every application and webhook of
  the portal, other methods go on; "The block is lifted automatically");
- 401 `OVERLOAD_LIMIT`: the REST API is blocked by hand until Bitrix's support lifts it.

Inside a `batch`, each command answers by its key in `result_error`, so a blocked method reports
its block there while the batch itself answers 200. Such a command is the portal unavailable for
it (retry later, park nothing), never its item refused: parking would leave the site showing a
stale quantity until the SKU changed again.

Every answer's `time` (a batch: `result_time`, by command key) carries `operating_reset_at`, "the
time in timestamp format when a portion of the limit for that method will be released"
(limits.md): when it is there, the next attempt waits for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

OPERATION_TIME_LIMIT = "OPERATION_TIME_LIMIT"
UNAVAILABLE_CODES = frozenset(
    {
        "INTERNAL_SERVER_ERROR",
        "ERROR_UNEXPECTED_ANSWER",
        "QUERY_LIMIT_EXCEEDED",
        OPERATION_TIME_LIMIT,
        "OVERLOAD_LIMIT",
    }
)


def is_unavailable(code: str) -> bool:
    """True when an error code says the portal cannot take the call now, not that it refused it."""
    return code in UNAVAILABLE_CODES


def reset_after_s(time_info: Any, now_s: float | None = None) -> float | None:
    """Seconds until the `operating_reset_at` of an answer's `time`, or None when it names none."""
    if not isinstance(time_info, Mapping):
        return None
    reset_at = time_info.get("operating_reset_at")
    if isinstance(reset_at, bool) or not isinstance(reset_at, int | float | str):
        return None
    try:
        reset_at_s = float(reset_at)
    except ValueError:
        return None
    if not math.isfinite(reset_at_s):  # NaN or infinity names no time at all
        return None
    return max(0.0, reset_at_s - (time.time() if now_s is None else now_s))
