"""After paying: my bookings, cancellation with a refund, resuming or abandoning a payment, and
the traveller's own data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from services.models import BookingStatus, utcnow
from tests.support.botkit import BotKit, Reply, running_bot
from tests.test_conversation_e2e import to_field, to_payment

USER = 9301


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


async def _reference(bot: BotKit) -> str:
    reference: str = (await bot.state(USER)).data["booking"]["reference"]
    return reference


async def _pay_on_sandbox_page(bot: BotKit) -> None:
    url = next(
        b.url
        for m in reversed(bot.sandbox.bot_messages(USER))
        for row in m.buttons
        for b in row
        if b.url
    )
    assert url is not None
    async with aiohttp.ClientSession() as http, http.post(f"{url}/pay") as response:
        assert response.status == 200
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.3)


async def _status(bot: BotKit, reference: str) -> BookingStatus:
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    return booking.status


async def test_a_confirmed_booking_can_be_cancelled_and_refunded(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    await _pay_on_sandbox_page(bot)
    assert await _status(bot, reference) is BookingStatus.CONFIRMED

    listing = await bot.say(USER, "/mybookings")
    assert reference in listing.text
    assert "Confirmed" in listing.text
    detail = await bot.press(USER, reference)
    assert f"Booking {reference}" in detail.text
    assert "•••• " in detail.text
    ask = await bot.press(USER, "Cancel and refund")
    assert "refund" in ask.text
    assert await _status(bot, reference) is BookingStatus.CONFIRMED  # nothing before "yes"
    done = await bot.press(USER, "Yes, cancel and refund")
    [told] = done.messages  # one answer, saying what comes back
    assert f"Booking {reference} is cancelled." in told.text
    paid = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert paid is not None
    assert f"{paid.amount.format()} is on its way back" in told.text
    assert await _status(bot, reference) is BookingStatus.REFUNDED


async def test_cancel_and_refund_is_offered_until_the_flight_leaves_not_all_day(
    tmp_path: Path,
) -> None:
    """The booking service refuses once the flight has left, so the button goes then, not at
    the end of the departure day: pressed later it could only lead to a refusal."""
    now = [utcnow()]
    async with running_bot(tmp_path, clock=lambda: now[0]) as bot:
        await to_payment(bot, USER)
        reference = await _reference(bot)
        await _pay_on_sandbox_page(bot)
        booking = await bot.runtime.adapters.storage.get_booking_by_reference(
            reference, user_id=USER
        )
        assert booking is not None
        assert booking.status is BookingStatus.CONFIRMED
        departure = booking.itinerary.departure

        def offered(reply: Reply) -> list[str]:
            return [b.label for m in reply.messages for row in m.buttons for b in row]

        now[0] = departure - timedelta(minutes=1)
        await bot.say(USER, "/mybookings")
        assert "Cancel and refund" in offered(await bot.press(USER, reference))
        now[0] = departure + timedelta(seconds=1)  # the same day where it leaves
        await bot.say(USER, "/mybookings")
        after = await bot.press(USER, reference)
        assert "Cancel and refund" not in offered(after)
        assert "‹ My bookings" in offered(after)
        assert await _status(bot, reference) is BookingStatus.CONFIRMED


async def test_a_pending_payment_can_be_resumed_or_abandoned(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    await bot.say(USER, "/cancel")  # the flow ends; the booking waits for payment
    await bot.say(USER, "/mybookings")
    detail = await bot.press(USER, reference)
    assert "Awaiting payment" in detail.text
    resumed = await bot.press(USER, "Pay now")
    assert any(b.url for m in resumed.messages for row in m.buttons for b in row)
    await bot.say(USER, "/mybookings")
    await bot.press(USER, reference)
    abandoned = await bot.press(USER, "Abandon this booking")
    assert "nothing was charged" in abandoned.text
    assert await _status(bot, reference) is BookingStatus.CANCELLED  # counted as cancelled


async def test_someone_elses_booking_button_shows_nothing(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    stranger = USER + 1
    await bot.say(stranger, "/start")
    message_id = bot.sandbox.bot_messages(stranger)[-1].message_id
    reply = await bot.press_raw(stranger, message_id, f"!booking|{reference}")
    assert reply.notice == "Booking not found."
    assert not any(reference in m.text for m in reply.messages)
    reply = await bot.press_raw(stranger, message_id, f"!cancelyes|{reference}")
    assert await _status(bot, reference) is BookingStatus.AWAITING_PAYMENT


async def test_mydata_shows_what_is_stored_with_the_passport_masked(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reply = await bot.say(USER, "/mydata")
    assert "MARIA" in reply.text
    assert "CA1234567" not in reply.text
    assert "•••• 4567" in reply.text


async def test_mydata_is_a_readable_summary_with_the_json_as_a_file(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    reply = await bot.say(USER, "/mydata")
    summary = reply.messages[0]
    assert "{" not in summary.text  # no raw JSON in the chat
    assert "Saved travellers (1)" in summary.text
    assert reference in summary.text
    files = [m.document for m in reply.messages if m.document is not None]
    assert len(files) == 1
    assert files[0].file_name is not None
    assert files[0].file_name.endswith(".json")
    stored = json.loads(files[0].content)
    assert stored["bookings"][0]["reference"] == reference
    assert stored["saved_travellers"][0]["first_name"] == "MARIA"
    assert "CA1234567" not in files[0].content.decode()


async def test_deletedata_erases_the_profile_and_anonymises_bookings(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    ask = await bot.say(USER, "/deletedata")
    assert "Continue?" in ask.text
    await bot.press(USER, "Yes, erase my data")
    storage = bot.runtime.adapters.storage
    assert await storage.get_profile(USER) is None
    booking = await storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None  # kept for the accounts
    assert all("MARIA" not in t.first_name for t in booking.travellers)
    assert all("4567" not in t.passport_number for t in booking.travellers)


async def test_a_returning_traveller_reuses_saved_details(bot: BotKit) -> None:
    await to_payment(bot, USER)
    await bot.say(USER, "/cancel")
    await to_field(bot, USER)
    offer = bot.sandbox.bot_messages(USER)[-1]
    assert "Use MARIA SILVA" in [b.label for row in offer.buttons for b in row]
    reply = await bot.press(USER, "Use MARIA SILVA")
    assert (await bot.state(USER)).state == "book:review"
    assert "MARIA SILVA" in reply.text
    assert "•••• 4567" in reply.text
    profile = await bot.runtime.adapters.storage.get_profile(USER)
    assert profile is not None
    assert len(profile.saved_travellers) == 1  # the same person is saved once
