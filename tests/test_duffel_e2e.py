"""Booking with FLIGHT_PROVIDER=duffel against the local Duffel stand-in, end to end: what a
traveller sees from search to the airline's booking reference, and each way the airline's side
can go wrong (an offer expired at Pay, sold out, re-priced between hold and pay, cancelled by the
airline after ticketing), plus a cancellation refunding exactly what the airline refunds."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from services.flights.duffel import DuffelProvider
from services.models import Booking, BookingStatus
from tests.standins.duffel import TOKEN, WEBHOOK_SECRET, DuffelStandIn
from tests.support.botkit import BotKit, Reply, future_day, running_bot
from tests.test_cli import Console, _env, _free_port
from tests.test_conversation_e2e import to_results

USER = 7101
TRAVELLER = ["Maria Silva", "17.05.1990"]  # the name in one answer; the birth date accepts it
TRAVELLER_REST = ["Portugal", "CA1234567", "2031-08-20", "maria@example.com"]
PHONE = "+351 912 345 678"


@pytest.fixture
async def standin() -> AsyncIterator[DuffelStandIn]:
    server = DuffelStandIn()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def bot(tmp_path: Path, standin: DuffelStandIn) -> AsyncIterator[BotKit]:
    provider = DuffelProvider(TOKEN, base_url=standin.base_url, backoff=0.01, max_backoff=0.05)
    async with running_bot(
        tmp_path, provider=provider, admin_ids="7999", duffel_webhook_secret=WEBHOOK_SECRET
    ) as kit:
        standin.webhook_url = f"{kit.base_url}/duffel/webhook"
        yield kit


async def to_detail(bot: BotKit, option: str = "1") -> Reply:
    """A result's number: its detail, the price checked with Duffel and the first question."""
    await to_results(bot, USER)
    return await bot.press(USER, option)


async def to_review(bot: BotKit, option: str = "1") -> None:
    await to_detail(bot, option)
    for answer in TRAVELLER:
        await bot.say(USER, answer)
    await bot.press(USER, "Female")
    for answer in TRAVELLER_REST:
        await bot.say(USER, answer)
    await bot.say(USER, PHONE)  # typed, not skipped: the airline gets it


async def pay_on_sandbox_page(bot: BotKit) -> None:
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


async def reference_of(bot: BotKit) -> str:
    reference: str = (await bot.state(USER)).data["booking"]["reference"]
    return reference


async def booking(bot: BotKit, reference: str) -> Booking:
    found = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert found is not None
    return found


def chat_text(bot: BotKit) -> str:
    return "\n".join(m.text for m in bot.sandbox.bot_messages(USER))


