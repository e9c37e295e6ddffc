"""Admin commands through the real bot: sandbox Bot API → PTB Application → engine → services.

The command menu published to admins only, the views, /ticketed's confirmation reaching the
traveller, blocking (an old button's spinner stopped too). Who may use the admin commands, their
usage lines and the /admin menu's steps are tested at the engine seam (tests/test_seam_admin.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from conversations.flows.admin import BLOCKED_NOTICE
from handlers.setup import publish_commands
from services.models import (
    BookingStatus,
    SearchLogEntry,
    utcnow,
)
from services.money import Money
from tests.test_admin_harness import Bot, make_booking, running_bot

ADMIN = 7001
OTHER_ADMIN = 7002
TRAVELLER = 7101
S = BookingStatus


@pytest.fixture(scope="module")
async def bot() -> AsyncIterator[Bot]:
    async with running_bot((ADMIN, OTHER_ADMIN)) as running:
        await running.user(ADMIN, "Ada", "ada_admin")
        await running.user(OTHER_ADMIN, "Olu", "olu_admin")
        await running.user(TRAVELLER, "Tom", "tom_traveller")
        for user_id in (ADMIN, OTHER_ADMIN, TRAVELLER):
            await running.say(user_id, "/start")
        yield running


# the command menus ------------------------------------------------------------------------------


async def test_admin_commands_are_published_to_admins_only(bot: Bot) -> None:
    await publish_commands(bot.runtime.application.bot, frozenset({ADMIN, OTHER_ADMIN}))

    def names(chat_id: int) -> list[str]:
        return [command["command"] for command in bot.sandbox.commands_for(chat_id)]

    travellers = [
        "start",
        "mybookings",
        "alerts",
        "cancel",
        "mydata",
        "reminders",
        "deletedata",
        "help",
    ]
    admin_only = [
        *("admin", "stats", "booking", "user", "refund", "ticketed"),
        *("block", "unblock", "broadcast", "broadcast_cancel"),
    ]
    assert names(TRAVELLER) == travellers
    assert names(ADMIN) == travellers + admin_only
    assert names(OTHER_ADMIN) == travellers + admin_only


async def test_help_is_the_same_for_an_admin_and_a_traveller(bot: Bot) -> None:
    # /help lists the traveller commands to everyone: an admin finds theirs in the menu and in
    # /admin, and a traveller's /help never hints that admin commands exist.
    traveller = await bot.say(TRAVELLER, "/help")
    admin = await bot.say(ADMIN, "/help")
    assert traveller == admin
    assert len(traveller) == 1
    assert traveller[0].startswith("I find and book flights.")
    assert "/mybookings — your bookings, payments and cancellations" in traveller[0]
    assert "/refund" not in traveller[0]
    assert "/admin" not in traveller[0]


async def test_a_refund_amount_finer_than_the_currency_is_refused(bot: Bot) -> None:
    booking = await make_booking(bot.storage, TRAVELLER, S.CONFIRMED)
    answer = await bot.say(ADMIN, f"/refund {booking.reference} 12.345")
    assert answer == ["EUR takes at most 2 decimal places: 12.345 can't be refunded."]
    yen = await make_booking(
        bot.storage, TRAVELLER, S.CONFIRMED, Money(amount=12_000, currency="JPY")
    )
    answer = await bot.say(ADMIN, f"/refund {yen.reference} 100.5")
    assert answer == ["JPY takes whole amounts: 100.5 can't be refunded."]


# /stats ---------------------------------------------------------------------------------------


async def test_stats_counts_bookings_revenue_funnel_routes_and_new_users() -> None:
    async with running_bot((ADMIN,)) as fresh:
        await fresh.user(ADMIN, "Ada")
        storage = fresh.storage
        for user_id in (8001, 8002, 8003):
            await storage.upsert_profile(user_id, first_name="New")
        await make_booking(storage, 8001, S.CONFIRMED, Money(amount=89_00, currency="EUR"))
        await make_booking(storage, 8002, S.PAID, Money(amount=10_50, currency="EUR"))
        await make_booking(storage, 8003, S.CONFIRMED, Money(amount=5_000, currency="USD"))
        await make_booking(storage, 8001, S.AWAITING_PAYMENT)
        await make_booking(storage, 8002, S.EXPIRED)
        await make_booking(storage, 8003, S.CANCELLED, Money(amount=1_000, currency="GBP"))
        departure = utcnow().date() + timedelta(days=30)
        for origin, destination, chosen, reviewed in [
            ("LIS", "NRT", True, True),
            ("LIS", "NRT", True, False),
            ("LIS", "NRT", False, False),
            ("BER", "FCO", True, True),
            ("BER", "FCO", False, False),
            ("MAD", "JFK", False, False),
        ]:
            search_id = await storage.log_search(
                SearchLogEntry(
                    user_id=8001, origin=origin, destination=destination, departure=departure
                )
            )
            if chosen:
                await storage.mark_search_stage(search_id, "chosen")
            if reviewed:
                await storage.mark_search_stage(search_id, "reviewed")

        [text] = await fresh.say(ADMIN, "/stats 7d")

        assert text.startswith("📊 Stats, last 7 days")
        assert "Bookings: 6" in text
        for line in (
            "Confirmed: 2",
            "Paid, ticketing: 1",
            "Awaiting payment: 1",
            "Payment link expired: 1",
            "Cancelled: 1",
        ):
            assert line in text
        # summed in minor units per currency; cancelled money is not revenue
        assert "Revenue (paid and confirmed): €99.50, $50.00" in text
        assert "Searches: 6" in text
        assert "Funnel: search 6 → flight chosen 3 (50%) → reviewed 2 (33%) → paid 4 (67%)" in text
        assert "1. LIS → NRT: 3" in text
        assert "2. BER → FCO: 2" in text
        assert "New users: 3" in text
        [audit] = await fresh.audit("stats")
        assert (audit.admin_id, audit.target) == (ADMIN, "7d")

        [today] = await fresh.say(ADMIN, "/stats")
        assert today.startswith("📊 Stats, today")
        [month] = await fresh.say(ADMIN, "/stats 30d")
        assert month.startswith("📊 Stats, last 30 days")


# /ticketed ------------------------------------------------------------------------------------


async def test_ticketed_confirms_a_paid_booking_and_sends_the_confirmation(bot: Bot) -> None:
    booking = await make_booking(bot.storage, TRAVELLER, S.PAID)

    [answer] = await bot.say(ADMIN, f"/ticketed {booking.reference.lower()}")

    assert answer.startswith(f"✅ Booking {booking.reference} (")
    assert "The traveller has been sent the confirmation." in answer
    confirmed = await bot.storage.get_booking(booking.id)
    assert confirmed is not None
    assert confirmed.status is S.CONFIRMED
    *_, confirmation, calendar = bot.sandbox.bot_messages(TRAVELLER)
    assert confirmation.text.startswith("✅ Booking confirmed")
    assert booking.reference in confirmation.text
    assert calendar.document is not None
    assert calendar.document.file_name == f"{booking.reference}.ics"
    [audit] = [a for a in await bot.audit("ticketed") if a.target == booking.reference]
    assert audit.admin_id == ADMIN


@pytest.mark.parametrize("status", [S.AWAITING_PAYMENT, S.CONFIRMED, S.CANCELLED])
async def test_ticketed_refuses_a_booking_not_waiting_for_a_ticket(
    bot: Bot, status: BookingStatus
) -> None:
    booking = await make_booking(bot.storage, TRAVELLER, status)
    told_before = bot.last(TRAVELLER).message_id

    answer = await bot.say(ADMIN, f"/ticketed {booking.reference}")

    assert answer == [
        f"❌ Booking {booking.reference} is not waiting for a ticket (status: {status.label})."
    ]
    unchanged = await bot.storage.get_booking(booking.id)
    assert unchanged is not None
    assert unchanged.status is status
    assert bot.last(TRAVELLER).message_id == told_before
    assert [a for a in await bot.audit("ticketed_refused") if a.target == booking.reference]


async def test_ticketed_for_a_reference_that_does_not_exist(bot: Bot) -> None:
    [answer] = await bot.say(ADMIN, "/ticketed ZZZZ33")
    assert answer.startswith("❌ I can't find a booking with reference ZZZZ33")


# /booking and /user ----------------------------------------------------------------------------


async def test_booking_shows_payment_ids_events_and_masked_documents(bot: Bot) -> None:
    booking = await make_booking(bot.storage, TRAVELLER, S.CONFIRMED, passport="XK9876543")
    await bot.storage.record_payment_event(
        "evt_test_completed_1", "checkout.session.completed", booking.id
    )
    await bot.storage.record_payment_event("evt_test_refund_2", "refund.created", booking.id)

    [text] = await bot.say(ADMIN, f"/booking {booking.reference.lower()}")

    assert f"Booking {booking.reference} · Confirmed" in text
    assert f"pi_test_{booking.reference}" in text
    assert "evt_test_completed_1" in text
    assert "checkout.session.completed" in text
    assert "evt_test_refund_2" in text
    assert "•••• 6543" in text
    assert "XK9876543" not in text
    assert "ana.silva@example.com" not in text
    assert "a•••@example.com" in text
    assert "912 345" not in text
    assert f"User: {TRAVELLER} @tom_traveller (Tom)" in text
    assert "€89.00 (8900 minor units EUR)" in text
    [audit] = [a for a in await bot.audit("view_booking") if a.target == booking.reference]
    assert audit.details == {"found": True}


async def test_booking_that_does_not_exist(bot: Bot) -> None:
    assert await bot.say(ADMIN, "/booking ZZZZ22") == ["No booking with reference ZZZZ22."]
    [audit] = [a for a in await bot.audit("view_booking") if a.target == "ZZZZ22"]
    assert audit.details == {"found": False}


async def test_user_by_id_and_by_username(bot: Bot) -> None:
    booking = await make_booking(bot.storage, TRAVELLER, S.AWAITING_PAYMENT)
    [by_id] = await bot.say(ADMIN, f"/user {TRAVELLER}")
    [by_name] = await bot.say(ADMIN, "/user @TOM_traveller")
    assert by_id == by_name
    assert f"User {TRAVELLER} @tom_traveller (Tom)" in by_id
    assert "Blocked: no" in by_id
    assert booking.reference in by_id
    assert "Awaiting payment" in by_id
    assert await bot.say(ADMIN, "/user 99999") == [
        "No user 99999: they have never talked to the bot, or erased their data."
    ]
    assert await bot.say(ADMIN, "/user @nobody_here") == [
        "No user @nobody_here: they have never talked to the bot, or erased their data."
    ]
    targets = [a.target for a in await bot.audit("view_user")]
    assert str(TRAVELLER) in targets
    assert "99999" in targets


# /block and /unblock -----------------------------------------------------------------------------


async def test_blocked_user_gets_one_notice_then_silence_and_links_stay_open(bot: Bot) -> None:
    victim = await bot.user(7201, "Vic", "vic_user")
    await bot.say(victim, "/start")  # mid-conversation: asked where from
    link = await make_booking(bot.storage, victim, S.AWAITING_PAYMENT)

    [answer] = await bot.say(ADMIN, f"/block {victim}")

    assert answer.startswith(f"⛔ {victim} @vic_user (Vic) is blocked.")
    assert "1 open payment link(s)" in answer
    assert link.reference in answer
    assert "not cancelled" in answer

    assert await bot.say(victim, "Lisbon") == [BLOCKED_NOTICE]
    for text in ("Lisbon", "/start", "/help", "/mybookings", "/admin", "/cancel"):
        assert await bot.say_silently(victim, text) == [], text
    # an old button does nothing either, but its spinner is stopped
    action = await bot.sandbox.user_presses_label(victim, "My bookings")
    await bot.sandbox.wait_idle(victim, quiet=0.5)
    assert bot.sandbox.messages_since(victim, action.seq) == []
    assert bot.sandbox.all_callbacks_answered()

    still = await bot.storage.get_booking(link.id)
    assert still is not None
    assert still.status is S.AWAITING_PAYMENT  # not cancelled silently
    [profile_view] = await bot.say(ADMIN, f"/user {victim}")
    assert "Blocked: yes" in profile_view

    [again] = await bot.say(ADMIN, "/block @vic_user")
    assert again.startswith(f"{victim} @vic_user (Vic) was already blocked.")

    assert await bot.say(ADMIN, f"/unblock {victim}") == [
        f"✅ {victim} @vic_user (Vic) is unblocked."
    ]
    greeting = await bot.say(victim, "/start")
    assert greeting[0].startswith("Hi Vic!")

    blocks = [a for a in await bot.audit("block") if a.target == str(victim)]
    assert blocks[-1].admin_id == ADMIN
    assert blocks[-1].details == {"changed": True, "open_payment_links": [link.reference]}
    assert blocks[0].details["changed"] is False
    [unblock] = [a for a in await bot.audit("unblock") if a.target == str(victim)]
    assert unblock.details["changed"] is True


async def test_a_block_holds_without_a_conversation_record(bot: Bot) -> None:
    """Blocked elsewhere (another worker, state store restarted): the profile decides."""
    victim = await bot.user(7202, "Wyn")
    await bot.say(victim, "/start")
    await bot.say(victim, "/cancel")  # no conversation record left
    assert await bot.storage.set_blocked(victim, True)

    assert await bot.say(victim, "/start") == [BLOCKED_NOTICE]
    assert await bot.say_silently(victim, "/start") == []

    await bot.storage.set_blocked(victim, False)  # unblocked behind the chat's back
    assert await bot.say(victim, "hello") == [
        "You can use the bot again. /start to search for flights."
    ]


async def test_admins_cannot_be_blocked_and_unknown_users_are_named(bot: Bot) -> None:
    assert await bot.say(ADMIN, f"/block {OTHER_ADMIN}") == [
        "Admins can't be blocked: remove them from ADMIN_USER_IDS."
    ]
    assert await bot.say(ADMIN, "/block 123456") == [
        "No user 123456: they have never talked to the bot, or erased their data."
    ]
    assert await bot.say(ADMIN, "/unblock @ghost_user") == [
        "No user @ghost_user: they have never talked to the bot, or erased their data."
    ]
    answer = await bot.say(OTHER_ADMIN, "/stats")  # the other admin is unaffected
    assert answer[0].startswith("📊 Stats, today")
