"""Demo fares a test can move between two searches: the provider stand-in for price alerts.

``ScriptedFares`` is the demo provider (the local adapter of the flight port) with two knobs:
``cut`` makes every fare that many minor units cheaper (never below 1), ``unavailable`` makes
each search fail as a rate-limited provider's does. ``searches`` counts what reached it, so a
test sees how many provider calls the cache saved.
"""

from __future__ import annotations

from typing import Any

from services.flights.base import ProviderUnavailableError
from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.models import Itinerary, SearchQuery, today_anywhere
from services.money import Money
from tests.support.days import next_winter_day


class ScriptedFares(DemoProvider):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.cut = 0
        self.unavailable = False
        self.searches = 0

    async def search(self, query: SearchQuery) -> list[Itinerary]:
        self.searches += 1
        if self.unavailable:
            raise ProviderUnavailableError("429 Too Many Requests", retry_after=60)
        found = await super().search(query)
        if not self.cut:
            return found
        return [
            itinerary.model_copy(
                update={
                    "price": Money(
                        amount=max(1, itinerary.price.amount - self.cut),
                        currency=itinerary.price.currency,
                    ),
                    "price_lines": (),
                    "taxes": None,
                }
            )
            for itinerary in found
        ]


def winter_trip(places: PlaceIndex) -> SearchQuery:
    """Lisbon to Frankfurt on the next winter day: a route the demo fares and every provider
    stand-in sell, away from the seasons' edges."""
    return SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("FRA"),
        departure=next_winter_day(today_anywhere()),
    )
