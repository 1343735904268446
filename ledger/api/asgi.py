"""The ASGI factory uvicorn calls in each worker process (`ledger serve --workers N`)."""

from __future__ import annotations

import os
import sys

from ledger.api.app import ASGIApp, create_asgi
from ledger.bootstrap import build_ledger, intake_limits, tune_gc
from ledger.config import Settings


def create() -> ASGIApp:
    settings = Settings()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    tune_gc()
    if settings.writer_socket:
        os.nice(settings.http_nice)
    return create_asgi(build_ledger(settings), settings, intake_limits(settings))
