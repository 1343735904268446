"""What the unit tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own, for driving a protocol or a transport by hand."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()
