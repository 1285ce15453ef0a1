"""Structured logs (docs/operations.md "Logs and request ids"): one JSON object per line, behind a switch
(``[gateway] json_logs`` or ``GREENBRIDGE_JSON_LOGS=1``), read by every process (gateway, worker, beat).

Each record carries the request id and the job id of its context (cds.store.jobs.REQUEST_ID and JOB_ID: the
gateway sets the request's, the worker the id of the request that asked for the job it runs), so one id follows a
notification or a consent from the gateway's log into the log of the worker that ran the jobs it made. Fields a
caller passes with ``extra=`` (the gateway's request lines: method, route, status, duration) are kept as fields.
Messages are written as the code formats them; the places that log request targets redact them first
(gateway/logsafe.py), and nothing here adds a value a log line did not already hold.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from cds.store.jobs import JOB_ID, REQUEST_ID

#: The attributes every LogRecord has; anything else on a record came from ``extra=`` and becomes a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                                   "request_id", "job_id"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``job_id`` from the context to every record (None outside a request or a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = JOB_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, "job_id"?, "process", …extra, "exception"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName if record.processName != "MainProcess" else record.process,
        }
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value is None:
                value = (REQUEST_ID if key == "request_id" else JOB_ID).get()
            if value is not None:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def handler(json_logs: bool, stream: Any = None) -> logging.Handler:
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter() if json_logs else logging.Formatter(TEXT_FORMAT))
    out.addFilter(ContextFilter())
    return out


def configure(json_logs: bool, level: str = "info", stream: Any = None) -> None:
    """The root logger of this process: one handler on stderr, JSON or text, with the context's ids."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler(json_logs, stream))
    root.setLevel(level.upper())


def uvicorn_log_config(json_logs: bool, level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config`` (applied in each of its worker processes): its loggers and the root logger on one
    stderr handler, JSON or text. uvicorn's access lines are left to the gateway's own request lines in JSON mode
    (they carry the route template, the request id and the duration)."""
    formatter = {"()": "bridge.logs.JsonFormatter"} if json_logs else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "bridge.logs.ContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "main",
                                "filters": ["context"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING" if json_logs else level.upper()},
        },
    }
