"""A booking's flights as an iCalendar (``.ics``) file, one event per flight.

Times are written in UTC (``...Z``), so every calendar places them right without time-zone
tables; the description gives each airport's local time as the ticket prints it. UIDs are
stable per booking and flight, so a later cancellation file replaces the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar, Event

from services.flights.dates import format_day
from services.models import Booking, Segment, utcnow

MIME_TYPE = "text/calendar"
PRODUCT_ID = "-//travelbot//flight booking//EN"


def airline_reference(booking: Booking) -> str | None:
    """The airline's own booking reference (PNR), where the booking has one.

    Bookings do not record one yet (the Duffel provider adds it, issue 13): once they do, this
    returns that field, and the email, the chat's calendar file and the .ics all show it.
    """
    return None


def calendar_filename(booking: Booking) -> str:
    return f"{booking.reference}.ics"


def booking_calendar(
    booking: Booking, *, cancelled: bool = False, now: datetime | None = None
) -> bytes:
    """The .ics for ``booking``; ``cancelled`` marks every flight cancelled (for a refund)."""
    stamp = (now or utcnow()).astimezone(UTC)
    pnr = airline_reference(booking)
    calendar = Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    for number, segment in enumerate(booking.itinerary.segments, start=1):
        calendar.add_component(
            _flight_event(booking, segment, number, pnr, cancelled=cancelled, stamp=stamp)
        )
    data: bytes = calendar.to_ical()
    return data


def _moment(local: datetime) -> str:
    """'Fri 9 Apr 2027 14:35': a calendar file outlives this year, so its days carry theirs."""
    return f"{format_day(local, always_year=True)} {local:%H:%M}"


def _flight_event(
    booking: Booking,
    segment: Segment,
    number: int,
    pnr: str | None,
    *,
    cancelled: bool,
    stamp: datetime,
) -> Event:
    event = Event()
    event.add("uid", f"{booking.reference}-{number}-{segment.flight_number}@travelbot")
    event.add("dtstamp", stamp)
    event.add("dtstart", segment.departure.astimezone(UTC))
    event.add("dtend", segment.arrival.astimezone(UTC))
    event.add("summary", f"Flight {segment.flight_number} {segment.origin} → {segment.destination}")
    event.add("location", f"{segment.origin} airport")
    lines = [
        f"Booking reference: {booking.reference}",
        *([f"Airline reference: {pnr}"] if pnr else []),
        f"Departs {segment.origin} {_moment(segment.departure)} local time",
        f"Arrives {segment.destination} {_moment(segment.arrival)} local time",
    ]
    if booking.itinerary.is_demo:
        lines.append("Demo fare: no real ticket is issued.")
    event.add("description", "\n".join(lines))
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    event.add("sequence", 1 if cancelled else 0)
    event.add("transp", "OPAQUE")
    return event
