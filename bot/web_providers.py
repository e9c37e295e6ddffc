"""Flight providers' webhooks on the bot's web server: ``POST /duffel/webhook`` and
``POST /kiwi/webhook/{secret}``.

The signature is checked first, on the raw body and in constant time (Duffel signs
``<timestamp>.<body>`` with the webhook's secret, ``X-Duffel-Signature: t=...,v1=...``); only
then is the body parsed. Duffel delivers at least once, in any order, and retries for 72 hours
until it gets a 2xx: each event id is applied once, and a storage failure answers 503 so the
delivery comes again. Kiwi does not sign its booking-status notices, so their URL carries a
secret (``KIWI_WEBHOOK_SECRET``), compared in constant time; Kiwi repeats a notice every 5
minutes until it gets a 200.
"""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from bot.config import Settings
from services.bookings import BookingService
from services.flights.duffel import (
    SIGNATURE_HEADER,
    MalformedWebhookError,
    parse_event,
    verify_signature,
)
from services.flights.kiwi import MalformedNotificationError, parse_notification
from services.payments.base import PaymentError
from services.storage.base import StorageUnavailableError

log = logging.getLogger(__name__)

# Duffel's order events carry the whole order; far below this. Larger bodies are refused unread.
MAX_PROVIDER_EVENT_BYTES = 512 * 1024


def add_provider_routes(app: web.Application, bookings: BookingService, settings: Settings) -> None:
    routes = _ProviderRoutes(bookings, settings)
    app.router.add_post("/duffel/webhook", routes.duffel)
    app.router.add_post("/kiwi/webhook/{secret}", routes.kiwi)


class _ProviderRoutes:
    def __init__(self, bookings: BookingService, settings: Settings) -> None:
        self._bookings = bookings
        self._settings = settings

    async def kiwi(self, request: web.Request) -> web.Response:
        expected = self._settings.kiwi_webhook_secret
        given = request.match_info["secret"]
        if expected is None or not secrets.compare_digest(
            given.encode(), expected.get_secret_value().encode()
        ):
            return web.json_response({"error": "not found"}, status=404)
        body = await _bounded_body(request)
        if body is None:
            return web.json_response({"error": "too large"}, status=413)
        try:
            event = parse_notification(body)
        except MalformedNotificationError as error:
            log.warning("kiwi notification unreadable: %s", error)
            return web.json_response({"error": "malformed notification"}, status=400)
        if event is None:
            return web.json_response({"received": True, "applied": False})
        try:
            await self._bookings.handle_provider_event(event)
        except StorageUnavailableError:
            log.warning("kiwi notification deferred: storage unavailable")
            return web.json_response({"error": "try again"}, status=503)
        except PaymentError as error:  # a refund it owes: the next delivery finishes it
            log.warning("kiwi notification deferred: %s", error)
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"received": True})

    async def duffel(self, request: web.Request) -> web.Response:
        secret = self._settings.duffel_webhook_secret
        if secret is None:
            return web.json_response({"error": "DUFFEL_WEBHOOK_SECRET is not set"}, status=404)
        body = await _bounded_body(request)
        if body is None:
            return web.json_response({"error": "too large"}, status=413)
        if not verify_signature(
            secret.get_secret_value(), body, request.headers.get(SIGNATURE_HEADER)
        ):
            log.warning("duffel webhook refused: bad or missing signature")
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            event = parse_event(body)
        except MalformedWebhookError as error:
            log.warning("duffel webhook unreadable: %s", error)
            return web.json_response({"error": "malformed event"}, status=400)
        if event is None:
            return web.json_response({"received": True, "applied": False})
        try:
            await self._bookings.handle_provider_event(event)
        except StorageUnavailableError:
            log.warning("duffel event %s deferred: storage unavailable", event.id)
            return web.json_response({"error": "try again"}, status=503)
        except PaymentError as error:  # a refund it owes: the next delivery finishes it
            log.warning("duffel event %s deferred: %s", event.id, error)
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"received": True})


async def _bounded_body(request: web.Request) -> bytes | None:
    """The raw body, or None when it is larger than a provider's notice can be."""
    if request.content_length is not None and request.content_length > MAX_PROVIDER_EVENT_BYTES:
        return None
    body = await request.content.read(MAX_PROVIDER_EVENT_BYTES + 1)
    return None if len(body) > MAX_PROVIDER_EVENT_BYTES else body
