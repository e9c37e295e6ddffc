"""/refund end to end: the traveller books and pays through the Stripe stand-in (signed
webhook to the bot's own route), the admin refunds from the chat, Stripe's follow-up events
arrive; the booking ends ``refunded`` and the traveller is told exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.models import Booking, BookingStatus, Itinerary, SearchQuery, today_anywhere
from services.money import Money
from services.storage.base import Storage
from tests.standins.stripe import StripeStandin
from tests.test_admin_harness import Bot, make_booking, running_bot, traveller

ADMIN = 7501
S = BookingStatus


@pytest.fixture(scope="module")
async def stripe_api() -> AsyncIterator[StripeStandin]:
    async with StripeStandin() as standin:
        yield standin


@pytest.fixture(scope="module")
async def bot(stripe_api: StripeStandin) -> AsyncIterator[Bot]:
    async with running_bot(
        (ADMIN,),
        stripe_secret_key=stripe_api.api_key,
        stripe_webhook_secret=stripe_api.webhook_secret,
        stripe_api_base=stripe_api.base_url,
    ) as running:
        await running.user(ADMIN, "Ada", "ada_admin")
        yield running


async def demo_fare(bot: Bot) -> Itinerary:
    places = bot.runtime.places
    query = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("NRT"),
        departure=today_anywhere() + timedelta(days=40),
    )
    return (await bot.runtime.adapters.provider.search(query))[0]


async def paid_booking(bot: Bot, stripe_api: StripeStandin, user_id: int) -> Booking:
    """Booked and paid the way a traveller does: checkout at Stripe, then Stripe's webhook."""
    await bot.user(user_id, "Ana")
    await bot.say(user_id, "/start")
    booking, session = await bot.runtime.bookings.start_checkout(
        user_id, await demo_fare(bot), (traveller(),)
    )
    event = stripe_api.complete_session(session.id)
    assert await stripe_api.deliver(bot.webhook_url, event) == [200]
    await bot.sandbox.wait_for_messages(user_id, 1, timeout=10)
    confirmed = await bot.storage.get_booking(booking.id)
    assert confirmed is not None
    assert confirmed.status is S.CONFIRMED
    return confirmed


def told(bot: Bot, user_id: int, text: str) -> list[str]:
    return [m.text for m in bot.sandbox.bot_messages(user_id) if text in m.text]


async def status_of(storage: Storage, booking: Booking) -> BookingStatus:
    found = await storage.get_booking(booking.id)
    assert found is not None
    return found.status


async def test_full_refund_ends_refunded_and_the_traveller_is_told_once(
    bot: Bot, stripe_api: StripeStandin
) -> None:
    booking = await paid_booking(bot, stripe_api, 7601)
    total = booking.amount.format()

    [question] = await bot.say(ADMIN, f"/refund {booking.reference} customer asked")
    assert f"Refund booking {booking.reference}" in question
    assert f"the full {total}: the booking ends refunded" in question
    assert "Reason: customer asked" in question

    [done] = await bot.press(ADMIN, f"Refund {total}")
    assert done == (
        f"✅ Booking {booking.reference} refunded in full. Status: Refunded. "
        "The traveller has been told."
    )
    assert await status_of(bot.storage, booking) is S.REFUNDED
    [refund] = stripe_api.refunds.values()
    assert refund["amount"] == booking.amount.amount
    assert refund["payment_intent"] == booking.payment_intent_id
    assert refund["metadata"]["note"] == "customer asked"

    # Stripe follows up with its own events; they change nothing and tell nobody again.
    follow_ups = [
        e for e in stripe_api.events if e["type"] in ("refund.created", "charge.refunded")
    ]
    assert len(follow_ups) == 2
    assert await stripe_api.deliver_in_order(bot.webhook_url, follow_ups) == [200, 200]
    await bot.sandbox.wait_idle(7601, quiet=0.5)
    assert len(told(bot, 7601, "refunded")) == 1
    assert await status_of(bot.storage, booking) is S.REFUNDED

    # pressing again (an old button) or asking again refunds nothing more
    assert await bot.say(ADMIN, f"/refund {booking.reference}") == [
        f"Nothing to refund on booking {booking.reference}: it has already been refunded "
        f"({booking.amount.format()})."
    ]
    assert len(stripe_api.refunds) == 1
    [audit] = [a for a in await bot.audit("refund") if a.target == booking.reference]
    assert audit.admin_id == ADMIN
    assert audit.details["full"] is True
    assert audit.details["amount"] == booking.amount.amount