async def test_search_to_confirmation_with_the_airline_booking_reference(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    paying = await bot.press(USER, "Pay")
    order = standin.only_order()
    assert order["type"] == "hold"  # made when Pay was pressed, before any money
    assert order["payment_status"]["awaiting_payment"]
    assert "holding your seats" in paying.text
    reference = await reference_of(bot)
    held = await booking(bot, reference)
    assert held.provider_order_id == order["id"]
    assert held.payment_deadline is not None
    assert standin.payments == []

    await pay_on_sandbox_page(bot)

    confirmed = await booking(bot, reference)
    assert confirmed.status is BookingStatus.CONFIRMED
    assert standin.payments[0]["amount"] == order["total_amount"]  # paid from the balance
    pnr = order["booking_reference"]
    assert confirmed.airline_reference == pnr
    assert confirmed.ticket_numbers == tuple(d["unique_identifier"] for d in order["documents"])
    assert f"Airline booking reference: {pnr}" in chat_text(bot)
    await bot.say(USER, "/mybookings")
    detail = await bot.press(USER, reference)
    assert pnr in detail.text
    assert confirmed.ticket_numbers[0] in detail.text


async def test_an_offer_expired_by_pay_time_charges_nothing(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    for offer_id in standin.offers:
        standin.expire_offer(offer_id)
    reply = await bot.press(USER, "Pay")
    assert "sold out or expired" in reply.text
    assert "Nothing was charged" in reply.text
    assert standin.orders == {}
    assert not any(b.url for m in reply.messages for row in m.buttons for b in row)
    assert (
        await bot.runtime.adapters.storage.list_bookings_by_status(BookingStatus.AWAITING_PAYMENT)
        == []
    )


async def test_a_sold_out_offer_is_said_before_the_travellers_details(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_results(bot, USER)
    for offer_id in standin.offers:
        standin.sell_out(offer_id)
    reply = await bot.press(USER, "1")  # the price check runs before the first question
    assert "sold out" in reply.text
    assert "Full name" not in reply.text
    assert (await bot.state(USER)).state == "search:results"
    assert standin.orders == {}


async def test_the_detail_says_the_duffel_fares_refund_and_change_rules_before_any_question(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    standin.refund_penalty = Decimal(30)
    basic = await to_detail(bot, "1")
    assert "Refund: not refundable" in basic.text
    assert "Changes: allowed, fee €25.00 for the booking" in basic.text
    assert "the fare does not say" not in basic.text
    await bot.press(USER, "Back to results")
    flexible = await bot.press(USER, "3")
    assert "Refund: refundable, fee €30.00 for the booking" in flexible.text
    assert "Full name" in flexible.text


async def test_a_price_change_between_hold_and_pay_is_refunded_in_full(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    order = standin.only_order()
    dearer = Decimal(order["total_amount"]) + 40
    standin.change_order_price(order["id"], str(dearer))

    await pay_on_sandbox_page(bot)

    assert standin.payments == []  # the dearer order was never bought
    assert order["cancelled_at"] is not None  # and its seats went back
    ended = await booking(bot, reference)
    assert ended.status is BookingStatus.REFUNDED
    assert ended.ticket_numbers == ()
    assert "refunded" in chat_text(bot).lower()


async def test_an_airline_cancellation_refunds_once_and_shows_in_the_admins_view(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    await pay_on_sandbox_page(bot)
    order = standin.only_order()

    await standin.airline_cancels(order["id"], times=2)  # at least once: delivered twice
    await bot.sandbox.wait_idle(USER, quiet=0.3)

    assert [status for _, status in standin.deliveries] == [200, 200]
    assert (await booking(bot, reference)).status is BookingStatus.REFUNDED
    told = [m for m in bot.sandbox.bot_messages(USER) if "airline cancelled" in m.text]
    assert len(told) == 1
    assert "on its way back" in told[0].text
    admin = await bot.say(7999, f"/booking {reference}")
    assert "duffel.order.airline_initiated_change_detected" in admin.text


async def test_a_schedule_change_is_told_to_the_traveller(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    await bot.press(USER, "Pay")
    await pay_on_sandbox_page(bot)
    order = standin.only_order()
    await standin.schedule_change(order["id"], minutes=95)
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    told = [m for m in bot.sandbox.bot_messages(USER) if "Schedule change" in m.text]
    assert len(told) == 1
    assert "New schedule" in told[0].text


async def test_a_forged_webhook_is_refused_before_it_is_read(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Duffel-Signature": "t=1,v1=00"}):
            async with http.post(
                f"{bot.base_url}/duffel/webhook", data=b"{not json", headers=headers
            ) as response:
                assert response.status == 401
        signed = {"X-Duffel-Signature": _sign(b"[]")}
        async with http.post(f"{bot.base_url}/duffel/webhook", data=b"[]", headers=signed) as r:
            assert r.status == 400


def _sign(body: bytes) -> str:
    from services.flights.duffel import sign

    return sign(WEBHOOK_SECRET, body, 1_700_000_000)


async def test_a_cancel_refunds_exactly_what_the_airline_refunds(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    standin.refund_penalty = Decimal(30)
    await to_review(bot, option="3")  # the flexible fare: refundable, less a penalty
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    await pay_on_sandbox_page(bot)
    paid = await booking(bot, reference)
    assert paid.status is BookingStatus.CONFIRMED

    await bot.say(USER, "/mybookings")
    await bot.press(USER, reference)
    ask = await bot.press(USER, "Cancel and refund")
    assert "keeps €30.00" in ask.text
    assert standin.only_order()["cancelled_at"] is None  # asking changes nothing
    before = len(bot.sandbox.bot_messages(USER))
    await bot.press(USER, "Yes, cancel and refund")
    await bot.sandbox.wait_idle(USER, quiet=0.3)

    quote = list(standin.cancellations.values())[-1]
    assert quote["confirmed_at"] is not None
    refund = Decimal(quote["refund_amount"])
    assert refund == Decimal(standin.only_order()["total_amount"]) - 30
    [told] = bot.sandbox.bot_messages(USER)[before:]  # one answer, not a notice besides
    assert f"Booking {reference} is cancelled." in told.text
    assert f"€{refund:,.2f} is on its way back" in told.text
    assert (await booking(bot, reference)).status is BookingStatus.REFUNDED


async def test_a_non_refundable_fare_says_so_before_the_confirm(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot, option="1")  # the basic fare: non-refundable
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    await pay_on_sandbox_page(bot)
    await bot.say(USER, "/mybookings")
    await bot.press(USER, reference)
    ask = await bot.press(USER, "Cancel and refund")
    assert "non-refundable" in ask.text
    before = len(bot.sandbox.bot_messages(USER))
    await bot.press(USER, "Yes, cancel anyway")
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    assert (await booking(bot, reference)).status is BookingStatus.CANCELLED
    assert standin.only_order()["cancelled_at"] is not None
    [told] = bot.sandbox.bot_messages(USER)[before:]  # one answer, not a notice besides
    assert f"Booking {reference} is cancelled." in told.text
    assert "nothing is refunded" in told.text


async def test_an_admin_refund_cancels_with_the_airline_and_refunds_what_it_refunds(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    standin.refund_penalty = Decimal(30)
    await to_review(bot, option="3")
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    await pay_on_sandbox_page(bot)
    order = standin.only_order()

    view = await bot.say(7999, f"/booking {reference}")
    assert order["id"] in view.text
    assert order["booking_reference"] in view.text
    await bot.say(7999, f"/refund {reference} customer asked")
    done = await bot.press(7999, "Refund")
    await bot.sandbox.wait_idle(USER, quiet=0.3)

    assert "cancelled with the airline" in done.text
    assert order["cancelled_at"] is not None
    refund = Decimal(order["total_amount"]) - 30
    assert f"€{refund:,.2f}" in bot.sandbox.bot_messages(USER)[-1].text
    assert (await booking(bot, reference)).status is BookingStatus.CANCELLED


async def test_a_fare_that_cannot_be_held_keeps_the_link_within_the_offers_life(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    standin.holdable = False
    standin.offer_ttl = timedelta(minutes=40)
    await to_review(bot)
    paying = await bot.press(USER, "Pay")
    assert "confirmed only when the ticket is issued" in paying.text
    assert standin.orders == {}  # Duffel cannot hold it: the order is bought after payment
    held = await booking(bot, await reference_of(bot))
    assert held.itinerary.fare_expires_at is not None
    assert held.payment_deadline is not None
    assert held.payment_deadline <= held.itinerary.fare_expires_at
    await pay_on_sandbox_page(bot)
    assert standin.only_order()["type"] == "instant"
    assert (await booking(bot, held.reference)).status is BookingStatus.CONFIRMED


async def test_a_fare_expiring_too_soon_to_pay_is_refused(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    standin.holdable = False
    standin.offer_ttl = timedelta(minutes=12)
    await to_review(bot)
    reply = await bot.press(USER, "Pay")
    assert "too soon to pay safely" in reply.text
    assert not any(b.url for m in reply.messages for row in m.buttons for b in row)


async def test_the_link_never_outlives_the_airlines_hold(
    tmp_path: Path, standin: DuffelStandIn
) -> None:
    # Links may last two hours here, but the airline holds the seats for only 40 minutes.
    standin.hold_for = timedelta(minutes=40)
    provider = DuffelProvider(TOKEN, base_url=standin.base_url)
    async with running_bot(tmp_path, provider=provider, payment_window_minutes=120) as bot:
        await to_review(bot)
        await bot.press(USER, "Pay")
        order = standin.only_order()
        held = await booking(bot, await reference_of(bot))
    hold_ends = datetime.fromisoformat(order["payment_status"]["payment_required_by"])
    assert held.payment_deadline is not None
    assert held.payment_deadline < hold_ends
    assert held.payment_deadline - held.created_at < timedelta(minutes=45)


async def test_abandoning_a_payment_gives_the_held_seats_back(
    bot: BotKit, standin: DuffelStandIn
) -> None:
    await to_review(bot)
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    order = standin.only_order()
    await bot.say(USER, "/mybookings")
    await bot.press(USER, reference)
    await bot.press(USER, "Abandon this booking")
    assert order["cancelled_at"] is not None
    assert (await booking(bot, reference)).status is BookingStatus.CANCELLED


@pytest.mark.timeout(120)
async def test_the_console_books_with_duffel_against_the_standin(
    tmp_path: Path, standin: DuffelStandIn
) -> None:
    """``travelbot console`` with FLIGHT_PROVIDER=duffel: search to a confirmation carrying
    the airline's booking reference."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        "--user-id",
        "4242",
        cwd=tmp_path,
        env=_env(
            PORT=str(_free_port()),
            FLIGHT_PROVIDER="duffel",
            DUFFEL_ACCESS_TOKEN=TOKEN,
            DUFFEL_BASE_URL=standin.base_url,
        ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    console = Console(process)
    try:
        await console.expect(r"Type a message")
        await console.type("/start", "Where are you flying from")
        await console.type("Lisbon", "To where")
        await console.type("FCO", "When do you fly")
        await console.type(future_day(60).isoformat(), r"Page 1 of")
        assert "ZZ" in console.output
        # The result's number: detail, price checked with Duffel and the first question.
        await console.type(console.button("1"), "Full name")
        await console.type("Maria Silva", "On the ticket: SILVA/MARIA")
        await console.type("17.05.1990", "Gender")
        await console.type(console.button("Female"), "Nationality")
        for answer, prompt in [
            ("Portugal", "Passport number"),
            ("X7654321", "Passport expiry"),
            ("2031-08-20", "Email"),
            ("maria@example.com", "Phone"),
        ]:
            await console.type(answer, prompt)
        await console.type(PHONE, r"Total: (€[\d,.]+)")
        link = await console.type(
            console.button("Pay"), r"<(http://127\.0\.0\.1:\d+/checkout/sandbox/[^>]+)>"
        )
        assert standin.only_order()["type"] == "hold"
        async with aiohttp.ClientSession() as http, http.post(f"{link.group(1)}/pay") as paid:
            assert paid.status == 200
        await console.expect(r"Booking confirmed")
        pnr = standin.only_order()["booking_reference"]
        await console.expect(rf"Airline booking reference: {pnr}")
        assert process.stdin is not None
        process.stdin.write(b"/quit\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    with closing(sqlite3.connect(tmp_path / "data/travelbot.sqlite3")) as db:
        (row,) = db.execute(
            "select status, provider_order_id, airline_reference from bookings"
        ).fetchall()
    assert row == ("confirmed", standin.only_order()["id"], pnr)
    assert re.fullmatch(r"[A-Z0-9]{6}", pnr)
