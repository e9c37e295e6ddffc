"""The flight provider port."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date

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


class FlightProvider(ABC):
    """Finds, re-prices and tickets itineraries. Adapters: ``DemoProvider``, ``KiwiProvider``."""

    name: str
    horizon_days: int = 330  # how far ahead the provider sells

    @abstractmethod
    async def search(self, query: SearchQuery) -> list[Itinerary]: ...

    @abstractmethod
    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck: ...

    @abstractmethod
    async def ticket(self, booking: Booking) -> Ticket: ...

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
