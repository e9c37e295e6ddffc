"""The payment gateway port, shaped after Stripe Checkout."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.models import Booking
from services.money import Money


class InvalidSignatureError(Exception):
    """A webhook body whose signature does not verify: answered 400, nothing changes."""


class MalformedEventError(Exception):
    """A verified body that is not an event we can read: answered 400, nothing changes."""


class PaymentError(Exception):
    """The gateway refused or failed a call."""


class PaymentUnavailableError(PaymentError):
    """The gateway did not answer (network, 5xx, rate limit): worth trying again shortly."""


class CheckoutSession(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    amount_total: int
    currency: str  # upper-case ISO code
    client_reference_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    expires_at: AwareDatetime
    payment_intent: str | None = None

    @property
    def amount(self) -> Money:
        return Money(amount=self.amount_total, currency=self.currency)


class PaymentEvent(BaseModel):
    """A verified gateway event. ``session`` is set for checkout.session.* events."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    created: AwareDatetime
    session: CheckoutSession | None = None
    payment_intent: str | None = None  # for charge.* / refund.* events
    data: dict[str, Any] = Field(default_factory=dict, repr=False)


class Refund(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    amount: Money
    status: str  # pending | succeeded | failed


class PaymentGateway(ABC):
    """Adapters: ``StripeGateway`` (Stripe Checkout) and ``SandboxGateway`` (our test page)."""

    name: str
    is_sandbox: bool = False

    @abstractmethod
    async def create_checkout(
        self,
        booking: Booking,
        *,
        success_url: str,
        cancel_url: str,
        expires_at: datetime,
        idempotency_key: str,
    ) -> CheckoutSession: ...

    @abstractmethod
    async def retrieve_checkout(self, session_id: str) -> CheckoutSession: ...

    @abstractmethod
    async def expire_checkout(self, session_id: str) -> None: ...

    @abstractmethod
    async def refund(
        self,
        payment_intent_id: str,
        *,
        amount: Money | None,
        reason: str | None,
        idempotency_key: str,
    ) -> Refund: ...

    @abstractmethod
    async def find_refund(self, payment_intent_id: str, idempotency_key: str) -> Refund | None:
        """The refund a ``refund`` call with this key made, or None if it made none.

        For a refund whose answer was lost (a timeout, a dropped connection): the money may
        have gone back all the same, so it must be looked up, not sent again under a new key.
        Raises ``PaymentUnavailableError`` when that cannot be found out now."""

    @abstractmethod
    async def refunded_total(self, payment_intent_id: str, currency: str) -> Money:
        """What the payment's refunds add up to, those still on their way included: the truth
        a refund claim whose outcome was never recorded is settled by."""

    @abstractmethod
    def parse_event(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        """Verify the signature first, then parse. Raises InvalidSignatureError /
        MalformedEventError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
