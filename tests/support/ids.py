"""Unique store ids and SKUs, so tests sharing a database or a server keep apart."""

from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
