"""Every problem `type` the API answers, with its statuses and when: the one list the OpenAPI
document names them from. tests/e2e/test_openapi_document.py finds each problem the code makes
and fails on one this list, and so the document, does not give with its status."""

from __future__ import annotations

from dataclasses import dataclass

# Said of a problem answered only where the document has no operation: a path or method no
# operation has, a CORS preflight (OPTIONS), the console's pages.
OUTSIDE_OPERATIONS = "not answered by the operations below"


@dataclass(frozen=True)
class ProblemType:
    statuses: tuple[int, ...]
    when: str


PROBLEM_TYPES = {
    "invalid-request": ProblemType(
        (400, 422),
        "422: a parameter, field or body refused, `errors` names each; 400: bytes the server could not "
        "read as an HTTP request, or headers over LEDGER_HTTP_HEADER_BYTES_MAX (answered by the server "
        "itself, with no X-Request-ID)",
    ),
    "incomplete-body": ProblemType((400,), "the connection ended before the whole body arrived"),
    "invalid-host": ProblemType((400,), "a Host not in LEDGER_ALLOWED_HOSTS, two Host lines, or none"),
    "cors-preflight-refused": ProblemType(
        (400,), f"a CORS preflight (OPTIONS) LEDGER_CORS_ORIGINS does not allow; {OUTSIDE_OPERATIONS}"
    ),
    "unauthorized": ProblemType((401,), "no valid token; with WWW-Authenticate"),
    "forbidden": ProblemType((403,), "the token lacks a role, store or source: `role`, `store` or `source`"),
    "not-found": ProblemType((404,), f"no operation has this path; {OUTSIDE_OPERATIONS}"),
    "unknown-reservation": ProblemType((404,), "no such reservation"),
    "method-not-allowed": ProblemType((405,), f"the path takes other methods (Allow); {OUTSIDE_OPERATIONS}"),
    "insufficient-stock": ProblemType((409,), "not enough for every line: `shortfall`; nothing was recorded"),
    "reservation-conflict": ProblemType((409,), "the reservation id exists with other lines"),
    "content-too-large": ProblemType((413,), "a body over LEDGER_BODY_BYTES_MAX, declared or sent"),
    "answer-too-large": ProblemType((413,), f"a console page too large to show; {OUTSIDE_OPERATIONS}"),
    "entry-too-large": ProblemType((413,), f"a console entry too large to show; {OUTSIDE_OPERATIONS}"),
    "unsupported-media-type": ProblemType((415,), "a content type the operation does not take"),
    "submission-failed": ProblemType(
        (422,), "the ledger could not record the events, and sending them again will not change that"
    ),
    "too-many-to-explain": ProblemType(
        (422,), "more open reservations or transfers than LEDGER_EXPLAIN_ITEMS_MAX"
    ),
    "too-many-stores": ProblemType(
        (422,), "more stores hold the reservation id than LEDGER_RESERVATION_STORES_MAX"
    ),
    "rate-limited": ProblemType((429,), "the token is over its rate; with Retry-After"),
    "internal-error": ProblemType((500,), "a bug; `detail` names the exception's class, the log the rest"),
    "unavailable": ProblemType((503,), "the writer cannot take writes now; with Retry-After"),
    "database-unavailable": ProblemType((503,), "the database is unavailable now; with Retry-After"),
    "timeout": ProblemType((503,), "no answer in time, the outcome unknown; with Retry-After"),
    "over-capacity": ProblemType((503,), "the worker holds LEDGER_HTTP_CONNECTIONS_MAX connections"),
    "position-not-reached": ProblemType(
        (503,), "this instance has not applied `min_position` yet: `position`"
    ),
    "not-ready": ProblemType((503,), "this instance should not be sent traffic now, `detail` says why"),
    "http-error": ProblemType((), f"any other status the web framework answers; {OUTSIDE_OPERATIONS}"),
}

# The problem of an error the web framework (Starlette) raises, by its status; `http-error` else.
HTTP_ERROR_TYPES = {404: "not-found", 405: "method-not-allowed", 413: "content-too-large"}


def type_description() -> str:
    """The `type` member's description: one line a slug, with its statuses."""
    lines = [
        f"- `{slug}` ({', '.join(map(str, problem.statuses)) or 'any'}): {problem.when}"
        for slug, problem in PROBLEM_TYPES.items()
    ]
    return "a stable slug (a relative URI reference), one of:\n" + "\n".join(lines)
