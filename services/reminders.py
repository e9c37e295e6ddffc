"""Trip reminders: "check-in is open" and "travel day" for every paid or confirmed booking,
for the outbound flight and, on a round trip, again for the flight home.

``ReminderService.send_due`` is a scheduled job: run it every minute on any number of workers.
Each run reads only the bookings leaving, or flying home, in the next two days (indexes on
``bookings.departs_at`` and ``bookings.returns_at``), and for each reminder that is due it
first claims (booking, kind) in storage, one ``INSERT ... ON CONFLICT DO NOTHING``, so only one
worker ever sends it; then it looks at the booking and the traveller again, as they are at that
moment, and sends, or skips.

When each is due (the same rules for the flight home, ``return_checkin`` and
``return_departure``, measured from the first inbound flight, its airline and its airport):

- **Check-in opens**: when the airline of the first flight opens online check-in
  (``services.flights.checkin``; 24 hours before departure where its rule is not known). Up to
  ``CHECKIN_GRACE`` late it still goes (a worker was down for a while); later it is skipped, so
  a trip booked three hours before departure gets no "check-in just opened".
- **Travel day**: at 08:00 local time at the departure airport on the day of the flight, or
  3 hours before departure if that is earlier. A morning message is what a traveller reads
  over breakfast on the day, not in the night; but a 06:10 flight needs it before the drive to
  the airport, which airlines advise reaching 2 to 3 hours ahead, so then it comes at 03:10.
  It goes while there is still time to use it: until ``DEPARTURE_LAST_CALL`` before departure,
  so a trip booked the same afternoon gets it too.

Nothing is sent for a booking no longer paid or confirmed (cancelled, refunded: checked when
sending, not only when selecting), to a traveller who turned reminders off, has no profile
(erased with /deletedata), is blocked by an admin or blocked the bot. A worker that stops
between the claim and the send loses that one reminder: never sent twice is the promise, as
for broadcasts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from services import metrics, texts
from services.flights.airlines import airline_name
from services.flights.checkin import (
    CHECKIN_OPENS_HOURS,
    DEFAULT_CHECKIN_OPENS,
    checkin_opens,
    checkin_url,
)
from services.flights.dates import format_day
from services.messages import Button, Message, esc
from services.models import Booking, Segment, utcnow
from services.notify import Notifier
from services.storage import Storage
from services.storage.base import RETURN_REMINDER_KINDS

log = logging.getLogger(__name__)

CHECKIN = "checkin"
DEPARTURE = "departure"
RETURN_CHECKIN = "return_checkin"
RETURN_DEPARTURE = "return_departure"
RETURNS = RETURN_REMINDER_KINDS

CHECKIN_GRACE = timedelta(hours=3)
DEPARTURE_MORNING_HOUR = 8  # local time at the departure airport
DEPARTURE_AT_LATEST = timedelta(hours=3)  # before departure
DEPARTURE_LAST_CALL = timedelta(hours=1)  # before departure: too late to be of use after
BATCH = 100

# How far ahead each kind can be due: the longest check-in window, and a day.
_CHECKIN_LOOKAHEAD = max(
    DEFAULT_CHECKIN_OPENS, *(timedelta(hours=h) for h in CHECKIN_OPENS_HOURS.values())
)
LOOKAHEAD: dict[str, timedelta] = {
    CHECKIN: _CHECKIN_LOOKAHEAD,
    DEPARTURE: timedelta(hours=24),
    RETURN_CHECKIN: _CHECKIN_LOOKAHEAD,
    RETURN_DEPARTURE: timedelta(hours=24),
}

TURN_OFF = Button(label="Turn off trip reminders", action="!remindersoff")


def first_flight(booking: Booking) -> Segment:
    return booking.itinerary.outbound[0]


def reminded_flight(kind: str, booking: Booking) -> Segment | None:
    """The flight a reminder is about: the first outbound one, or for the return kinds the
    first flight home (None on a one-way trip)."""
    if kind in RETURNS:
        inbound = booking.itinerary.inbound
        return inbound[0] if inbound else None
    return first_flight(booking)


def checkin_due(flight: Segment) -> datetime:
    """When the flight's airline opens online check-in."""
    return flight.departure - (checkin_opens(flight.carrier) or DEFAULT_CHECKIN_OPENS)


def departure_due(flight: Segment) -> datetime:
    """08:00 local time on the day of departure, or 3 hours before departure if earlier."""
    departure = flight.departure
    morning = departure.replace(hour=DEPARTURE_MORNING_HOUR, minute=0, second=0, microsecond=0)
    return min(morning, departure - DEPARTURE_AT_LATEST)


def is_stale(kind: str, flight: Segment, now: datetime) -> bool:
    """Whether a due reminder would come too late to be of use."""
    if kind in (CHECKIN, RETURN_CHECKIN):
        return now - checkin_due(flight) > CHECKIN_GRACE
    return flight.departure - now < DEPARTURE_LAST_CALL


def _flight_code(segment: Segment) -> str:
    return esc(segment.flight_number)


def _leaves(flight: Segment, now: datetime) -> str:
    """'today at 06:30' or 'on Fri 12 Mar at 06:30', local time at the departure airport."""
    local = flight.departure
    today = now.astimezone(local.tzinfo).date()
    day = "today" if today == local.date() else f"on {format_day(local, today=today)}"
    return f"{day} at <b>{local:%H:%M}</b> local time from {esc(flight.origin)}"


def _details(booking: Booking) -> list[str]:
    lines = ["", *texts.itinerary_lines(booking.itinerary), *texts.airline_lines(booking)]
    if booking.itinerary.is_demo:
        lines.append("<i>Demo fare: no real ticket is issued.</i>")
    return lines


