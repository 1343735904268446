"""Who may read a /metrics served outside the API (`ledger adapters run`'s and `ledger consume`'s):
with LEDGER_METRICS_AUTH=required, as the API's gate has it (CONTRACT §5)."""

from __future__ import annotations

from collections.abc import Callable

from ledger.access.book import TokenBook, Unauthenticated
from ledger.access.tokens import bearer_token

# Is this Authorization header (None: none was sent) enough to read /metrics?
MetricsGuard = Callable[[str | None], bool]


def metrics_guard(book: TokenBook, *, required: bool) -> MetricsGuard:
    """Open while no token exists (unless LEDGER_AUTH=required), else any valid token: every role
    reads. The book must be started (it refreshes the tokens)."""

    def allowed(authorization: str | None) -> bool:
        if not (required or book.any_tokens):
            return True
        token = bearer_token(authorization.encode("latin-1", "replace") if authorization else None)
        try:
            book.grant_for(token)
        except Unauthenticated:
            return False
        return True

    return allowed
