"""Where an adapter's reading of another system has got to (`adapter_cursors`, migration 3): a
moment, by name, saved as each part read in full is done, so that a restart reads on from there."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.db import now_text, transaction


def load_cursor(recorder: Any, name: str) -> datetime | None:
    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT value FROM adapter_cursors WHERE name = %s", (name,))
    return None if row is None else datetime.fromisoformat(row["value"])


def save_cursor(recorder: Any, name: str, value: datetime) -> None:
    with transaction(recorder) as tx:
        tx.execute(
            "INSERT INTO adapter_cursors (name, value, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (name, value.isoformat(), now_text()),
        )
