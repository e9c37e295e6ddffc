"""Payment routes on the bot's web server: Stripe's webhook and the sandbox checkout page.

The webhook verifies the signature before anything else and answers 400 for anything it cannot
verify or read, 200 once the event is applied (or was already), and 5xx when applying it failed
for any reason, so that Stripe delivers it again. The sandbox page's Pay builds the event
Stripe would send and hands it to the same ``handle_event``; Cancel is the traveller leaving
the page (Stripe's cancel_url): the booking is cancelled.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from bot.web_guard import STRIPE_MAX_BYTES, RequestRefusedError, read_body
from services.bookings import BookingService
from services.flights.dates import format_day
from services.models import Booking, BookingStatus
from services.payments.base import (
    InvalidSignatureError,
    MalformedEventError,
    PaymentError,
    PaymentGateway,
)
from services.payments.sandbox import SandboxGateway
from services.storage.base import StorageUnavailableError
from services.texts import deadline, route

log = logging.getLogger(__name__)


def add_payment_routes(
    app: web.Application, bookings: BookingService, gateway: PaymentGateway
) -> None:
    """POST /stripe/webhook always; the sandbox checkout pages when ``gateway.is_sandbox``."""
    routes = _PaymentRoutes(bookings, gateway)
    app.router.add_post("/stripe/webhook", routes.webhook)
    if gateway.is_sandbox:
        if not isinstance(gateway, SandboxGateway):
            raise TypeError("a sandbox payment gateway must be a SandboxGateway")
        sandbox = _SandboxPages(bookings, gateway)
        app.router.add_get("/checkout/sandbox/{session}", sandbox.page)
        app.router.add_post("/checkout/sandbox/{session}/pay", sandbox.pay)
        app.router.add_post("/checkout/sandbox/{session}/cancel", sandbox.cancel)


class _PaymentRoutes:
    def __init__(self, bookings: BookingService, gateway: PaymentGateway) -> None:
        self._bookings = bookings
        self._gateway = gateway

    async def webhook(self, request: web.Request) -> web.Response:
        try:
            payload = await read_body(request, limit=STRIPE_MAX_BYTES)
        except RequestRefusedError as refused:
            log.warning("stripe webhook refused: %s", refused.reason)
            return refused.response()
        try:
            event = self._gateway.parse_event(payload, request.headers.get("Stripe-Signature"))
        except InvalidSignatureError as error:
            log.warning("stripe webhook refused: %s", error)
            return web.json_response({"error": "invalid signature"}, status=400)
        except MalformedEventError as error:
            log.warning("stripe webhook unreadable: %s", error)
            return web.json_response({"error": "malformed event"}, status=400)
        try:
            await self._bookings.handle_event(event)
        except StorageUnavailableError:
            # Not applied: Stripe retries, and the next delivery finishes what this one began.
            log.warning("stripe event %s deferred: storage unavailable", event.id)
            return web.json_response({"error": "try again"}, status=503)
        except Exception:
            # Whatever stopped it, the event is not marked applied: a 200 here would lose the
            # payment, a 5xx makes Stripe deliver it again.
            log.exception("stripe event %s failed; Stripe will retry it", event.id)
            return web.json_response({"error": "try again"}, status=500)
        return web.json_response({"received": True})


# sandbox checkout ----------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#222}
.test{background:#fff3cd;border:2px dashed #d39e00;padding:.6rem 1rem;font-weight:700}
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem}dt{color:#666}
form{display:inline-block;margin:1rem 1rem 0 0}
button{font-size:1.05rem;padding:.6rem 1.4rem;border-radius:.4rem;border:1px solid #888}
.pay{background:#1a7f37;color:#fff;border-color:#1a7f37}
"""


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · TEST PAYMENT</title><style>{_STYLE}</style></head><body>"
        "<p class=test>TEST PAYMENT · sandbox checkout: no real money is taken.</p>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=document, status=status, content_type="text/html")


