"""The production adapters together: the bot on Supabase storage and Stripe Checkout (the
stand-in, reached through STRIPE_API_BASE), driven through the sandbox Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.models import BookingStatus
from tests.standins.stripe import StripeStandin
from tests.support.botkit import BotKit, running_bot
from tests.support.supabase_stack import SupabaseStack
from tests.test_conversation_e2e import to_payment, to_review

USER = 8101


@pytest.fixture
async def stripe_api() -> AsyncIterator[StripeStandin]:
    async with StripeStandin() as standin:
        yield standin


@pytest.fixture
async def bot(
    tmp_path: Path, stripe_api: StripeStandin, supabase_stack: SupabaseStack
) -> AsyncIterator[BotKit]:
    await supabase_stack.reset()
    async with running_bot(
        tmp_path,
        supabase_url=supabase_stack.url,
        supabase_service_role_key=supabase_stack.service_key,
        data_encryption_keys=supabase_stack.data_key,
        stripe_secret_key=stripe_api.api_key,
        stripe_webhook_secret=stripe_api.webhook_secret,
        stripe_api_base=stripe_api.base_url,
    ) as kit:
        yield kit


async def _booking(bot: BotKit) -> tuple[str, str]:
    """(reference, checkout session id) of the chat's booking."""
    reference = (await bot.state(USER)).data["booking"]["reference"]
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.checkout_session_id is not None
    return reference, booking.checkout_session_id


def _confirmations(bot: BotKit) -> int:
    return sum("Booking confirmed" in m.text for m in bot.sandbox.bot_messages(USER))


async def test_checkout_session_carries_the_stored_amount_reference_and_expiry(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    await to_review(bot, USER)
    before_pay = datetime.now(UTC)
    await bot.press(USER, "Pay")
    reference, session_id = await _booking(bot)
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.AWAITING_PAYMENT
    session = stripe_api.sessions[session_id]
    assert session["amount_total"] == booking.amount.amount
    assert session["currency"] == booking.amount.currency.lower()
    assert session["client_reference_id"] == reference
    assert session["metadata"]["booking_id"] == booking.id
    expires = datetime.fromtimestamp(session["expires_at"], UTC)
    assert timedelta(minutes=29) < expires - before_pay < timedelta(minutes=32)
    link = bot.buttons(USER)[0]
    assert "Pay" in link[0]


async def test_twenty_concurrent_completed_events_confirm_once(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    await to_payment(bot, USER)
    reference, session_id = await _booking(bot)
    event = stripe_api.complete_session(session_id)
    statuses = await stripe_api.deliver(f"{bot.base_url}/stripe/webhook", event, times=20)
    assert set(statuses) == {200}
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.5)
    assert _confirmations(bot) == 1
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.CONFIRMED


async def test_a_wrong_signature_gets_400_and_changes_nothing(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    await to_payment(bot, USER)
    reference, session_id = await _booking(bot)
    event = stripe_api.complete_session(session_id)
    status = await stripe_api.deliver_bad_signature(f"{bot.base_url}/stripe/webhook", event)
    assert status == 400
    await asyncio.sleep(0.3)
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.AWAITING_PAYMENT
    assert _confirmations(bot) == 0


async def test_an_expired_link_is_renewed_on_request_and_paying_it_confirms(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    await to_payment(bot, USER)
    reference, session_id = await _booking(bot)
    expired = stripe_api.expire_session(session_id)
    assert await stripe_api.deliver(f"{bot.base_url}/stripe/webhook", expired) == [200]
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    told = bot.sandbox.bot_messages(USER)[-1]
    assert "expired" in told.text.lower(), told.text
    reply = await bot.press(USER, "new payment link")
    assert "Pay by" in reply.text or "held" in reply.text
    _, new_session = await _booking(bot)
    assert new_session != session_id
    paid = stripe_api.complete_session(new_session)
    assert await stripe_api.deliver(f"{bot.base_url}/stripe/webhook", paid) == [200]
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.CONFIRMED


async def test_paid_at_the_last_second_still_confirms(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    """The expiry event arrives first, then the payment completed at the deadline: money
    taken wins."""
    await to_payment(bot, USER)
    reference, session_id = await _booking(bot)
    completed = stripe_api.complete_session(session_id)
    expired = stripe_api.make_event(
        "checkout.session.expired", {**stripe_api.sessions[session_id], "status": "expired"}
    )
    url = f"{bot.base_url}/stripe/webhook"
    assert await stripe_api.deliver(url, expired) == [200]
    assert await stripe_api.deliver(url, completed) == [200]
    await bot.sandbox.wait_idle(USER, quiet=0.5)
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.CONFIRMED
    assert _confirmations(bot) == 1


async def test_double_tap_on_pay_makes_one_session(bot: BotKit, stripe_api: StripeStandin) -> None:
    await to_review(bot, USER)
    pay = next(b for b in bot.buttons(USER) if b[0].startswith("Pay"))
    assert pay[1] is not None
    first, second = await asyncio.gather(
        bot.sandbox.user_presses(USER, pay[2], pay[1]),
        bot.sandbox.user_presses(USER, pay[2], pay[1]),
    )
    await bot.sandbox.wait_for_reply(first, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.5)
    assert len(stripe_api.sessions) == 1
    bookings = await bot.runtime.adapters.storage.list_bookings(USER)
    assert len(bookings) == 1
    assert second.seq > first.seq


async def test_leaving_stripes_page_by_its_cancel_link_cancels_the_booking(
    bot: BotKit, stripe_api: StripeStandin
) -> None:
    """Stripe sends the traveller to cancel_url, a deep link back into the chat: the booking is
    cancelled (and counted so), its link closed, and nobody speaks of an expired link."""
    await to_payment(bot, USER)
    reference, session_id = await _booking(bot)
    cancel_url = stripe_api.sessions[session_id]["cancel_url"]
    assert cancel_url.endswith(f"?start=cancelled_{reference}")

    reply = await bot.say(USER, f"/start cancelled_{reference}")

    assert f"Booking {reference} is cancelled" in reply.text
    assert "nothing was charged" in reply.text
    assert "expired" not in reply.text.lower()
    storage = bot.runtime.adapters.storage
    booking = await storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.CANCELLED
    assert stripe_api.sessions[session_id]["status"] == "expired"  # no longer payable
    [expired] = stripe_api.events_of("checkout.session.expired")
    assert await stripe_api.deliver(f"{bot.base_url}/stripe/webhook", expired) == [200]
    await bot.sandbox.wait_idle(USER, quiet=0.5)
    assert not any("expired" in m.text.lower() for m in bot.sandbox.bot_messages(USER))
    stats = await storage.stats(datetime.now(UTC) - timedelta(hours=1))
    assert stats.bookings_by_status[BookingStatus.CANCELLED] == 1
    assert stats.bookings_by_status[BookingStatus.EXPIRED] == 0
