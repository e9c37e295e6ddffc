"""Optional error reporting to Sentry (``SENTRY_DSN``; the ``sentry`` extra installs the SDK).

Sentry sees errors, never personal data or secrets: no request bodies, headers or local
variables, no HTTP breadcrumbs (Bot API URLs carry the bot token), and every message and
exception text goes through the same filters as the log lines (``scrub_text``: the redaction
filters on the log handler, then the bot token pattern), so what the logs redact Sentry never
receives either.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from bot.config import SettingsError
from services.redact import active

_BOT_TOKEN = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{30,}")


def scrub_text(text: str) -> str:
    """``text`` as the log redaction leaves it (services.redact), bot tokens removed."""
    redactor = active()
    if redactor is not None:
        text = redactor.clean(text)
    return _BOT_TOKEN.sub("<bot-token>", text)


def _scrub_event(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    for key in ("request", "user", "extra", "server_name"):
        event.pop(key, None)
    entry = event.get("logentry")
    if isinstance(entry, dict):
        for key in ("message", "formatted"):
            if isinstance(entry.get(key), str):
                entry[key] = scrub_text(entry[key])
        entry.pop("params", None)
    if isinstance(event.get("message"), str):
        event["message"] = scrub_text(event["message"])
    for exception in (event.get("exception") or {}).get("values") or ():
        if isinstance(exception.get("value"), str):
            exception["value"] = scrub_text(exception["value"])
        for frame in (exception.get("stacktrace") or {}).get("frames") or ():
            frame.pop("vars", None)
    crumbs = event.get("breadcrumbs")
    if isinstance(crumbs, dict):
        crumbs["values"] = [
            crumb for crumb in crumbs.get("values") or () if _scrub_breadcrumb(crumb, {})
        ]
    return event


def _scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    if str(crumb.get("category", "")).startswith(("http", "httplib", "aiohttp")):
        return None  # URLs with the bot token in their path
    crumb.pop("data", None)
    if isinstance(crumb.get("message"), str):
        crumb["message"] = scrub_text(crumb["message"])
    return crumb


def init_sentry(dsn: str, *, environment: str | None = None) -> None:
    """Start the SDK; a DSN without the SDK installed is a setting error, not a silent no-op."""
    try:
        import sentry_sdk
    except ImportError:
        raise SettingsError(
            "SENTRY_DSN: is set but the Sentry SDK is not installed (install travelbot[sentry])"
        ) from None
    try:
        release = f"travelbot@{metadata.version('travelbot')}"
    except metadata.PackageNotFoundError:
        release = None
    sentry_sdk.init(
        dsn=dsn,
        release=release,
        environment=environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=0.0,
        before_send=_scrub_event,  # type: ignore[arg-type]
        before_breadcrumb=_scrub_breadcrumb,
    )
