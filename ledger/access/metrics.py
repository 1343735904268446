"""Who may read a /metrics served outside the API (`ledger adapters run`'s and `ledger consume`'s):
with LEDGER_METRICS_AUTH=required, as the API's gate has it (CONTRACT §5)."""

from __future__ import annotations

from collections.abc import Callable

from ledger.access.book import TokenBook, Unauthenticated

# Why this Authorization header (None: none was sent) is not enough to read /metrics, in the words
# the API's 401 says it (ledger.access.book); None: it is enough.
MetricsGuard = Callable[[str | None], str | None]


def metrics_guard(book: TokenBook, *, required: bool) -> MetricsGuard:
    """Open while no token exists (unless LEDGER_AUTH=required), else any valid token: every role
    reads. The book must be started (it refreshes the tokens)."""

    def refusal(authorization: str | None) -> str | None:
        if not (required or book.any_tokens):
            return None
        # The API's own reading of the header (AuthGate): the same refusals, in the same words.
        try:
            book.grant_for_header(
                None if authorization is None else authorization.encode("latin-1", "replace")
            )
        except Unauthenticated as refused:
            return str(refused)
        return None

    return refusal
