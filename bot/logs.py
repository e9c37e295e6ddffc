"""Logging that never carries personal data, at any level.

Two layers, installed by ``protect_logging`` whatever handlers and formats are set up:

- Libraries whose DEBUG lines are whole payloads are held at INFO: PTB logs every Bot API call
  with its parameters and answer (each message a traveller types, each review the bot sends)
  and every update it processes; aiosqlite logs each statement with its parameters; httpx,
  httpcore and hpack log requests and headers; Stripe logs request bodies. ``LOG_LEVEL=DEBUG``
  still shows our own debug lines.
- Every log record, from any logger, is cleaned as it is made (a log record factory, so no
  handler or formatter added later can miss it): its message and its traceback lose emails,
  phone numbers and the personal values this process has handled (``services.redact``). The
  cleaned traceback is set as ``exc_text``, which every formatter prints instead of formatting
  the exception again; ``exc_info`` stays for Sentry, whose ``before_send`` cleans the same way.

Exceptions nobody caught, in the main thread or another, reach stderr through logging too, and
so are cleaned as well.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any, Final

from services.redact import Redactor, activate, active

# Logger → why its DEBUG output is withheld.
PAYLOAD_LOGGERS: Final = {
    "telegram": "Bot API requests with their parameters and answers, updates with their text",
    "aiosqlite": "every SQL statement with its parameters (travellers included)",
    "httpx": "request lines and headers",
    "httpcore": "request and connection details",
    "hpack": "HTTP/2 headers",
    "stripe": "API request bodies",
}

_log = logging.getLogger("travelbot")
_traceback_formatter = logging.Formatter()


def protect_logging() -> Redactor:
    """Install both layers and return the redactor in use. Call it once the levels are set
    (again after changing them): it only ever raises a payload logger to INFO."""
    redactor = active()
    for name in PAYLOAD_LOGGERS:
        payload = logging.getLogger(name)
        if payload.getEffectiveLevel() < logging.INFO:
            payload.setLevel(logging.INFO)
    if redactor is not None:
        return redactor
    redactor = Redactor()
    activate(redactor)
    make_record = logging.getLogRecordFactory()

    def cleaned_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        clean_record(record, redactor)
        return record

    logging.setLogRecordFactory(cleaned_record)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return redactor


def clean_record(record: logging.LogRecord, redactor: Redactor) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed call must still log something
        message = str(record.msg)
    cleaned = redactor.clean(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        text = _traceback_formatter.formatException(record.exc_info)
        # Formatters print exc_text when it is set, so the cleaned text is what they show;
        # exc_info stays for Sentry, whose before_send cleans the same way (bot/sentry.py).
        record.exc_text = redactor.clean(text)
    elif record.exc_text:
        record.exc_text = redactor.clean(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.clean(record.stack_info)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    _log.critical("uncaught exception", exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_value is None:
        return
    _log.critical(
        "uncaught exception in thread %s",
        hook.thread.name if hook.thread else "?",
        exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
    )
