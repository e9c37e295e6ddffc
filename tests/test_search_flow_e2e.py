"""The search flow end to end, for what only the wiring shows: results edited in place, "typing…"
while a slow search runs (and no Bot API call for a quick one), and the readiness endpoint.
Everything else the search flow does is tested at the engine seam (tests/test_seam_search.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.models import today_anywhere
from tests.support.botkit import BotKit, running_bot
from tests.test_conversation_e2e import (
    to_departure,
    to_results,
    to_travellers,
)

USER = 6001


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


async def test_results_page_sort_and_filter_in_place(bot: BotKit) -> None:
    await to_results(bot, USER)
    results = bot.sandbox.bot_messages(USER)[-1]
    assert "demo fares" in results.text
    prices = [int(p.replace(",", "")) for p in re.findall(r"€([\d,]+)", results.text)]
    assert prices == sorted(prices)
    await bot.press(USER, "Fastest")
    fastest = bot.sandbox.message(USER, results.message_id)
    assert fastest.edit_count >= 1
    assert "✓ Fastest" in str(fastest.buttons)
    await bot.press(USER, "Direct only")
    direct = bot.sandbox.message(USER, results.message_id)
    assert "stop" not in direct.text.replace("non-stop", "") or "direct" in direct.text
    if "Next ›" in str(direct.buttons):
        await bot.press(USER, "Next ›")
        assert "Page 2 of" in bot.sandbox.message(USER, results.message_id).text


async def test_readyz_reports_each_port(bot: BotKit) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.base_url}/readyz") as response:
        body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["ports"]["storage"] == {"adapter": "sqlite", "ok": True}
    assert body["ports"]["flights"]["adapter"] == "demo"


async def test_a_slow_search_shows_typing_before_the_results_arrive(tmp_path: Path) -> None:
    from bot.sandbox import EventKind

    slow = DemoProvider(places=PlaceIndex.default(), latency=0.8)
    async with running_bot(tmp_path, provider=slow) as bot:
        await to_departure(bot, USER)
        since = bot.sandbox.last_seq
        await bot.say(USER, (today_anywhere() + timedelta(days=90)).isoformat())
        kinds = [
            e.kind
            for e in bot.sandbox.events(
                since, kinds={EventKind.CHAT_ACTION, EventKind.BOT_EDIT, EventKind.BOT_MESSAGE}
            )
            if e.chat_id == USER
        ]
    assert kinds[0] is EventKind.CHAT_ACTION
    assert EventKind.BOT_MESSAGE in kinds[1:] or EventKind.BOT_EDIT in kinds[1:]


async def test_a_quick_search_answers_without_a_typing_call(bot: BotKit) -> None:
    from bot.sandbox import EventKind

    await to_travellers(bot, USER)
    since = bot.sandbox.last_seq
    reply = await bot.press(USER, "Search flights")
    assert "demo fares" in reply.text  # the results header, at once
    events = [e for e in bot.sandbox.events(since) if e.chat_id == USER]
    assert not [e for e in events if e.kind is EventKind.CHAT_ACTION]
    assert [e for e in events if e.kind in (EventKind.BOT_EDIT, EventKind.BOT_MESSAGE)]
