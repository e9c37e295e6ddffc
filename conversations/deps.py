"""What the flows need from the services, built once by the composition root (bot/bootstrap.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from services.flights.search import FlightSearchService

from services.bookings import BookingService
from services.flights.base import FlightProvider
from services.flights.places import PlaceIndex
from services.models import today_anywhere
from services.storage import Storage


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
    today: Callable[[], date] = field(default=today_anywhere)
