"""The ASGI factory uvicorn calls in each worker process (`ledger serve --workers N`)."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from ledger.api.app import create_app
from ledger.bootstrap import build_ledger, intake_limits
from ledger.config import Settings


def create() -> FastAPI:
    settings = Settings()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return create_app(build_ledger(settings), settings, intake_limits(settings))
