"""Commands and global buttons at the engine seam: they work from any state and never move it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conversations.engine import EXPIRED_BUTTON, Event
from conversations.flows.admin import BLOCKED_NOTICE, WELCOME_BACK
from conversations.state import RateLimit
from services.models import BookingStatus
from tests.support.flowkit import (
    ADMIN_ID,
    TRAVELLER_ID,
    SeamKit,
    to_departure,
    to_origin,
    to_payment,
)
from tests.support.happy_path import PASSPORT, PASSPORT_MASKED

USER = TRAVELLER_ID  # the traveller of the flowkit paths


async def test_start_greets_and_asks_the_first_question(seam: SeamKit) -> None:
    chat = seam.chat(USER, "Sam")
    reply = await chat.say("/start")
    assert "Hi Sam! I can find and book flights." in reply.text
    assert "Demo fares" in reply.text
    assert "Where are you flying from?" in reply.text
    assert reply.labels == ["My bookings"]
    assert reply.state == "search:origin"
    profile = await seam.storage.get_profile(USER)
    assert profile is not None
    assert profile.first_name == "Sam"


async def test_help_lists_the_commands_and_keeps_the_state(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    before = await chat.record()
    reply = await chat.say("/help")
    for command in ("/start", "/mybookings", "/cancel", "/mydata", "/deletedata"):
        assert command in reply.text
    assert await chat.record() == before


async def test_text_outside_any_flow_says_how_to_start(seam: SeamKit) -> None:
    reply = await seam.chat(USER).say("qwxzvbn")
    assert "Type /start to search for flights, or /help" in reply.text
    assert reply.state is None


async def test_typed_text_is_escaped_when_echoed(seam: SeamKit) -> None:
    chat = await to_origin(seam)
    reply = await chat.say("<b>Atlantis</b> & co")
    assert "“<b>Atlantis</b> & co”" in reply.text  # shown literally, not as bold markup
    assert "&lt;b&gt;" in reply.html


@pytest.mark.parametrize(
    "forged",
    ["zz|trip|2", "not-a-token", "!nosuchaction|x", "0|trip|9", "|||", "1|pick|99.ffffff"],
)
async def test_a_forged_button_changes_nothing(seam: SeamKit, forged: str) -> None:
    chat = await to_departure(seam)
    before = await chat.record()
    reply = await chat.press_data(forged)
    assert reply.notice == EXPIRED_BUTTON
    assert await chat.record() == before


async def test_a_button_from_an_older_message_has_expired(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    old = next(b for b in chat.last.buttons if "Add a return date" in b.label)
    await chat.press("Add a return date")
    before = await chat.record()
    reply = await chat.press_data(old.callback_data or "")
    assert reply.notice == EXPIRED_BUTTON
    assert await chat.record() == before


async def test_a_flood_gets_one_polite_reply_then_silence(seam: SeamKit) -> None:
    seam.engine.rate = RateLimit(limit=3, window=60)
    chat = seam.chat(USER)
    for n in range(3):
        assert (await chat.say(f"hello {n}")).messages
    assert "You're sending messages very fast" in (await chat.say("hello again")).text
    for n in range(3):
        assert (await chat.say(f"more {n}")).messages == []


async def test_mybookings_without_bookings_says_how_to_start(seam: SeamKit) -> None:
    reply = await seam.chat(USER).say("/mybookings")
    assert "You have no bookings yet" in reply.text


async def test_cancel_keeps_the_booking_waiting_for_payment(seam: SeamKit) -> None:
    chat = await to_payment(seam)
    booking = await chat.booking()
    await chat.say("/cancel")
    reply = await chat.say("/mybookings")
    assert booking.reference in reply.text
    assert "Awaiting payment" in reply.text


async def test_a_deep_link_opens_the_booking_of_its_owner_only(seam: SeamKit) -> None:
    chat = await to_payment(seam)
    reference = (await chat.booking()).reference
    reply = await chat.say(f"/start booking_{reference}")
    assert f"Booking {reference}" in reply.text
    assert "Pay now" in reply.labels
    other = await seam.chat(USER + 1).say(f"/start booking_{reference}")
    assert reference not in other.text
    assert "Where are you flying from?" in other.text


async def test_back_from_the_payment_pages_cancel_link_cancels_the_booking(
    seam: SeamKit,
) -> None:
    chat = await to_payment(seam)
    booking = await chat.booking()
    reply = await chat.say(f"/start cancelled_{booking.reference}")
    assert f"Booking {booking.reference} is cancelled; nothing was charged." in reply.text
    assert (await chat.booking()).status is BookingStatus.CANCELLED


async def test_a_payment_can_be_resumed_or_abandoned_from_my_bookings(seam: SeamKit) -> None:
    chat = await to_payment(seam)
    booking = await chat.booking()
    await chat.say("/mybookings")
    await chat.press(booking.reference)
    reply = await chat.press("Pay now")
    assert "is held for you" in reply.text
    reply = await chat.press("Abandon this booking")
    assert "is cancelled; nothing was charged" in reply.text
    assert (await chat.booking()).status is BookingStatus.CANCELLED
    reply = await chat.press("Cancel this booking")  # the older link's own button
    assert "can no longer be abandoned" in reply.text


async def test_someone_elses_booking_button_shows_nothing(seam: SeamKit) -> None:
    chat = await to_payment(seam)
    reference = (await chat.booking()).reference
    stranger = seam.chat(USER + 1)
    reply = await stranger.press_data(f"!booking|{reference}")
    assert reply.toast == "Booking not found."
    assert reply.messages == []
    await stranger.press_data(f"!cancelyes|{reference}")
    await stranger.press_data(f"!abandon|{reference}")
    assert (await chat.booking()).status is BookingStatus.AWAITING_PAYMENT


async def test_a_confirmed_booking_is_cancelled_and_refunded(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    await chat.say("/mybookings")
    detail = await chat.press(booking.reference)
    assert f"Booking {booking.reference}" in detail.text
    assert PASSPORT_MASKED in detail.text
    question = await chat.press("Cancel and refund")
    assert "Yes, cancel and refund" in question.labels
    assert (await chat.booking()).status is BookingStatus.CONFIRMED  # nothing before "yes"
    reply = await chat.press("Yes, cancel and refund")
    [told] = reply.messages  # one answer, saying what comes back
    assert f"Booking {booking.reference} is cancelled." in told.text
    assert f"{booking.amount.format()} is on its way back" in told.text
    after = await chat.booking()
    assert after.status is BookingStatus.REFUNDED
    assert after.refunded_minor == booking.amount.amount


async def test_cancel_and_refund_is_offered_until_the_flight_leaves_not_all_day(
    seam: SeamKit,
) -> None:
    """The booking service refuses once the flight has left, so the button goes then, not at
    the end of the departure day: pressed later it could only lead to a refusal."""
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    departure = booking.itinerary.departure
    seam.clock.now = departure - timedelta(minutes=1)
    await chat.say("/mybookings")
    assert "Cancel and refund" in (await chat.press(booking.reference)).labels
    seam.clock.now = departure + timedelta(seconds=1)  # the same day where it leaves
    await chat.say("/mybookings")
    after = await chat.press(booking.reference)
    assert "Cancel and refund" not in after.labels
    assert "‹ My bookings" in after.labels
    assert (await chat.booking()).status is BookingStatus.CONFIRMED


async def test_mydata_summarises_with_the_passport_masked_and_sends_the_file(
    seam: SeamKit,
) -> None:
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    reply = await chat.say("/mydata")
    assert "What I store about you" in reply.text
    assert booking.reference in reply.text
    assert PASSPORT_MASKED in reply.text
    assert PASSPORT not in reply.text
    assert reply.last.document == "my-travelbot-data.json"
    result = await seam.engine.handle(Event.typed(chat.user, USER, "/mydata"))
    document = result.replies[0].document
    assert document is not None
    stored = json.loads(document.content)
    assert stored["bookings"][0]["reference"] == booking.reference
    assert PASSPORT not in document.content.decode()


async def test_deletedata_asks_then_erases_and_forgets_the_conversation(
    seam: SeamKit,
) -> None:
    chat = await to_payment(seam)
    booking = await chat.booking()
    question = await chat.say("/deletedata")
    assert "These unpaid bookings will be cancelled" in question.text
    assert booking.reference in question.text
    assert (await chat.press("No, keep it")).text == "Nothing was erased."
    await chat.say("/deletedata")
    reply = await chat.press("Yes, erase my data")
    assert "Done: your data is erased" in reply.text
    assert "1 unpaid booking cancelled." in reply.text
    assert (await chat.record()).state is None
    assert await seam.storage.get_profile(USER) is None
    erased = await seam.storage.get_booking(booking.id)
    assert erased is not None
    assert erased.status is BookingStatus.CANCELLED
    kept = erased.model_dump_json()
    assert PASSPORT not in kept
    assert "SILVA" not in kept


async def test_the_last_search_is_offered_again_from_start(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    first = await chat.say("/start")
    assert not any("Again" in label for label in first.labels)
    await chat.say("Lisbon")
    await chat.say("FCO")
    await chat.say(seam.day(90).isoformat())
    again = await chat.say("/start")
    assert any(label.startswith("🔁 Again: Lisbon") for label in again.labels)
    reply = await chat.press("Again:")
    assert reply.state == "search:departure"
    search = (await chat.record()).data["search"]
    assert (search["origin"]["code"], search["destination"]["code"]) == ("LIS", "FCO")
    assert "When do you fly?" in reply.text


async def test_a_blocked_user_gets_one_notice_then_silence_until_unblocked(
    seam: SeamKit,
) -> None:
    traveller = await to_departure(seam)
    admin = seam.chat(ADMIN_ID, "Ada")
    reply = await admin.say(f"/block {USER}")
    assert "is blocked" in reply.text
    assert (await traveller.say("Rome")).text == BLOCKED_NOTICE
    assert await traveller.state() == "admin:blocked"
    assert (await traveller.say("/start")).messages == []
    await admin.say(f"/unblock {USER}")
    assert (await traveller.say("/start")).state == "search:origin"
    assert await traveller.state() == "search:origin"
    assert WELCOME_BACK.startswith("You can use the bot again")
