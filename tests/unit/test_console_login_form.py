"""The console's login form as the server reads it (ledger/api/console/session.py): its own two fields,
`token` and `next`, wherever they stand among fields it does not read."""

from __future__ import annotations

import asyncio
from typing import Any

from ledger.api.console import session

EXTRA_FIELDS = 10


def _fields(body: bytes) -> dict[str, str]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return asyncio.run(session._form_fields(receive))


def test_the_token_and_the_page_are_read_after_fields_the_form_does_not_have() -> None:
    # A browser extension's hidden inputs may come first in the form, and the browser sends them in
    # that order: only the first four fields were read, and such a login was refused 401.
    extra = "&".join(f"extra{number}=1" for number in range(EXTRA_FIELDS))
    fields = _fields(f"{extra}&token=sl_live_abc&next=%2Fui%2Fadapters".encode())
    assert fields == {"token": "sl_live_abc", "next": "/ui/adapters"}


def test_the_first_of_each_field_counts() -> None:
    assert _fields(b"token=first&token=second&next=/ui") == {"token": "first", "next": "/ui"}
