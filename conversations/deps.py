"""What the flows need from the services, built once by the composition root (bot/bootstrap.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar

from services.alerts import AlertService
from services.bookings import BookingService
from services.broadcast import BroadcastWorker
from services.flights.base import FlightProvider
from services.flights.dates import local_today, zone_for_language
from services.flights.places import PlaceIndex
from services.flights.search import FlightSearchService
from services.models import MIN_TIME_BEFORE_DEPARTURE, Location, today_anywhere, utcnow
from services.storage import Storage

T = TypeVar("T")

TYPING_AFTER = 0.3  # seconds of work before "typing…" is worth showing
TYPING_EVERY = 4.5  # Telegram clears a chat action after about five seconds


class ChatStates(Protocol):
    """Writes another chat's conversation record, under that chat's lock: how an admin's block
    reaches a conversation in progress (conversations.flows.admin.StoreChatStates)."""

    async def put(self, chat_id: int, state: str, data: dict[str, Any]) -> bool:
        """Replace the chat's record; False when its lock could not be had in time."""
        ...

    async def clear(self, chat_id: int, *, only_in: str) -> bool:
        """Delete the chat's record if it is in state ``only_in``."""
        ...


@dataclass(slots=True)
class FlowDeps:
    storage: Storage
    places: PlaceIndex
    search: FlightSearchService
    provider: FlightProvider
    bookings: BookingService
    currency: str = "EUR"
    admin_ids: frozenset[int] = frozenset()
    demo_fares: bool = True
    sandbox_payments: bool = True
    clock: Callable[[], datetime] = field(default=utcnow)  # injectable: tests fix the instant
    min_time_before_departure: timedelta = MIN_TIME_BEFORE_DEPARTURE
    broadcasts: BroadcastWorker | None = None  # None: /broadcast says it is not available
    chats: ChatStates | None = None  # None: a block applies from the user's next conversation
    show_typing: Callable[[int], Awaitable[None]] | None = None  # "typing…" in a chat
    alerts: AlertService | None = None  # None: /alerts and "Watch" say they are not available

    def today(self) -> date:
        """The earliest date still current somewhere (where no place or person is known)."""
        return today_anywhere(self.clock())

    def zone_of(self, place: Location | str | None) -> str | None:
        """The IANA zone of a place (a Location's first airport, or an airport code)."""
        if place is None:
            return None
        code = place if isinstance(place, str) else (place.airports or (place.code,))[0]
        airport = self.places.find(code)
        return airport.tz if airport is not None else None

    def today_at(self, place: Location | str | None) -> date:
        """Today at a place: the departure airport's date decides what "today" and "tomorrow"
        mean and which days have passed."""
        return local_today(self.zone_of(place), self.clock())

    def traveller_today(self, origin: Location | str | None, language: str | None) -> date:
        """The traveller's own today: their origin's date, else their language's zone's."""
        zone = self.zone_of(origin) or zone_for_language(language)
        return local_today(zone, self.clock())

    def departs_too_soon(self, departure: datetime) -> bool:
        """Whether a flight has left or leaves within the minimum time before departure."""
        return departure <= self.clock() + self.min_time_before_departure

    async def while_typing(self, chat_id: int, work: Awaitable[T]) -> T:
        """Await ``work``, showing "typing…" once it has taken long enough for a person to
        notice, and again every few seconds while it runs (Telegram shows it for about five).
        A quick answer, such as a cached search, costs no Bot API call and is not held up
        behind one."""
        if self.show_typing is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            delay = TYPING_AFTER
            while True:
                done, _ = await asyncio.wait({task}, timeout=delay)
                if done:
                    return await task
                await self.show_typing(chat_id)
                delay = TYPING_EVERY
        finally:
            task.cancel()  # nothing to cancel once it is done; else its caller was cancelled
