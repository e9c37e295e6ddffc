"""The flight provider port."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

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


class Ticket(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider_booking_id: str
    needs_manual_action: bool = False  # e.g. Kiwi account without booking access: admin alert
    total: Money | None = None  # what the provider charged for it, when it says


@dataclass(frozen=True, slots=True)
class OrderJournal:
    """Where ticketing notes what it placed with the provider before the step that spends
    money, so that an attempt after a crash knows an earlier one may have bought.

    ``previous`` is what an earlier attempt for the same booking recorded (None: no earlier
    attempt got that far); ``record`` stores a note durably before it returns."""

    previous: str | None
    record: Callable[[str], Awaitable[None]]


class FlightProvider(ABC):
    """Finds, re-prices and tickets itineraries. Adapters: ``DemoProvider``, ``KiwiProvider``."""

    name: str
    horizon_days: int = 330  # how far ahead the provider sells

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
        """Issue the ticket for a paid booking. May be called again for the same booking after
        a crash or an error at any point, and must never buy twice: an adapter either uses the
        provider's own idempotency (an order id made earlier, an idempotency key) or writes
        what it placed to ``journal`` before paying and, seeing ``journal.previous``, finishes
        or hands that order to a person (``needs_manual_action``) instead of buying again.

        ``max_total``: the most the traveller's payment covers; when the provider's final total
        is above it, raise ``FareIncreasedError`` before buying. The result carries the
        provider's final total where it gives one."""

    async def locations(self, term: str, *, limit: int = 8) -> list[Location]:
        """Provider-side place lookup; the demo adapter relies on the local airport index."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
