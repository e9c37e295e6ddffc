"""Kiwi booked before it is charged, end to end against the Tequila stand-in: save_booking when
the traveller presses Pay, confirm_payment after the money is taken, and Kiwi's booking-status
notices (unsigned: the URL carries our secret) handled like Duffel's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.models import BookingStatus
from tests.standins.kiwi import API_KEY, KiwiStandIn
from tests.support.botkit import BotKit, running_bot
from tests.test_duffel_e2e import USER, pay_on_sandbox_page, reference_of, to_review

SECRET = "kiwi-notices-secret"


@pytest.fixture
async def tequila() -> AsyncIterator[KiwiStandIn]:
    standin = KiwiStandIn()
    await standin.start()
    yield standin
    await standin.close()


@pytest.fixture
async def bot(tmp_path: Path, tequila: KiwiStandIn) -> AsyncIterator[BotKit]:
    provider = KiwiProvider(
        API_KEY, base_url=tequila.base_url, places=PlaceIndex.default(), poll_interval=0.01
    )
    async with running_bot(tmp_path, provider=provider, kiwi_webhook_secret=SECRET) as kit:
        yield kit


async def notify(bot: BotKit, body: dict[str, object], secret: str = SECRET) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.base_url}/kiwi/webhook/{secret}", data=json.dumps(body)) as response,
    ):
        return response.status


async def test_kiwi_saves_at_pay_confirms_after_payment_and_a_cancellation_refunds_once(
    bot: BotKit, tequila: KiwiStandIn
) -> None:
    await to_review(bot)
    await bot.press(USER, "Pay")
    reference = await reference_of(bot)
    storage = bot.runtime.adapters.storage
    held = await storage.get_booking_by_reference(reference, user_id=USER)
    assert held is not None
    assert len(tequila.saved_bookings) == 1  # saved before the charge
    assert tequila.confirmed == []
    assert held.provider_order_id == "4000001"
    saved = tequila.saved_bookings[0]
    assert "payment_gateway" not in saved
    assert saved["passengers"][0]["phone"] == "+351912345678"

    await pay_on_sandbox_page(bot)
    confirmed = await storage.get_booking_by_reference(reference, user_id=USER)
    assert confirmed is not None
    assert confirmed.status is BookingStatus.CONFIRMED
    assert len(tequila.confirmed) == 1
    assert len(tequila.saved_bookings) == 1  # not saved twice

    notice = {"bid": 4000001, "status": "cancelled", "trigger": "airline_cancellation"}
    assert await notify(bot, notice) == 200
    assert await notify(bot, notice) == 200  # Kiwi repeats a notice: applied once
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    ended = await storage.get_booking_by_reference(reference, user_id=USER)
    assert ended is not None
    assert ended.status is BookingStatus.REFUNDED
    told = [m for m in bot.sandbox.bot_messages(USER) if "airline cancelled" in m.text]
    assert len(told) == 1


async def test_a_notice_without_our_secret_or_its_fields_is_refused(bot: BotKit) -> None:
    assert await notify(bot, {"bid": 1, "status": "cancelled"}, secret="guess") == 404
    assert await notify(bot, {"status": "cancelled"}) == 400
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.base_url}/kiwi/webhook/{SECRET}", data=b"[]") as response,
    ):
        assert response.status == 400
    assert await notify(bot, {"bid": 999, "status": "confirmed"}) == 200  # not ours: ignored
