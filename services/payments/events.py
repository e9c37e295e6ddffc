"""Stripe's wire shapes, read in one place: both gateways turn them into our models here.

The sandbox builds its events in Stripe's shape and reads them back through these same functions,
so a sandbox payment and a Stripe payment reach the booking service as identical ``PaymentEvent``s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.money import Money
from services.payments.base import CheckoutSession, MalformedEventError, PaymentEvent

# Stripe's zero-decimal currencies (docs.stripe.com/currencies). Stripe counts every other
# currency in hundredths, except the ISO three-decimal ones, which it counts in thousandths.
_ZERO_DECIMAL_CODES = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
_STRIPE_ZERO_DECIMAL = frozenset(_ZERO_DECIMAL_CODES.split())
_STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

CHECKOUT_COMPLETED = "checkout.session.completed"
CHECKOUT_EXPIRED = "checkout.session.expired"
ASYNC_PAYMENT_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_PAYMENT_FAILED = "checkout.session.async_payment_failed"
CHARGE_REFUNDED = "charge.refunded"
# What the Stripe webhook endpoint must subscribe to (README; `travelbot doctor` checks it).
SUBSCRIBED_EVENTS = (
    CHECKOUT_COMPLETED,
    CHECKOUT_EXPIRED,
    ASYNC_PAYMENT_SUCCEEDED,
    ASYNC_PAYMENT_FAILED,
    CHARGE_REFUNDED,
)


def stripe_exponent(currency: str) -> int:
    code = currency.upper()
    if code in _STRIPE_ZERO_DECIMAL:
        return 0
    if code in _STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_stripe_amount(money: Money) -> int:
    """Money in the unit Stripe counts that currency in (ISK: ours is whole krónur, Stripe's is
    hundredths). Raises ValueError for an amount Stripe cannot represent exactly."""
    shift = stripe_exponent(money.currency) - money.exponent
    if shift >= 0:
        units = money.amount * int(10**shift)
    else:
        factor = int(10**-shift)
        if money.amount % factor:
            raise ValueError(f"{money.format()} cannot be charged exactly in {money.currency}")
        units = money.amount // factor
    if money.currency in _STRIPE_THREE_DECIMAL and units % 10:
        # Stripe settles these in tens of the minor unit.
        raise ValueError(f"{money.format()} cannot be charged exactly in {money.currency}")
    return units


def from_stripe_amount(amount: int, currency: str) -> Money:
    """The inverse of ``to_stripe_amount``; truncates sub-unit remainders that cannot occur."""
    money_currency = currency.upper()
    shift = stripe_exponent(money_currency) - Money.zero(money_currency).exponent
    value = amount // int(10**shift) if shift >= 0 else amount * int(10**-shift)
    return Money(amount=value, currency=money_currency)


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEventError(f"field {key!r} is missing or not a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEventError(f"field {key!r} is missing or not an integer")
    return value


def _id_of(value: Any) -> str | None:
    """An expandable field: either an id or an object with an id."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = obj.get("metadata") or {}
    if not isinstance(raw, Mapping):
        raise MalformedEventError("metadata is not an object")
    return {str(k): str(v) for k, v in raw.items()}


def session_from_stripe(obj: Mapping[str, Any]) -> CheckoutSession:
    """A ``checkout.session`` object (from the API or inside an event) as our model.

    Amounts are converted to our minor units; ``url`` is empty once Stripe stops serving the
    page (complete or expired sessions have ``url: null``).
    """
    try:
        currency = _str(obj, "currency").upper()
        amount = from_stripe_amount(_int(obj, "amount_total"), currency)
        url = obj.get("url")
        reference = obj.get("client_reference_id")
        return CheckoutSession(
            id=_str(obj, "id"),
            url=url if isinstance(url, str) else "",
            status=_str(obj, "status"),
            payment_status=_str(obj, "payment_status"),
            amount_total=amount.amount,
            currency=amount.currency,
            client_reference_id=reference if isinstance(reference, str) else None,
            metadata=_metadata(obj),
            expires_at=datetime.fromtimestamp(_int(obj, "expires_at"), UTC),
            payment_intent=_id_of(obj.get("payment_intent")),
        )
    except (ValidationError, ValueError, OverflowError, OSError) as exc:
        raise MalformedEventError(f"not a checkout session: {exc}") from None


def load_event_body(payload: bytes) -> Any:
    """A verified webhook body as JSON; nesting deep enough to exhaust the parser is not JSON."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        raise MalformedEventError("the body is not JSON") from None


def event_from_stripe(body: Any) -> PaymentEvent:
    """A Stripe event body (already verified) as a ``PaymentEvent``.

    ``data`` keeps the event's object (for charge and refund events, whose fields we read
    lazily); checkout.session.* events also get ``session``.
    """
    if not isinstance(body, Mapping) or body.get("object") != "event":
        raise MalformedEventError("the body is not a Stripe event")
    event_id = _str(body, "id")
    event_type = _str(body, "type")
    try:
        created = datetime.fromtimestamp(_int(body, "created"), UTC)
    except (ValueError, OverflowError, OSError):
        raise MalformedEventError("field 'created' is not a timestamp") from None
    data = body.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("object"), Mapping):
        raise MalformedEventError("the event has no data.object")
    obj: Mapping[str, Any] = data["object"]
    session = None
    payment_intent = None
    if event_type.startswith("checkout.session."):
        session = session_from_stripe(obj)
        payment_intent = session.payment_intent
    else:
        payment_intent = _id_of(obj.get("payment_intent"))
    return PaymentEvent(
        id=event_id,
        type=event_type,
        created=created,
        session=session,
        payment_intent=payment_intent,
        data=dict(obj),
    )


def event_booking_id(event: PaymentEvent) -> str | None:
    """The booking an event is about, from the metadata we put on the session and the
    payment intent (Stripe copies the latter onto charges and refunds)."""
    if event.session is not None and event.session.metadata.get("booking_id"):
        return event.session.metadata["booking_id"]
    raw = event.data.get("metadata")
    if isinstance(raw, Mapping):
        value = raw.get("booking_id")
        if isinstance(value, str) and value:
            return value
    return None
