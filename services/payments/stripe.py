"""The Stripe adapter of the payment port: Checkout Sessions, refunds and signed webhooks.

stripe-python's ``StripeClient`` with its async methods over aiohttp (the transport the rest of
the bot already uses). ``api_base`` points it at a local stand-in in tests (``STRIPE_API_BASE``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import stripe
from stripe.params import RefundCreateParams
from stripe.params.checkout import SessionCreateParams

from services.flights.dates import format_day
from services.models import Booking, utcnow
from services.money import Money
from services.payments.base import (
    CheckoutSession,
    InvalidSignatureError,
    PaymentError,
    PaymentEvent,
    PaymentGateway,
    PaymentUnavailableError,
    Refund,
)
from services.payments.events import (
    event_from_stripe,
    from_stripe_amount,
    load_event_body,
    session_from_stripe,
    to_stripe_amount,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

WEBHOOK_TOLERANCE_SECONDS = 300
# Stripe wants expires_at 30 min to 24 h after it creates the session; the slack covers the
# time between our clock reading and Stripe's.
MIN_CHECKOUT_WINDOW = timedelta(minutes=30)
MAX_CHECKOUT_WINDOW = timedelta(hours=24)
_CLOCK_SLACK = timedelta(seconds=60)
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
REFUND_KEY_FIELD = "idempotency_key"  # in each refund's metadata: see find_refund


def product_name(booking: Booking) -> str:
    """What the traveller sees on Stripe's page: 'Flight LIS → NRT, Fri 12 Mar'."""
    out = booking.itinerary.outbound
    first = out[0].departure
    name = f"Flight {out[0].origin} → {out[-1].destination}, {format_day(first)}"
    inbound = booking.itinerary.inbound
    if inbound:
        back = inbound[0].departure
        name = name.replace(" → ", " ⇄ ") + f" – {format_day(back)}"
    return name


def _clamp_expiry(expires_at: datetime) -> datetime:
    now = utcnow()
    earliest = now + MIN_CHECKOUT_WINDOW + _CLOCK_SLACK
    latest = now + MAX_CHECKOUT_WINDOW - _CLOCK_SLACK
    return min(max(expires_at, earliest), latest)


def _lead_email(booking: Booking) -> str | None:
    for traveller in booking.travellers:
        if traveller.email:
            return traveller.email
    return None


def _as_dict(obj: Any) -> Mapping[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, Mapping):
            return result
    raise PaymentError("Stripe answered with something that is not an object")


