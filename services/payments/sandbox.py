"""The sandbox payment gateway: our own test checkout page stands in for Stripe.

It keeps no state of its own: a session is the booking row that carries its id (amount,
deadline, payment intent), read through storage, so any worker can serve the page and a restart
loses nothing. Ids are derived, not stored: the session id from the caller's idempotency key
(a double tap makes one session), the payment intent and event ids from the session id (a double
click on Pay is one event). Paying builds the event Stripe would send, in Stripe's shape, signs it and
reads it back through ``parse_event``, so it reaches the booking service exactly as a verified
Stripe webhook does. Cancelling is the traveller leaving the page, as Stripe's cancel_url is:
the booking service cancels the booking and closes the link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.models import PAST_PAYMENT_STATUSES, Booking, utcnow
from services.money import Money
from services.payments.base import (
    CheckoutSession,
    InvalidSignatureError,
    PaymentError,
    PaymentEvent,
    PaymentGateway,
    Refund,
)
from services.payments.events import (
    CHECKOUT_COMPLETED,
    event_from_stripe,
    load_event_body,
    to_stripe_amount,
)
from services.storage.base import Storage

SESSION_PREFIX = "cs_sandbox_"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]


class SandboxGateway(PaymentGateway):
    """Test payments on ``{base_url}/checkout/sandbox/{session_id}``; no money moves."""

    name = "sandbox"
    is_sandbox = True

    def __init__(
        self,
        storage: Storage,
        base_url: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._storage = storage
        self._base_url = base_url.rstrip("/")
        self._now = clock
        # Signs the events this instance builds; nobody outside knows it, so nothing posted to
        # the webhook from outside can pass for a sandbox payment.
        self._secret = secrets.token_hex(32)

    # sessions --------------------------------------------------------------------------------
    async def create_checkout(
        self,
        booking: Booking,
        *,
        success_url: str,
        cancel_url: str,
        expires_at: datetime,
        idempotency_key: str,
    ) -> CheckoutSession:
        session_id = SESSION_PREFIX + _digest("session", idempotency_key)
        return self._session(
            session_id,
            booking,
            status="open",
            payment_status="unpaid",
            expires_at=expires_at,
            payment_intent=None,
        )

    async def retrieve_checkout(self, session_id: str) -> CheckoutSession:
        booking = await self._booking(session_id)
        deadline = booking.payment_deadline or self._now()
        if booking.payment_intent_id and not booking.status.unpaid:
            status, payment_status = "complete", "paid"
        elif deadline <= self._now():
            status, payment_status = "expired", "unpaid"
        else:
            status, payment_status = "open", "unpaid"
        return self._session(
            session_id,
            booking,
            status=status,
            payment_status=payment_status,
            expires_at=deadline,
            payment_intent=booking.payment_intent_id if status == "complete" else None,
        )

    async def expire_checkout(self, session_id: str) -> None:
        session = await self.retrieve_checkout(session_id)
        if session.status != "open":
            raise PaymentError(f"this payment link is already {session.status}")
        booking = await self._booking(session_id)
        # The deadline on the booking row is the session's expiry: now, it has passed.
        await self._storage.attach_checkout(
            booking.id, checkout_session_id=session_id, payment_deadline=self._now()
        )

    def checkout_url(self, session_id: str) -> str:
        return f"{self._base_url}/checkout/sandbox/{session_id}"

    # the test page's two buttons -------------------------------------------------------------
    async def pay(self, session_id: str) -> PaymentEvent:
        """The tester pays: the checkout.session.completed event Stripe would send."""
        session = await self.retrieve_checkout(session_id)
        if session.status != "open":
            raise PaymentError(_closed(session))
        intent = _intent_of(session_id)
        paid = session.model_copy(
            update={"status": "complete", "payment_status": "paid", "payment_intent": intent}
        )
        return self._event(CHECKOUT_COMPLETED, paid)

    # refunds ---------------------------------------------------------------------------------
    async def refund(
        self,
        payment_intent_id: str,
        *,
        amount: Money | None,
        reason: str | None,
        idempotency_key: str,
    ) -> Refund:
        """Refunds succeed at once, up to what is left of the payment, as Stripe's do.

        What was refunded is the booking's ``refunded_minor`` (the booking service records
        each refund there once it succeeded), so the sandbox keeps no state of its own here
        either; like Stripe it refuses a refund above what is left of the charge."""
        booking = await self._booking_by_intent(payment_intent_id)
        remaining = booking.amount.amount - booking.refunded_minor
        if remaining <= 0:
            raise PaymentError(f"Charge for {payment_intent_id} has already been refunded.")
        if amount is None:
            amount = Money(amount=remaining, currency=booking.amount.currency)
        if amount.currency != booking.amount.currency:
            raise PaymentError(f"this payment was made in {booking.amount.currency}")
        if amount.amount <= 0:
            raise PaymentError("a refund must be more than zero")
        if amount.amount > remaining:
            raise PaymentError(
                f"Refund amount ({amount.amount}) is greater than unrefunded amount on charge "
                f"({remaining})"
            )
        return Refund(
            id="re_sandbox_" + _digest("refund", idempotency_key),
            amount=amount,
            status="succeeded",
        )

    async def find_refund(self, payment_intent_id: str, idempotency_key: str) -> Refund | None:
        """Never asked: a sandbox refund is answered in the same call, so none is ever lost."""
        return None

    async def refunded_total(self, payment_intent_id: str, currency: str) -> Money:
        """The booking's own record: a sandbox refund moves no money, so one whose worker
        stopped before recording it was, in effect, never made."""
        booking = await self._booking_by_intent(payment_intent_id)
        return Money(amount=booking.refunded_minor, currency=currency)

    async def _booking_by_intent(self, payment_intent_id: str) -> Booking:
        # Refunds are rare and the sandbox is for local runs: a scan is fine here. A booking
        # cancelled before its payment arrived has no intent recorded yet: it is found by the
        # intent its session's payment derives.
        for status in PAST_PAYMENT_STATUSES:
            for booking in await self._storage.list_bookings_by_status(status):
                if booking.payment_intent_id == payment_intent_id or (
                    booking.payment_intent_id is None
                    and booking.checkout_session_id
                    and _intent_of(booking.checkout_session_id) == payment_intent_id
                ):
                    return booking
        raise PaymentError(f"no payment {payment_intent_id} to refund")

    # events ----------------------------------------------------------------------------------
    def parse_event(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        if not signature_header:
            raise InvalidSignatureError("no signature")
        fields = dict(part.partition("=")[::2] for part in signature_header.split(","))
        expected = self._sign(fields.get("t", ""), payload)
        if not hmac.compare_digest(expected, fields.get("v1", "")):
            raise InvalidSignatureError("the signature does not match")
        return event_from_stripe(load_event_body(payload))

    def _sign(self, stamp: str, payload: bytes) -> str:
        return hmac.new(
            self._secret.encode(), stamp.encode() + b"." + payload, hashlib.sha256
        ).hexdigest()

    def _event(self, event_type: str, session: CheckoutSession) -> PaymentEvent:
        body = {
            "id": "evt_sandbox_" + _digest(event_type, session.id),
            "object": "event",
            "type": event_type,
            "created": int(self._now().timestamp()),
            "livemode": False,
            "data": {"object": _stripe_shape(session)},
        }
        payload = json.dumps(body).encode("utf-8")
        stamp = str(int(time.time()))
        return self.parse_event(payload, f"t={stamp},v1={self._sign(stamp, payload)}")

    # helpers ---------------------------------------------------------------------------------
    async def _booking(self, session_id: str) -> Booking:
        booking = await self._storage.get_booking_by_session(session_id)
        if booking is None:
            raise PaymentError(f"no checkout session {session_id}")
        return booking

    def _session(
        self,
        session_id: str,
        booking: Booking,
        *,
        status: str,
        payment_status: str,
        expires_at: datetime,
        payment_intent: str | None,
    ) -> CheckoutSession:
        return CheckoutSession(
            id=session_id,
            url=self.checkout_url(session_id),
            status=status,
            payment_status=payment_status,
            amount_total=booking.amount.amount,
            currency=booking.amount.currency,
            client_reference_id=booking.reference,
            metadata={"booking_id": booking.id, "reference": booking.reference},
            expires_at=expires_at,
            payment_intent=payment_intent,
        )


def _intent_of(session_id: str) -> str:
    """The payment intent paying a sandbox session makes (one per session)."""
    return "pi_sandbox_" + _digest("intent", session_id)


def _closed(session: CheckoutSession) -> str:
    if session.status == "complete":
        return "This booking is already paid."
    return "This payment link has expired."


def _stripe_shape(session: CheckoutSession) -> dict[str, Any]:
    """A session as Stripe's JSON has it (lower-case currency, Stripe's amount units)."""
    return {
        "id": session.id,
        "object": "checkout.session",
        "mode": "payment",
        "status": session.status,
        "payment_status": session.payment_status,
        "amount_total": to_stripe_amount(session.amount),
        "amount_subtotal": to_stripe_amount(session.amount),
        "currency": session.currency.lower(),
        "client_reference_id": session.client_reference_id,
        "metadata": dict(session.metadata),
        "expires_at": int(session.expires_at.timestamp()),
        "payment_intent": session.payment_intent,
        "url": session.url if session.status == "open" else None,
        "livemode": False,
    }