def _buttons(booking: Booking, *extra: Button) -> tuple[tuple[Button, ...], ...]:
    view = Button(label="View booking", action="!booking", arg=booking.reference)
    return (*((button,) for button in extra), (view,), (TURN_OFF,))


def _route(kind: str, booking: Booking) -> str:
    """The whole trip for the outbound reminders; the way home for the return ones."""
    if kind in RETURNS:
        home = booking.itinerary.inbound
        return f"{esc(home[0].origin)} → {esc(home[-1].destination)}"
    return texts.route(booking)


def checkin_message(kind: str, booking: Booking, flight: Segment, now: datetime) -> Message:
    airline = esc(airline_name(flight.carrier))
    opens = checkin_opens(flight.carrier)
    if opens is not None:
        rule = (
            f"{airline} opens online check-in {round(opens.total_seconds() / 3600)} hours "
            "before departure: you can check in now."
        )
    else:
        rule = (
            "Online check-in usually opens 24 hours before departure: check in on "
            f"{airline}'s website or app."
        )
    url = None if booking.itinerary.is_demo else checkin_url(flight.carrier)
    extra = (Button(label=f"Check in with {airline_name(flight.carrier)}", url=url),) if url else ()
    title = "Check-in is open for your return flight" if kind in RETURNS else "Check-in is open"
    lines = [
        f"🛂 <b>{title}</b> · booking <b>{esc(booking.reference)}</b>",
        f"{_route(kind, booking)} · {_flight_code(flight)} ({airline}) leaves "
        f"{_leaves(flight, now)}.",
        rule,
        *_details(booking),
    ]
    return Message(text="\n".join(lines), buttons=_buttons(booking, *extra))


def departure_message(kind: str, booking: Booking, flight: Segment, now: datetime) -> Message:
    airline = esc(airline_name(flight.carrier))
    title = "Travel day: your flight home" if kind in RETURNS else "Travel day"
    lines = [
        f"🧳 <b>{title}</b> · booking <b>{esc(booking.reference)}</b>",
        f"{_route(kind, booking)} · {_flight_code(flight)} ({airline}) leaves "
        f"{_leaves(flight, now)}.",
        "Airlines advise being at the airport 2 hours before departure, 3 for long flights; "
        "bring the passports you booked with.",
        *_details(booking),
    ]
    return Message(text="\n".join(lines), buttons=_buttons(booking))


MESSAGES: dict[str, Callable[[str, Booking, Segment, datetime], Message]] = {
    CHECKIN: checkin_message,
    DEPARTURE: departure_message,
    RETURN_CHECKIN: checkin_message,
    RETURN_DEPARTURE: departure_message,
}
DUE: dict[str, Callable[[Segment], datetime]] = {
    CHECKIN: checkin_due,
    DEPARTURE: departure_due,
    RETURN_CHECKIN: checkin_due,
    RETURN_DEPARTURE: departure_due,
}


class ReminderService:
    """Sends the trip reminders that are due; ``send_due`` is the scheduled job."""

    def __init__(
        self,
        storage: Storage,
        notifier: Notifier,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch: int = BATCH,
    ) -> None:
        self._storage = storage
        self._notifier = notifier
        self._clock = clock
        self._batch = batch

    async def send_due(self) -> int:
        """Send every reminder due now that nobody has claimed; returns how many were sent."""
        now = self._clock()
        sent = 0
        for kind, lookahead in LOOKAHEAD.items():
            offset = 0  # candidates not due yet stay in the list: page past them
            while True:
                page = await self._storage.list_reminder_candidates(
                    kind,
                    departs_after=now,
                    departs_until=now + lookahead,
                    limit=self._batch,
                    offset=offset,
                )
                for booking in page:
                    flight = reminded_flight(kind, booking)
                    if flight is None or DUE[kind](flight) > now:
                        offset += 1
                    elif await self._handle(kind, booking, now):
                        sent += 1
                if len(page) < self._batch:
                    break
        return sent

    async def _handle(self, kind: str, booking: Booking, now: datetime) -> bool:
        """Claim the reminder, then send it if it is still wanted; whether it was sent."""
        if not await self._storage.claim_reminder(booking.id, kind):
            return False  # another worker has it
        outcome = await self._deliver(kind, booking, now)
        await self._storage.finish_reminder(booking.id, kind, outcome)
        metrics.reminder(kind, outcome)
        if outcome != "sent":
            log.info("reminder %s for booking %s: %s", kind, booking.reference, outcome)
        return outcome == "sent"

    async def _deliver(self, kind: str, booking: Booking, now: datetime) -> str:
        flight = reminded_flight(kind, booking)
        if flight is None or is_stale(kind, flight, now):
            return "skipped"
        # As things are now: cancelled or refunded since it was selected, reminders turned off,
        # blocked, or the profile erased.
        current = await self._storage.get_booking(booking.id)
        profile = await self._storage.get_profile(booking.user_id)
        flight = reminded_flight(kind, current) if current is not None else None
        if (
            current is None
            or flight is None
            or not current.status.booked
            or profile is None
            or not profile.reminders
            or profile.blocked
            or profile.bot_blocked
        ):
            return "skipped"
        try:
            delivered = await self._notifier.notify(
                booking.user_id, MESSAGES[kind](kind, current, flight, now)
            )
        except Exception:  # any transport error: PTB stays out of services
            log.warning("reminder %s for booking %s failed", kind, booking.reference, exc_info=True)
            return "failed"
        if not delivered:
            await self._storage.set_bot_blocked(booking.user_id, True)
            return "bot_blocked"
        return "sent"
