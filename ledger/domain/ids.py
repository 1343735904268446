"""What an id is, wherever one is taken: a store, a SKU, a source, an event, a reservation, an
order's part, a channel, a scope's name (CONTRACT §1: 1 to 64 of letters, digits and `-_.:`).

One pattern for the intake, the API's schemas and documents, the settings and access control: an
id one of them took and another refused would be recorded and then unreadable."""

from __future__ import annotations

import re

ID_CHARS_MAX = 64
ID_BODY = rf"[A-Za-z0-9\-_.:]{{1,{ID_CHARS_MAX}}}"
ID_PATTERN = re.compile(ID_BODY)  # always with fullmatch: `$` would pass a final newline
ID_REGEX = rf"^{ID_BODY}$"  # anchored, for JSON Schema (the documents) and pydantic
