"""The flight provider port."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.models import Booking, Itinerary, Location, Passengers, SearchQuery
from services.money import Money


class ProviderError(Exception):
    """The provider refused the request (bad query, expired token...)."""


class ProviderUnavailableError(ProviderError):
    """Timeouts, 5xx, 429 or an open circuit: 'search is unavailable, try again in a minute'.

    ``retry_after`` is how many seconds the provider (or our circuit breaker) asks us to wait,
    when known.
    """

    def __init__(
        self,
        message: str = "Flight search is unavailable right now: try again in a minute.",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TicketingError(ProviderError):
    """The provider could not issue the ticket after payment (refund follows)."""


class FareUnavailableError(ProviderError):
    """The offer expired or sold out before the provider could hold or ticket it."""


class FareChangedError(ProviderError):
    """The provider now asks another price for the offer than the traveller was shown."""

    def __init__(self, message: str, *, price: Money | None) -> None:
        super().__init__(message)
        self.price = price  # None: the provider did not say the new price


class FareIncreasedError(TicketingError):
    """The provider's final total is above ``max_total``: raised before anything is bought."""

    def __init__(self, total: Money) -> None:
        super().__init__(f"the fare rose to {total.format()} at ticketing")
        self.total = total


class Recheck(BaseModel):
    """The live state of an offer just before payment."""

    model_config = ConfigDict(frozen=True)

    available: bool
    price: Money  # total for all travellers; compare with the shown price
    booking_token: str | None = None  # may be refreshed by the provider
    expires_at: AwareDatetime | None = None  # the offer's own expiry, when the provider says


class Ticket(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider_booking_id: str
    needs_manual_action: bool = False  # e.g. Kiwi account without booking access: admin alert
    airline_reference: str | None = None  # the airline's PNR, shown to the traveller
    ticket_numbers: tuple[str, ...] = ()
    total: Money | None = None  # what the provider charged for it, when it says


class HeldOrder(BaseModel):
    """An order the provider made before the traveller is charged (order before charge)."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    price: Money  # what the provider will take when the order is paid
    # Until when the seats are held unpaid; None: the provider holds nothing (pay at once).
    payment_required_by: AwareDatetime | None = None
    airline_reference: str | None = None
    token: str | None = Field(default=None, repr=False)  # e.g. Kiwi's transaction id


class CancellationQuote(BaseModel):
    """What the airline would give back if the order were cancelled now."""

    model_config = ConfigDict(frozen=True)

    quote_id: str
    refund: Money  # in the booking's currency: what the traveller gets back
    expires_at: AwareDatetime | None = None
    # False: a person has to cancel with the provider (the quote is only an estimate).
    automatic: bool = True

    @property
    def refundable(self) -> bool:
        return self.refund.amount > 0


# order_cancelled: the provider reports the order cancelled without saying the airline did it
# (it may be our own cancellation arriving late): a person looks, nothing is refunded by itself.
ProviderEventKind = Literal[
    "schedule_changed", "airline_cancelled", "order_cancelled", "ticketed", "other"
]


class ProviderEvent(BaseModel):
    """A verified notification from the flight provider about one of its orders."""

    model_config = ConfigDict(frozen=True)

    id: str  # the provider's event id: each is applied once
    type: str  # the provider's own event type, for the admin's booking history
    kind: ProviderEventKind
    order_id: str
    summary: str = ""  # plain text for the traveller: what changed (no personal data)


@dataclass(frozen=True, slots=True)
class OrderJournal:
    """Where ticketing notes what it placed with the provider before the step that spends
    money, so that an attempt after a crash knows an earlier one may have bought.

    ``previous`` is what an earlier attempt for the same booking recorded (None: no earlier
    attempt got that far); ``record`` stores a note durably before it returns."""

    previous: str | None
    record: Callable[[str], Awaitable[None]]


class FlightProvider(ABC):
    """Finds, re-prices and tickets itineraries.

    Adapters: ``DemoProvider``, ``KiwiProvider``, ``DuffelProvider``. The order life cycle
    (``hold`` before the charge, ``ticket`` after it pays the held order, ``quote_cancellation``
    and ``confirm_cancellation`` to cancel with the airline, ``release`` for a hold nobody paid)
    has defaults for a provider without one: no hold, and no airline to ask on cancelling.
    """

    name: str
    horizon_days: int = 330  # how far ahead the provider sells
    # True when tickets are not real (the demo, Duffel with a ``duffel_test_`` token).
    test_mode: bool = False

    @abstractmethod
    async def search(self, query: SearchQuery) -> list[Itinerary]: ...

    @abstractmethod
    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck: ...

    @abstractmethod
    async def ticket(
        self,
        booking: Booking,
        *,
        max_total: Money | None = None,
        journal: OrderJournal | None = None,
    ) -> Ticket:
        """Issue the ticket for a paid booking: pay the held order
        (``booking.provider_order_id``) or, without one, create and pay an order at once. May be called again for the same booking after
        a crash or an error at any point, and must never buy twice: an adapter either uses the
        provider's own idempotency (an order id made earlier, an idempotency key) or writes
        what it placed to ``journal`` before paying and, seeing ``journal.previous``, finishes
        or hands that order to a person (``needs_manual_action``) instead of buying again.

        ``max_total``: the most the traveller's payment covers; when the provider's final total
        is above it, raise ``FareIncreasedError`` before buying. The result carries the
        provider's final total where it gives one."""

    async def hold(self, booking: Booking) -> HeldOrder | None:
        """Create the order before the traveller is charged. None: this provider or offer
        holds nothing, so the fare is confirmed only on ticketing. Raises
        ``FareUnavailableError`` or ``FareChangedError`` when the offer cannot be had at
        the booking's amount."""
        return None

    async def check_hold(self, booking: Booking) -> HeldOrder | None:
        """The held order as the provider has it now (price, hold deadline), before a new
        payment link is made for it. None: nothing is held. Raises ``FareUnavailableError``
        when the hold is gone, ``FareChangedError`` when its price moved."""
        return None

    async def release(self, booking: Booking) -> None:  # noqa: B027 - optional hook
        """Give back the seats of a held order that will not be paid (link expired, abandoned)."""

    async def quote_cancellation(self, booking: Booking) -> CancellationQuote | None:
        """What cancelling the ticketed order would refund. None: there is no airline order to
        cancel (the booking is refunded in full, as before)."""
        return None

    async def confirm_cancellation(self, booking: Booking, quote: CancellationQuote) -> Money:
        """Cancel the order with the airline on ``quote``; returns the refund it confirmed."""
        raise ProviderError(f"{self.name} cannot cancel orders")

    async def cheapest_by_day(self, query: SearchQuery, days: Sequence[date]) -> dict[date, Money]:
        """The cheapest fare of ``query`` on each of ``days`` (its departure replaced), for a
        price calendar, where the provider can tell cheaply; {} otherwise. Must not cost a
        search per day against a rate-limited API (the search cache fills the calendar)."""
        return {}

    async def locations(self, term: str, *, limit: int = 8) -> list[Location]:
        """Provider-side place lookup; the demo adapter relies on the local airport index."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
