"""How every process of the service logs, configured in one place (`logging_config`): the
ledger's own loggers, uvicorn's, and the Kafka client library's, in text or in JSON lines.

Each line names the request it was caused by (`request_id`, an HTTP worker) or the requests of the
batch it was logged for (`request_ids`, the writer), read from request_ids' context variables when
the line is written: nothing is formatted for a line that is not logged."""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ledger.telemetry.repeats import RepeatsFolded
from ledger.telemetry.request_ids import BATCH_REQUEST_IDS, current_request_id

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A line's own fields (the access log's method, path, status...): logger.info(..., extra={FIELDS: {...}})
FIELDS = "ledger_fields"


def _request_context() -> tuple[str | None, list[str] | None]:
    batch = BATCH_REQUEST_IDS.get()
    return current_request_id(), (None if batch is None else list(batch()))


class TextFormatter(logging.Formatter):
    """The classic line, with `[request_id=...]` (or `[request_ids=a,b]`) after the message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id, batch = _request_context()
        if request_id is not None:
            line += f" [request_id={request_id}]"
        if batch is not None:
            line += f" [request_ids={','.join(batch)}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id or
    request_ids when there are, the line's own fields, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, batch = _request_context()
        if request_id is not None:
            entry["request_id"] = request_id
        if batch is not None:
            entry["request_ids"] = batch
        fields = getattr(record, FIELDS, None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line to the standard error of the moment, not to the one that was current when
    logging was configured: a command run in-process (the tests run `ledger` commands so) would
    otherwise leave the root logger writing to a stream that has since been closed. A stream set
    explicitly (`setStream`) is kept."""

    _explicit: Any = None

    @property
    def stream(self) -> Any:
        return self._explicit if self._explicit is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        self._explicit = None if value is sys.stderr else value


def logging_config(log_format: LogFormat, kafka_level: str = "WARNING") -> dict[str, Any]:
    """A logging.config.dictConfig for a process of the service. uvicorn takes it as its
    `log_config`, so that its worker processes apply it too; the writer process applies it at
    start. uvicorn's loggers lose their own handlers and go through the root's, so every line
    has the one format; the Kafka clients' (`kafka.*`) log at `kafka_level` and above, their
    repeated lines folded (ledger/telemetry/repeats.py)."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    through_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ledger": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "filters": {"repeats_folded": {"()": f"{RepeatsFolded.__module__}.{RepeatsFolded.__qualname__}"}},
        "handlers": {
            "stderr": {
                "()": f"{StderrHandler.__module__}.{StderrHandler.__qualname__}",
                "formatter": "ledger",
                "filters": ["repeats_folded"],
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": "INFO", **through_root},
            "uvicorn.error": {"level": "INFO", **through_root},
            "uvicorn.access": {"level": "INFO", **through_root},
            "kafka": {"level": kafka_level},
        },
    }


def configure_logging(log_format: LogFormat, kafka_level: str = "WARNING") -> None:
    logging.config.dictConfig(logging_config(log_format, kafka_level))
