"""What the webhook routes check before doing any work, and the bound on updates in flight.

Both webhooks read their body through ``read_body``: a size bound (checked on the declared
length and again while reading, for chunked bodies) and a deadline for the whole body, so a
client that trickles bytes (slow loris) is answered 408 instead of holding a connection and
its buffers for as long as it likes.

Bounds:
- Stripe: ``STRIPE_MAX_BYTES`` = 256 KiB. The endpoint is unauthenticated until the signature is
  checked, so it should not buffer more than an event can be. The events it subscribes to
  (``checkout.session.*``, ``charge.refunded``) are a few KB; Stripe caps what could make one
  large (metadata: 50 keys of at most 500 characters; lists inside an event object are
  truncated), so 256 KiB is many times the largest real event and still cheap to buffer and
  hash.
- Telegram: ``TELEGRAM_MAX_BYTES`` = 1 MiB, checked after the secret header. A message of 4096
  characters with its entities, a reply and a quote is tens of KB.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STRIPE_MAX_BYTES = 256 * 1024
TELEGRAM_MAX_BYTES = 1 << 20
# Seconds for a whole request body. A real sender has its body ready and sends it at once.
BODY_READ_TIMEOUT = 10.0
BODY_TIMEOUT = web.AppKey("body_read_timeout", float)

_CHUNK = 64 * 1024


class RequestRefusedError(Exception):
    """The request is answered ``status`` without being handled."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> web.Response:
        return web.json_response({"error": self.reason}, status=self.status)


async def read_body(request: web.Request, *, limit: int) -> bytes:
    """The body, at most ``limit`` bytes, read within the app's body deadline."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestRefusedError(413, "too large")
    timeout = request.app.get(BODY_TIMEOUT, BODY_READ_TIMEOUT)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise RequestRefusedError(413, "too large")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRefusedError(408, "request body too slow") from None
    return b"".join(chunks)


def load_json(body: bytes) -> Any:
    """Parse JSON; nesting deep enough to exhaust the parser is "not JSON" too."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestRefusedError(400, "not JSON") from None


# Telegram updates: the fields the bot reads, with the types Telegram documents. PTB's de_json
# checks no types (a text of 5 or a chat id of "x" would only fail later, in a handler), so an
# update is checked here first. Other fields and other update kinds pass untouched.
class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)


class _User(_Shape):
    id: int
    is_bot: bool
    first_name: str
    username: str | None = None
    language_code: str | None = None


class _Chat(_Shape):
    id: int
    type: str


class _Message(_Shape):
    message_id: int
    date: int
    chat: _Chat
    from_: _User | None = Field(default=None, alias="from")
    text: str | None = None


class _CallbackQuery(_Shape):
    id: str
    from_: _User = Field(alias="from")
    chat_instance: str
    data: str | None = None
    message: _Message | None = None


class _Update(_Shape):
    update_id: int
    message: _Message | None = None
    callback_query: _CallbackQuery | None = None


def parse_update(body: bytes) -> dict[str, Any]:
    """The update as a dict for ``Update.de_json``, or 400 for JSON that is not one."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestRefusedError(400, "not an update")
    try:
        _Update.model_validate(payload)
    except (ValidationError, RecursionError):
        raise RequestRefusedError(400, "not an update") from None
    return payload


class GateFullError(Exception):
    """Every slot is taken and the waiting line is full."""


class UpdateGate:
    """At most ``limit`` updates handled at once, as polling's ``concurrent_updates``.

    Back-pressure first: an update beyond the limit waits for a slot, because Telegram already
    bounds its own deliveries (``max_connections``, 40 by default) and a refused delivery is
    retried only after a delay, which a traveller would feel. The waiting line is bounded too
    (``queue``); beyond it the route answers 503 and Telegram delivers the update again later.
    """

    def __init__(self, limit: int, *, queue: int | None = None) -> None:
        self.limit = limit
        self.queue = limit if queue is None else queue
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.in_flight >= self.limit and self.waiting >= self.queue:
            raise GateFullError
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