async def test_partial_refund_keeps_the_booking_and_tells_the_amount(
    bot: Bot, stripe_api: StripeStandin
) -> None:
    booking = await paid_booking(bot, stripe_api, 7602)
    before = len(stripe_api.refunds)

    [question] = await bot.say(ADMIN, f"/refund {booking.reference} 25,50 seat not available")
    assert "€25.50 of" in question
    assert "partial: the booking stays confirmed" in question
    [done] = await bot.press(ADMIN, "Refund €25.50")
    assert done.startswith(f"✅ Refunded €25.50 on booking {booking.reference}. Status: Confirmed.")

    assert await status_of(bot.storage, booking) is S.CONFIRMED
    assert len(stripe_api.refunds) == before + 1
    newest = list(stripe_api.refunds.values())[-1]
    assert newest["amount"] == 2550
    [message] = told(bot, 7602, "partial refund")
    assert "€25.50" in message

    # then the rest: the booking ends refunded, Stripe refunds what was left
    [question] = await bot.say(ADMIN, f"/refund {booking.reference}")
    assert "whatever is left of" in question
    assert "after 1 earlier refund(s)" in question
    [done] = await bot.press(ADMIN, "Refund the rest")
    assert done.startswith(f"✅ Booking {booking.reference} refunded in full. Status: Refunded.")
    assert await status_of(bot.storage, booking) is S.REFUNDED
    rest = list(stripe_api.refunds.values())[-1]
    assert rest["amount"] == booking.amount.amount - 2550
    assert len(told(bot, 7602, "cancelled and refunded")) == 1


async def test_nothing_to_refund_and_too_much_are_refused_clearly(bot: Bot) -> None:
    unpaid = await make_booking(bot.storage, 7603, S.AWAITING_PAYMENT)
    assert await bot.say(ADMIN, f"/refund {unpaid.reference}") == [
        f"Nothing to refund on booking {unpaid.reference}: no payment was taken "
        "(status: Awaiting payment)."
    ]
    expired = await make_booking(bot.storage, 7603, S.EXPIRED)
    assert await bot.say(ADMIN, f"/refund {expired.reference}") == [
        f"Nothing to refund on booking {expired.reference}: no payment was taken "
        "(status: Payment link expired)."
    ]
    paid = await make_booking(bot.storage, 7603, S.CONFIRMED)
    assert await bot.say(ADMIN, f"/refund {paid.reference} 500") == [
        f"€500.00 is more than booking {paid.reference} was paid (€89.00)."
    ]
    assert await bot.say(ADMIN, "/refund QQQQ22") == ["No booking with reference QQQQ22."]
    refused = [a.target for a in await bot.audit("refund_refused")]
    assert {unpaid.reference, expired.reference, paid.reference} <= set(refused)


async def test_declining_the_confirmation_refunds_nothing(
    bot: Bot, stripe_api: StripeStandin
) -> None:
    booking = await paid_booking(bot, stripe_api, 7604)
    before = len(stripe_api.refunds)
    await bot.say(ADMIN, f"/refund {booking.reference}")
    assert await bot.press(ADMIN, "Don't refund") == ["Not refunded."]
    assert len(stripe_api.refunds) == before
    assert await status_of(bot.storage, booking) is S.CONFIRMED
    assert told(bot, 7604, "refund") == []
    [declined] = [a for a in await bot.audit("refund_declined") if a.target == booking.reference]
    assert declined.admin_id == ADMIN


async def test_refunds_in_parts_stop_at_what_was_paid(bot: Bot, stripe_api: StripeStandin) -> None:
    """€10, then €40, then "the rest" of a booking must not give back more than it cost."""
    booking = await paid_booking(bot, stripe_api, 7605)
    paid = booking.amount
    too_much = Money(amount=paid.amount - 500, currency=paid.currency)
    left = Money(amount=paid.amount - 1000, currency=paid.currency)

    await bot.say(ADMIN, f"/refund {booking.reference} 10")
    await bot.press(ADMIN, "Refund €10.00")
    amount_text = f"{too_much.amount // 100},{too_much.amount % 100:02d}"
    assert await bot.say(ADMIN, f"/refund {booking.reference} {amount_text}") == [
        f"{too_much.format()} is more than is left to refund on booking {booking.reference}: "
        f"{left.format()} of {paid.format()} (€10.00 already refunded)."
    ]
    [question] = await bot.say(ADMIN, f"/refund {booking.reference}")
    assert f"after 1 earlier refund(s), {left.format()}" in question
    [done] = await bot.press(ADMIN, "Refund the rest")
    assert done.startswith(f"✅ Booking {booking.reference} refunded in full.")

    mine = [
        r for r in stripe_api.refunds.values() if r["payment_intent"] == booking.payment_intent_id
    ]
    assert sum(r["amount"] for r in mine) == paid.amount
    assert await bot.say(ADMIN, f"/refund {booking.reference} 1") == [
        f"Nothing to refund on booking {booking.reference}: it has already been refunded "
        f"({paid.format()})."
    ]
