"""Trip reminders: switched by the traveller at the engine seam, sent by ``ReminderService`` on
real storage (SQLite and Supabase) on a fixed clock, and end to end through PTB and the
sandbox Bot API.

The only stand-in is Telegram's: ``MemoryNotifier`` (the notifier port's local adapter), here
and there with a hook that does what a traveller or another worker would do at the moment a
reminder goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.messages import Message
from services.models import Booking, BookingStatus, Itinerary, NewBooking, Segment
from services.money import Money
from services.notify import MemoryNotifier
from services.reminders import ReminderService, checkin_due, first_flight
from services.storage import Storage
from tests.support.botkit import running_bot
from tests.support.days import Clock
from tests.support.flowkit import SeamKit, to_departure
from tests.support.supabase_stack import StorageFactory
from tests.test_storage_contract import traveller

S = BookingStatus
PARIS = ZoneInfo("Europe/Paris")
LISBON = ZoneInfo("Europe/Lisbon")
ROME = ZoneInfo("Europe/Rome")
ZONES = {"CDG": PARIS, "LIS": LISBON, "FCO": ROME}
# A Wednesday noon in winter (Paris on UTC+1, Lisbon on UTC+0): the clock the service runs on.
NOW = datetime(2027, 1, 13, 12, 0, tzinfo=UTC)
USER = 4100


def trip(
    user_id: int,
    departs: datetime,
    *,
    carrier: str = "AF",
    origin: str = "CDG",
    status: BookingStatus = S.CONFIRMED,
    provider: str = "duffel",
    returns: datetime | None = None,
    home_carrier: str = "LH",
) -> NewBooking:
    """A trip from ``origin`` to Rome; with ``returns``, a round trip flying home then on
    ``home_carrier``."""
    price = Money(amount=14900, currency="EUR")
    flights = [
        Segment(
            carrier=carrier,
            flight_number=f"{carrier}1025",
            origin=origin,
            destination="FCO",
            departure=departs.astimezone(
                ZONES[origin]
            ),  # in the airport's own time, as providers give it
            arrival=(departs + timedelta(hours=2, minutes=10)).astimezone(ROME),
        )
    ]
    if returns is not None:
        flights.append(
            Segment(
                carrier=home_carrier,
                flight_number=f"{home_carrier}330",
                origin="FCO",
                destination=origin,
                departure=returns.astimezone(ROME),
                arrival=(returns + timedelta(hours=2, minutes=5)).astimezone(ZONES[origin]),
                inbound=True,
            )
        )
    return NewBooking(
        user_id=user_id,
        itinerary=Itinerary(
            id=f"{provider}-{carrier}", provider=provider, segments=tuple(flights), price=price
        ),
        travellers=(traveller(),),
        amount=price,
        status=status,
    )


@dataclass
class Phone(MemoryNotifier):
    """Telegram's stand-in, with ``on_send`` run as a message goes out (what happens elsewhere
    at that very moment)."""

    on_send: Callable[[int, Message], Awaitable[None]] | None = None
    texts: list[tuple[int, str]] = field(default_factory=list)

    async def notify(self, user_id: int, message: Message) -> bool:
        if self.on_send is not None:
            await self.on_send(user_id, message)
        delivered = await MemoryNotifier.notify(self, user_id, message)
        if delivered:
            self.texts.append((user_id, message.text))
        return delivered


async def booked(storage: Storage, new: NewBooking) -> Booking:
    await storage.upsert_profile(new.user_id, first_name="Ana")
    return await storage.create_booking(new)


def service(storage: Storage, phone: Phone, clock: Clock, **options: int) -> ReminderService:
    return ReminderService(storage, phone, clock=clock, **options)


# when each reminder is due ----------------------------------------------------------------------
async def test_check_in_opens_when_the_airline_opens_it(storage: Storage) -> None:
    clock, phone = Clock(NOW), Phone()
    reminders = service(storage, phone, clock)
    emirates = await booked(storage, trip(1, NOW + timedelta(hours=50), carrier="EK"))  # 48 h
    air_france = await booked(storage, trip(2, NOW + timedelta(hours=40)))  # 30 h
    lufthansa = await booked(storage, trip(3, NOW + timedelta(hours=30), carrier="LH"))  # 23 h
    tap = await booked(storage, trip(4, NOW + timedelta(hours=30), carrier="TP"))  # unknown: 24 h

    assert await reminders.send_due() == 0
    clock.now = NOW + timedelta(hours=2)
    assert await reminders.send_due() == 1
    assert [user for user, _ in phone.texts] == [emirates.user_id]
    clock.now = NOW + timedelta(hours=6)
    assert await reminders.send_due() == 1  # TAP, on the 24 hours of an airline not listed
    clock.now = NOW + timedelta(hours=7)
    assert await reminders.send_due() == 1  # Lufthansa's 23 hours
    clock.now = NOW + timedelta(hours=10)
    assert await reminders.send_due() == 1
    assert await reminders.send_due() == 0  # each once
    assert [user for user, _ in phone.texts] == [1, tap.user_id, lufthansa.user_id, 2]

    (message,) = phone.to(air_france.user_id)
    departs = NOW + timedelta(hours=40)  # 04:00 UTC on Fri 15 Jan: 05:00 in Paris
    assert departs.astimezone(PARIS).hour == 5
    assert "Check-in is open" in message.text
    assert air_france.reference in message.text
    assert "CDG → FCO" in message.text
    assert "AF1025 (Air France) leaves on Fri 15 Jan at <b>05:00</b> local time from CDG" in (
        message.text
    )
    assert "Air France opens online check-in 30 hours before departure" in message.text
    links = [b.url for row in message.buttons for b in row if b.url]
    assert links == ["https://wwws.airfrance.fr/check-in"]
    (tap_message,) = phone.to(tap.user_id)
    assert "usually opens 24 hours before departure" in tap_message.text
    assert not [b for row in tap_message.buttons for b in row if b.url]  # no link known
    actions = [b.action for row in tap_message.buttons for b in row]
    assert actions == ["!booking", "!remindersoff"]


async def test_travel_day_comes_at_eight_local_or_three_hours_before_an_early_flight(
    storage: Storage,
) -> None:
    clock, phone = Clock(NOW), Phone()
    reminders = service(storage, phone, clock)
    evening = datetime(2027, 1, 14, 18, 30, tzinfo=PARIS)
    dawn = datetime(2027, 1, 15, 6, 10, tzinfo=PARIS)
    late = await booked(storage, trip(1, evening, carrier="TP"))
    early = await booked(storage, trip(2, dawn, carrier="TP"))

    def travel_days() -> list[int]:
        return [user for user, text in phone.texts if "Travel day" in text]

    clock.now = datetime(2027, 1, 14, 7, 59, tzinfo=PARIS)
    await reminders.send_due()
    assert travel_days() == []
    clock.now = datetime(2027, 1, 14, 8, 0, tzinfo=PARIS)
    await reminders.send_due()
    assert travel_days() == [late.user_id]
    (message,) = [m for m in phone.to(late.user_id) if "Travel day" in m.text]
    assert "leaves today at <b>18:30</b> local time from CDG" in message.text
    assert late.reference in message.text

    clock.now = datetime(2027, 1, 15, 3, 9, tzinfo=PARIS)
    await reminders.send_due()
    assert travel_days() == [late.user_id]
    clock.now = datetime(2027, 1, 15, 3, 10, tzinfo=PARIS)  # 08:00 would be after take-off
    await reminders.send_due()
    assert travel_days() == [late.user_id, early.user_id]


async def test_a_reminder_that_would_come_too_late_is_skipped(storage: Storage) -> None:
    departs = NOW + timedelta(hours=3)
    clock, phone = Clock(NOW), Phone()
    reminders = service(storage, phone, clock)
    # Booked three hours before departure: check-in opened 21 hours ago, so no "it just
    # opened"; the day's reminder is still of use.
    last_minute = await booked(storage, trip(1, departs))
    assert await reminders.send_due() == 1
    (message,) = phone.to(last_minute.user_id)
    assert "Travel day" in message.text
    # Booked forty minutes before: too late for either.
    await booked(storage, trip(2, NOW + timedelta(minutes=40)))
    # Check-in opened 2 h 59 m ago (a worker was down): still worth telling.
    await booked(storage, trip(3, NOW + timedelta(hours=21, minutes=1), carrier="BA"))
    assert await reminders.send_due() == 1
    assert phone.to(2) == []
    assert ["Check-in is open" in m.text for m in phone.to(3)] == [True]
    clock.now += timedelta(minutes=30)
    assert await reminders.send_due() == 0  # the skipped ones are not looked at again
    assert len(phone.sent) == 2


async def test_many_trips_not_due_yet_do_not_hide_one_that_is(storage: Storage) -> None:
    clock, phone = Clock(NOW), Phone()
    reminders = service(storage, phone, clock, batch=2)
    for hours in (25, 26, 27, 28, 29):  # check-in opens in 1 to 5 hours
        await booked(storage, trip(1, NOW + timedelta(hours=hours), carrier="BA"))
    due = await booked(storage, trip(2, NOW + timedelta(hours=47), carrier="EK"))  # opened 1 h ago
    assert await reminders.send_due() == 1
    assert [user for user, _ in phone.texts] == [due.user_id]


# the flight home of a round trip -----------------------------------------------------------------
def heads(phone: Phone, user_id: int) -> list[str]:
    """The bold first words of each message the traveller got, in order."""
    return [m.text.split("</b>")[0].split("<b>")[1] for m in phone.to(user_id)]


async def test_a_round_trip_gets_both_reminders_for_the_flight_home_too(storage: Storage) -> None:
    clock, phone = Clock(NOW), Phone()
    reminders = service(storage, phone, clock)
    out = NOW + timedelta(hours=40)  # Fri 15 Jan 05:00 in Paris, Air France (30 h)
    home = datetime(2027, 1, 20, 19, 45, tzinfo=ROME)  # Wed 20 Jan, Lufthansa (23 h)
    round_trip = await booked(storage, trip(1, out, returns=home))
    one_way = await booked(storage, trip(2, out))

    async def at(moment: datetime) -> int:
        clock.now = moment
        return await reminders.send_due()

    assert await at(NOW + timedelta(hours=10)) == 2  # both check-ins, the outbound flight's
    assert await at(datetime(2027, 1, 15, 2, 0, tzinfo=PARIS)) == 2  # both travel days
    assert heads(phone, 1) == heads(phone, 2) == ["Check-in is open", "Travel day"]

    opens = home - timedelta(hours=23)  # Lufthansa's 23 hours, not Air France's 30
    assert await at(opens - timedelta(hours=7, minutes=1)) == 0
    assert await at(opens - timedelta(minutes=1)) == 0
    assert await at(opens) == 1
    assert heads(phone, 1)[2:] == ["Check-in is open for your return flight"]
    message = phone.to(1)[2]
    assert round_trip.reference in message.text
    assert "FCO → CDG · LH330 (Lufthansa) leaves on Wed 20 Jan at <b>19:45</b> local time " in (
        message.text
    )
    assert "from FCO" in message.text
    assert "Lufthansa opens online check-in 23 hours before departure" in message.text
    links = [b.url for row in message.buttons for b in row if b.url]
    assert links == ["https://www.lufthansa.com/de/en/online-check-in"]  # its airline's
    actions = [b.action for row in message.buttons for b in row if b.action]
    assert actions == ["!booking", "!remindersoff"]

    assert await at(datetime(2027, 1, 20, 7, 59, tzinfo=ROME)) == 0
    assert await at(datetime(2027, 1, 20, 8, 0, tzinfo=ROME)) == 1  # 08:00 in Rome
    (travel_home,) = phone.to(1)[3:]
    assert "<b>Travel day: your flight home</b>" in travel_home.text
    assert "LH330 (Lufthansa) leaves today at <b>19:45</b> local time from FCO" in (
        travel_home.text
    )
    assert await at(home - timedelta(hours=2)) == 0  # each once
    assert len(phone.to(1)) == 4
    assert len(phone.to(one_way.user_id)) == 2  # a one-way trip: nothing more


async def test_the_flight_home_has_its_own_grace_and_its_own_send_time_checks(
    storage: Storage,
) -> None:
    clock = Clock(NOW)
    # Leaving in 2 hours: the outbound check-in is long stale, its travel day still of use,
    # and the way home's rules are measured from the flight home. British Airways: 24 h.
    soon = NOW + timedelta(hours=2)
    fresh = await booked(
        storage, trip(1, soon, returns=NOW + timedelta(hours=21, minutes=1), home_carrier="BA")
    )  # its check-in opened 2 h 59 m ago: still sent
    stale = await booked(
        storage, trip(2, soon, returns=NOW + timedelta(hours=20, minutes=50), home_carrier="BA")
    )  # opened 3 h 10 m ago: skipped
    cancelled = await booked(storage, trip(3, soon, returns=NOW + timedelta(days=3)))
    switched_off = await booked(storage, trip(4, soon, returns=NOW + timedelta(days=3)))
    blocked = await booked(storage, trip(5, soon, returns=NOW + timedelta(days=3)))
    going = await booked(storage, trip(6, soon, returns=NOW + timedelta(days=3)))
    phone = Phone()
    reminders = service(storage, phone, clock)

    assert await reminders.send_due() == 7  # six travel days, one return check-in
    assert heads(phone, fresh.user_id) == ["Travel day", "Check-in is open for your return flight"]
    assert heads(phone, stale.user_id) == ["Travel day"]
    clock.now = NOW + timedelta(hours=19)  # 08:00 in Rome: both flights home, still of use
    assert await reminders.send_due() == 2
    for user_id in (fresh.user_id, stale.user_id):
        assert heads(phone, user_id)[-1] == "Travel day: your flight home"

    # Back from the trip early, or changed their mind; the last one blocks the bot.
    assert await storage.transition(cancelled.id, S.CONFIRMED, S.CANCELLED)
    await storage.set_reminders(switched_off.user_id, False)
    phone.blocked.add(blocked.user_id)
    clock.now = NOW + timedelta(days=2, hours=2)  # the four flights home: check-in open (LH)
    assert await reminders.send_due() == 1
    assert heads(phone, going.user_id) == ["Travel day", "Check-in is open for your return flight"]
    for user_id in (cancelled.user_id, switched_off.user_id, blocked.user_id):
        assert heads(phone, user_id) == ["Travel day"]
    profile = await storage.get_profile(blocked.user_id)
    assert profile is not None
    assert profile.bot_blocked
    clock.now = NOW + timedelta(days=3) - timedelta(hours=3)  # travel day home
    assert await reminders.send_due() == 1
    assert heads(phone, going.user_id)[-1] == "Travel day: your flight home"
    for user_id in (cancelled.user_id, switched_off.user_id, blocked.user_id):
        assert heads(phone, user_id) == ["Travel day"]
    assert len(phone.to(stale.user_id)) == 2


# who gets none -----------------------------------------------------------------------------------
async def test_no_reminder_for_a_trip_that_is_not_booked(storage: Storage) -> None:
    clock, phone = Clock(NOW + timedelta(hours=1)), Phone()  # Air France's check-in: open
    departs = NOW + timedelta(hours=30)
    cancelled = await booked(storage, trip(1, departs))
    assert await storage.transition(cancelled.id, S.CONFIRMED, S.CANCELLED)
    refunded = await booked(storage, trip(2, departs, status=S.FAILED))
    assert await storage.transition(refunded.id, S.FAILED, S.REFUNDED)
    await booked(storage, trip(3, departs, status=S.AWAITING_PAYMENT))
    await booked(storage, trip(4, departs, status=S.EXPIRED))
    paid = await booked(storage, trip(5, departs, status=S.PAID))  # being ticketed: a trip

    assert await service(storage, phone, clock).send_due() == 1
    assert [user for user, _ in phone.texts] == [paid.user_id]


async def test_a_trip_cancelled_as_its_reminder_goes_out_gets_none(storage: Storage) -> None:
    """Checked when sending, not only when the job picked the trips: the first traveller's
    reminder goes out while the second cancels and the third turns reminders off."""
    clock = Clock(NOW + timedelta(hours=1))
    departs = NOW + timedelta(hours=30)
    first = await booked(storage, trip(1, departs))
    second = await booked(storage, trip(2, departs + timedelta(minutes=5)))
    await booked(storage, trip(3, departs + timedelta(minutes=10)))

    async def meanwhile(user_id: int, message: Message) -> None:
        if user_id == first.user_id:
            assert await storage.transition(second.id, S.CONFIRMED, S.CANCELLED)
            await storage.set_reminders(3, False)

    phone = Phone(on_send=meanwhile)
    assert await service(storage, phone, clock).send_due() == 1
    assert [user for user, _ in phone.texts] == [first.user_id]


async def test_none_while_off_and_again_once_back_on(storage: Storage) -> None:
    clock, phone = Clock(NOW + timedelta(hours=1)), Phone()
    reminders = service(storage, phone, clock)
    await booked(storage, trip(USER, NOW + timedelta(hours=30)))
    await storage.set_reminders(USER, False)
    assert await reminders.send_due() == 0
    await storage.set_reminders(USER, True)  # still in time: it goes
    assert await reminders.send_due() == 1
    assert len(phone.to(USER)) == 1


async def test_blocked_travellers_get_none(storage: Storage) -> None:
    clock = Clock(NOW + timedelta(hours=1))
    departs = NOW + timedelta(hours=30)
    for user_id in (1, 2, 3):
        await booked(storage, trip(user_id, departs))
    assert await storage.set_blocked(1, True)  # by an admin
    await storage.set_bot_blocked(2, True)  # blocked the bot, as a broadcast found out
    await storage.create_booking(trip(4, departs))  # no profile: erased with /deletedata
    phone = Phone(blocked={3})  # blocks the bot now: Telegram refuses the message
    reminders = service(storage, phone, clock)

    assert await reminders.send_due() == 0
    assert phone.sent == []
    profile = await storage.get_profile(3)
    assert profile is not None
    assert profile.bot_blocked  # remembered, so nothing else tries either
    phone.blocked.clear()
    clock.now = NOW + timedelta(hours=20)  # the day's: not for someone who blocked the bot
    assert await reminders.send_due() == 0


async def test_two_workers_racing_send_each_reminder_once(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_storage = await storage_factory.open()
    clock, phone = Clock(NOW + timedelta(hours=1)), Phone()  # Air France's check-in: open
    home = NOW + timedelta(days=4)  # Sun 17 Jan 13:00 in Rome
    trips = [
        await booked(
            storage,
            trip(100 + n, NOW + timedelta(hours=30, minutes=n), returns=home if n % 2 else None),
        )
        for n in range(8)
    ]
    workers = [service(s, phone, clock) for s in (storage, other_storage) * 3]

    checkins = await asyncio.gather(*(worker.send_due() for worker in workers))
    assert sum(checkins) == len(trips)
    clock.now = NOW + timedelta(hours=20)  # 09:00 in Paris on the day of the flights
    travel_days = await asyncio.gather(*(worker.send_due() for worker in workers))
    assert sum(travel_days) == len(trips)

    clock.now = home - timedelta(hours=23)  # Lufthansa's check-in for the flight home
    return_checkins = await asyncio.gather(*(worker.send_due() for worker in workers))
    clock.now = home - timedelta(hours=5)  # 08:00 in Rome
    return_travel_days = await asyncio.gather(*(worker.send_due() for worker in workers))
    assert sum(return_checkins) == sum(return_travel_days) == len(trips) // 2

    for n, booking in enumerate(trips):
        expected = ["Check-in is open", "Travel day"]
        if n % 2:
            expected += ["Check-in is open for your return flight", "Travel day: your flight home"]
        assert heads(phone, booking.user_id) == expected
    assert await asyncio.gather(*(w.send_due() for w in workers)) == [0] * len(workers)


# the switch, at the engine seam ------------------------------------------------------------------
async def test_reminders_shows_the_setting_and_its_button_switches_it_in_place(
    seam: SeamKit,
) -> None:
    chat = await to_departure(seam)
    before = await chat.record()
    reply = await chat.say("/reminders")
    assert "Trip reminders are on" in reply.text
    assert reply.last.labels == ["Turn reminders off"]

    shown = len(chat.messages)
    off = await chat.press("Turn reminders off")
    assert "Trip reminders are off" in off.text
    assert len(chat.messages) == shown  # edited in place, not a new message
    assert chat.messages[-1].labels == ["Turn reminders on"]
    profile = await seam.storage.get_profile(chat.id)
    assert profile is not None
    assert not profile.reminders

    on = await chat.press("Turn reminders on")
    assert "Trip reminders are on" in on.text
    assert chat.messages[-1].labels == ["Turn reminders off"]
    assert (await chat.record()).state == before.state  # the search goes on where it was
    assert (await chat.record()).data == before.data


async def test_reminders_on_and_off_as_arguments_and_anything_else_refused(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    before = await chat.record()
    assert "Trip reminders are off" in (await chat.say("/reminders OFF")).text
    mydata = await chat.say("/mydata")
    assert "Trip reminders: off (/reminders)" in mydata.text

    refused = await chat.say("/reminders maybe")
    assert "“maybe” is not a setting: use /reminders on or /reminders off" in refused.text
    profile = await seam.storage.get_profile(chat.id)
    assert profile is not None
    assert not profile.reminders  # unchanged
    assert await chat.record() == before  # and the user is where they were

    assert "“&lt;b&gt;x&lt;/b&gt;”" in (await chat.say("/reminders <b>x</b>")).html
    assert "Trip reminders are on" in (await chat.say("/reminders on")).text
    assert "Trip reminders: on (/reminders)" in (await chat.say("/mydata")).text


async def test_the_button_on_a_reminder_turns_them_off(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    assert booking.status is S.CONFIRMED
    departs = booking.itinerary.departure
    seam.clock.now = checkin_due(first_flight(booking)) + timedelta(minutes=1)
    assert await seam.services.reminders.send_due() == 1
    reminder = chat.last
    assert "Check-in is open" in reminder.text
    assert booking.reference in reminder.text
    assert "Demo fare" in reminder.text
    assert not [b for b in reminder.buttons if b.url]  # no airline's page for a demo fare

    reply = await chat.press("Turn off trip reminders")
    assert "Trip reminders are off" in reply.text
    assert chat.messages[-2] == reminder  # the reminder stays as it was
    seam.clock.now = departs - timedelta(hours=3, minutes=30)  # travel day: not any more
    assert await seam.services.reminders.send_due() == 0


# end to end --------------------------------------------------------------------------------------
async def test_a_reminder_reaches_telegram_and_its_button_works(tmp_path: Path) -> None:
    clock = Clock(NOW)
    async with running_bot(tmp_path, clock=clock) as bot:
        await bot.say(USER, "/start")  # the traveller's profile
        storage = bot.runtime.adapters.storage
        booking = await storage.create_booking(trip(USER, NOW + timedelta(hours=40)))
        reminders = bot.runtime.reminders
        assert reminders is not None
        clock.now = NOW + timedelta(hours=10)

        assert await reminders.send_due() == 1

        reminder = bot.sandbox.bot_messages(USER)[-1]
        assert "Check-in is open" in reminder.text
        assert booking.reference in reminder.text
        assert reminder.html.count("<b>") >= 3  # sent as HTML, not as literal tags
        labels = [(b.label, b.url) for row in reminder.buttons for b in row]
        assert labels[0] == ("Check in with Air France", "https://wwws.airfrance.fr/check-in")
        reply = await bot.press(USER, "Turn off trip reminders")
        assert "Trip reminders are off" in reply.text
        profile = await storage.get_profile(USER)
        assert profile is not None
        assert not profile.reminders
