"""Log output: plain text (the default) or one JSON object per line.

``FELIX_LOG_FORMAT=json`` makes every line an object with ``time``, ``level``,
``logger`` and ``message``, plus ``request_id`` and ``connection_id`` when the
line was logged while the web layer served a request or a WebSocket connection
(:data:`REQUEST_ID` and :data:`CONNECTION_ID`, set per ASGI scope by
:func:`felix.web.app.create_app`'s outermost layer and per connection by the
WebSocket router), and ``exception`` with the traceback. Nothing else of the
record is added: no headers, no query strings, so keys and tokens stay out.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["CONNECTION_ID", "REQUEST_ID", "JsonFormatter", "configure_logging"]

#: The id of the HTTP request or WebSocket handshake being served, if any.
REQUEST_ID: ContextVar[str | None] = ContextVar("felix_request_id", default=None)
#: The ``connection_id`` of the WebSocket connection being served, if any.
CONNECTION_ID: ContextVar[str | None] = ContextVar("felix_connection_id", default=None)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as ``{"time", "level", "logger", "message", ...}``."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            line["request_id"] = request_id
        if (connection_id := CONNECTION_ID.get()) is not None:
            line["connection_id"] = connection_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send log records to standard error as text or JSON lines (the root logger's handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
