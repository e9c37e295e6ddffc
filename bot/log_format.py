"""Log formats: the human one, or one JSON object per line (``LOG_FORMAT=json``) for a
platform's log search.

Only the formatter lives here: filters (the redaction of personal data) sit on the handler and
run before any formatter, so what they remove is gone from both formats alike.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``exception`` (the formatted traceback)
    and ``task`` (the asyncio task's name) when there are any. Nothing else of the record is
    copied: an ``extra=`` a library passes never reaches the output unreviewed."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        task = getattr(record, "taskName", None)
        if task:
            entry["task"] = task
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
