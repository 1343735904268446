"""Tracing with OpenTelemetry, off unless LEDGER_TRACING says otherwise (`console` or `otlp`).

`active` is the one switch every hook tests: None while tracing is off, so that a hook in a hot
path (an HTTP request, a write, a writer batch) costs one attribute read and one comparison, and
nothing of OpenTelemetry's SDK is imported (spans.py, which uses it, is imported only here, and
only when tracing is turned on). The optional extra `stock-ledger[tracing]` installs the SDK and
the OTLP exporter; the exporter reads the standard OTEL_* variables (endpoint, headers, service
name).

A span crosses a process boundary (the writer's socket) or a queue (the writer thread's) as its
W3C `traceparent` text (spans.Tracing.current_trace_parent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ledger.telemetry.spans import Tracing

TracingMode = Literal["off", "console", "otlp"]
SERVICE_NAME = "stock-ledger"  # unless OTEL_SERVICE_NAME names it otherwise

# The tracing of this process, or None while it is off (the default).
active: Tracing | None = None


class TracingUnavailable(Exception):
    """Tracing was asked for, and the `tracing` extra is not installed: says so in one line."""


def configure_tracing(mode: TracingMode, process: str) -> None:
    """Turns tracing on in this process, exporting to the console or over OTLP/HTTP; `off` leaves
    things as they are (nothing is imported). `process` names this process's part (`http`,
    `writer`, `consume`) on every span it exports. Once per process: a second call (a test that
    builds a second ledger) changes nothing."""
    global active  # noqa: PLW0603 - the one switch, read by every hook as a module attribute
    if mode == "off" or active is not None:
        return
    try:
        from ledger.telemetry.spans import Tracing, exporting_provider

        provider = exporting_provider(mode, process)
    except ImportError as error:
        raise _unavailable(mode, error) from None
    active = Tracing(provider)


def check_tracing(mode: TracingMode) -> None:
    """Raises TracingUnavailable now, before any process starts, where `mode` cannot be had here:
    told by the writer process as it failed to start, it read as the writer's fault."""
    if mode == "off":
        return
    try:
        import ledger.telemetry.spans  # noqa: F401 - only whether it imports
    except ImportError as error:
        raise _unavailable(mode, error) from None


def _unavailable(mode: TracingMode, error: ImportError) -> TracingUnavailable:
    return TracingUnavailable(
        f"LEDGER_TRACING={mode} needs OpenTelemetry's SDK, and {error.name or error} is not "
        "installed: pip install 'stock-ledger[tracing]' (or set LEDGER_TRACING=off)"
    )


def install(tracing: Tracing | None) -> None:
    """Sets (or, with None, turns off) this process's tracing: for tests, which export to memory."""
    global active  # noqa: PLW0603 - see configure_tracing
    active = tracing
