"""Measuring the Telegram side: each update handled is counted and timed (services.metrics).

Kept apart from handlers/ so the turn's own code stays as it is: the composition root wraps
the update handler with ``timed_updates``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Update

from services import metrics


def update_kind(update: object) -> str:
    if isinstance(update, Update):
        if update.callback_query is not None:
            return "callback_query"
        if update.message is not None:
            return "message"
    return "other"


Handler = Callable[[Update, Any], Coroutine[Any, Any, None]]


def timed_updates(handler: Handler) -> Handler:
    """``handler`` counted by kind and outcome ('error' when it raised, for PTB's error
    handler) and timed from start to its last reply."""

    async def timed(update: Update, context: Any) -> None:
        started = time.perf_counter()
        outcome = "error"
        try:
            await handler(update, context)
            outcome = "ok"
        finally:
            metrics.update_handled(update_kind(update), outcome, time.perf_counter() - started)

    return timed