def _summary(booking: Booking) -> str:
    e = html.escape
    rows = [
        ("Booking", e(booking.reference)),
        ("Flight", e(f"{route(booking)} · {format_day(booking.itinerary.departure)}")),
        ("Travellers", str(len(booking.travellers))),
        ("Amount", f"<b>{e(booking.amount.format())}</b>"),
    ]
    if booking.payment_deadline is not None:
        rows.append(("Pay by", e(deadline(booking.payment_deadline))))
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f"<dl>{cells}</dl>"


def _not_found() -> web.Response:
    return _page(
        "Payment link not found",
        "<p>This payment link does not exist or was replaced by a newer one. Ask the bot for "
        "a new link.</p>",
        status=404,
    )


class _SandboxPages:
    def __init__(self, bookings: BookingService, gateway: SandboxGateway) -> None:
        self._bookings = bookings
        self._gateway = gateway

    async def page(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        booking = await self._bookings.booking_for_session(session_id)
        if booking is None:
            return _not_found()
        session = await self._gateway.retrieve_checkout(session_id)
        if session.status == "complete":
            return _page("Already paid", _summary(booking) + _status_note(booking))
        if booking.status is BookingStatus.CANCELLED:
            return _page("Booking cancelled", _summary(booking) + "<p>Nothing was charged.</p>")
        if session.status != "open":
            return _page(
                "Payment link expired",
                _summary(booking) + "<p>Nothing was charged. Ask the bot for a new link.</p>",
            )
        action = f"/checkout/sandbox/{html.escape(session_id, quote=True)}"
        forms = (
            f'<form method=post action="{action}/pay">'
            f"<button class=pay type=submit>Pay {html.escape(booking.amount.format())} "
            "(test)</button></form>"
            f'<form method=post action="{action}/cancel">'
            "<button type=submit>Cancel</button></form>"
        )
        return _page("Checkout", _summary(booking) + forms)

    async def pay(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if await self._bookings.booking_for_session(session_id) is None:
            return _not_found()
        try:
            event = await self._gateway.pay(session_id)
        except PaymentError as error:
            return await self._refused(session_id, str(error))
        try:
            await self._bookings.handle_event(event)
        except Exception:
            # The payment stands; the sweep's reconciliation finishes what this did not.
            log.exception("sandbox payment for %s not applied yet", session_id)
        booking = await self._bookings.booking_for_session(session_id)
        if booking is None:
            return _not_found()
        return _page("Payment received", _summary(booking) + _status_note(booking))

    async def cancel(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if await self._bookings.booking_for_session(session_id) is None:
            return _not_found()
        session = await self._gateway.retrieve_checkout(session_id)
        if session.status != "open":
            return await self._refused(session_id, _closed_reason(session.status))
        booking = await self._bookings.cancel_on_payment_page(session_id)
        if booking is None or booking.status is not BookingStatus.CANCELLED:
            return await self._refused(session_id, "This booking can no longer be cancelled here.")
        body = _summary(booking)
        return _page(
            "Payment cancelled",
            body + "<p>Nothing was charged and the booking is cancelled. You can go back to "
            "the chat and /start a new search.</p>",
        )

    async def _refused(self, session_id: str, reason: str) -> web.Response:
        booking = await self._bookings.booking_for_session(session_id)
        body = _summary(booking) if booking else ""
        return _page("Nothing to pay", body + f"<p>{html.escape(reason)}</p>", status=409)


def _closed_reason(status: str) -> str:
    if status == "complete":
        return "This booking is already paid."
    return "This payment link has expired."


def _status_note(booking: Booking) -> str:
    notes = {
        BookingStatus.CONFIRMED: "Booking confirmed: the confirmation is in your chat.",
        BookingStatus.PAID: "Payment received; the ticket is being issued. The bot will "
        "message you.",
        BookingStatus.FAILED: "The ticket could not be issued; the payment is being refunded.",
        BookingStatus.REFUNDED: "The ticket could not be issued, so the payment was refunded.",
        BookingStatus.CANCELLED: "This booking was cancelled.",
    }
    text = notes.get(booking.status, f"Status: {booking.status.label}.")
    return f"<p>{html.escape(text)} You can go back to the chat now.</p>"