def _refund_from(data: Mapping[str, Any]) -> Refund:
    try:
        money = from_stripe_amount(int(data["amount"]), str(data["currency"]))
        return Refund(id=str(data["id"]), amount=money, status=str(data["status"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PaymentError(f"Stripe answered with an unreadable refund: {exc}") from None


class StripeGateway(PaymentGateway):
    """Stripe Checkout. Owns one HTTP session; call ``close()`` on shutdown."""

    name = "stripe"
    is_sandbox = False

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        *,
        api_base: str | None = None,
        timeout: float = 20.0,
        max_network_retries: int = 2,
    ) -> None:
        if not webhook_secret:
            raise ValueError("a Stripe webhook secret (whsec_...) is required")
        self._webhook_secret = webhook_secret
        # stripe-python logs request and response bodies (customer emails) at DEBUG: keep its
        # logger at INFO or above whatever the bot's log level is.
        stripe_log = logging.getLogger("stripe")
        if stripe_log.level < logging.INFO:  # NOTSET (0) would inherit the root's DEBUG
            stripe_log.setLevel(logging.INFO)
        self._http = stripe.AIOHTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # checkout --------------------------------------------------------------------------------
    async def create_checkout(
        self,
        booking: Booking,
        *,
        success_url: str,
        cancel_url: str,
        expires_at: datetime,
        idempotency_key: str,
    ) -> CheckoutSession:
        try:
            unit_amount = to_stripe_amount(booking.amount)
        except ValueError as exc:
            raise PaymentError(str(exc)) from None
        metadata = {"booking_id": booking.id, "reference": booking.reference}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": booking.amount.currency.lower(),
                        "unit_amount": unit_amount,
                        "product_data": {
                            "name": product_name(booking),
                            "description": (
                                f"Booking {booking.reference} · "
                                f"{len(booking.travellers)} traveller"
                                + ("s" if len(booking.travellers) != 1 else "")
                            ),
                        },
                    },
                    "quantity": 1,
                }
            ],
            "client_reference_id": booking.reference,
            "metadata": metadata,
            "payment_intent_data": {"metadata": dict(metadata)},
            "expires_at": int(_clamp_expiry(expires_at).timestamp()),
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        email = _lead_email(booking)
        if email:
            params["customer_email"] = email
        session = await self._call(
            self._client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        )
        result = session_from_stripe(_as_dict(session))
        log.info(
            "checkout session %s created for booking %s (%s)",
            result.id,
            booking.reference,
            result.amount.format(),
        )
        return result

    async def retrieve_checkout(self, session_id: str) -> CheckoutSession:
        session = await self._call(self._client.v1.checkout.sessions.retrieve_async(session_id))
        return session_from_stripe(_as_dict(session))

    async def expire_checkout(self, session_id: str) -> None:
        await self._call(self._client.v1.checkout.sessions.expire_async(session_id))

    # refunds ---------------------------------------------------------------------------------
    async def refund(
        self,
        payment_intent_id: str,
        *,
        amount: Money | None,
        reason: str | None,
        idempotency_key: str,
    ) -> Refund:
        params: RefundCreateParams = {"payment_intent": payment_intent_id}
        if amount is not None:
            try:
                params["amount"] = to_stripe_amount(amount)
            except ValueError as exc:
                raise PaymentError(str(exc)) from None
        # The key travels with the refund, so a refund whose answer was lost can be found.
        metadata = {REFUND_KEY_FIELD: idempotency_key}
        if reason in REFUND_REASONS:
            params["reason"] = reason
        elif reason:
            # Stripe takes only its three reason codes; a free-text note goes to metadata.
            metadata["note"] = reason[:500]
        params["metadata"] = metadata
        refund = await self._call(
            self._client.v1.refunds.create_async(params, {"idempotency_key": idempotency_key})
        )
        return _refund_from(_as_dict(refund))

    async def find_refund(self, payment_intent_id: str, idempotency_key: str) -> Refund | None:
        for data in await self._refunds_of(payment_intent_id):
            if (data.get("metadata") or {}).get(REFUND_KEY_FIELD) == idempotency_key:
                return _refund_from(data)
        return None

    async def refunded_total(self, payment_intent_id: str, currency: str) -> Money:
        total = Money(amount=0, currency=currency)
        for data in await self._refunds_of(payment_intent_id):
            if data.get("status") in ("failed", "canceled"):
                continue
            refund = _refund_from(data)
            if refund.amount.currency != currency:
                raise PaymentError(f"a refund of {payment_intent_id} is not in {currency}")
            total = total + refund.amount
        return total

    async def _refunds_of(self, payment_intent_id: str) -> list[Mapping[str, Any]]:
        # A payment is refunded a handful of times at most: one page of 100 holds them all.
        page = await self._call(
            self._client.v1.refunds.list_async({"payment_intent": payment_intent_id, "limit": 100})
        )
        return [data for data in _as_dict(page).get("data") or [] if isinstance(data, Mapping)]

    # webhooks --------------------------------------------------------------------------------
    def parse_event(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        try:
            stripe.WebhookSignature.verify_header(
                payload,
                signature_header,
                self._webhook_secret,
                tolerance=WEBHOOK_TOLERANCE_SECONDS,
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignatureError(str(exc).split(".")[0]) from None
        except UnicodeDecodeError:
            raise InvalidSignatureError("the body is not UTF-8, so it cannot be signed") from None
        return event_from_stripe(load_event_body(payload))

    # errors ----------------------------------------------------------------------------------
    async def _call(self, pending: Awaitable[_T]) -> _T:
        """Await a stripe-python call, mapping its errors to the port's."""
        try:
            return await pending
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise PaymentUnavailableError(f"Stripe is not reachable right now: {exc}") from exc
        except stripe.APIError as exc:
            raise PaymentUnavailableError(f"Stripe had an internal error: {exc}") from exc
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise PaymentError(f"Stripe rejected the API key: {exc.user_message}") from exc
        except stripe.StripeError as exc:
            raise PaymentError(exc.user_message or str(exc)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PaymentUnavailableError(f"Stripe did not answer: {exc!r}") from exc
