"""Log lines as text or JSON, each carrying the id of the request it belongs to.

`RequestContext` (server/api/request_context.py) opens a `RequestInfo` per HTTP request in a context
variable; everything logged while the request runs (in its task, or a thread started from it) is tagged
with its id, and the access line at its end carries what the request did: route, status, task, version,
tokens and latency. Request inputs and outputs are never logged unless `--log-content` is set, and no
key is ever written: nothing here reads headers but the request id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCESS = logging.getLogger("promptswap.access")


@dataclass
class RequestInfo:
    """One HTTP request's id and what its handlers learn about it, for its access line and trace."""

    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    tracer: Any = None  # an OpenTelemetry tracer while tracing is on


CURRENT: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("promptswap_request", default=None)


def note(**fields: Any) -> None:
    """Add facts to the current request's access line (no-op outside a request)."""
    info = CURRENT.get()
    if info is not None:
        info.fields.update(fields)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        info = CURRENT.get()
        record.request_id = info.id if info is not None else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure(level: str, log_format: str) -> None:
    """Every logger (uvicorn's too) through one handler on stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def access_line(method: str, route: str, status: int, seconds: float, fields: dict[str, Any]) -> None:
    facts = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    ACCESS.info(
        "%s %s %d %.1f ms %s", method, route, status, 1e3 * seconds, facts,
        extra={"fields": {"method": method, "route": route, "status": status, "latency_ms": round(1e3 * seconds, 1),
                          **fields}},
    )  # fmt: skip
