"""A price alert through PTB and the sandbox Bot API: watched from the results, its drop sent by
the scheduled check through ``TelegramNotifier``, and its "See flights" pressed in Telegram.

The flow itself (targets, the cap, /alerts) is tested at the engine seam (tests/test_alerts.py);
this keeps the wiring: the notifier's global buttons and a notification that moves the chat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.flights.places import PlaceIndex
from services.models import today_anywhere
from tests.support.botkit import BotKit, running_bot
from tests.support.days import Clock
from tests.support.fares import ScriptedFares
from tests.test_conversation_e2e import to_results

USER = 9401


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))  # the bot's and its fares' clock, moved by the test


@pytest.fixture
def fares(places: PlaceIndex, clock: Clock) -> ScriptedFares:
    first_day = today_anywhere(clock())
    return ScriptedFares(places=places, today=lambda: first_day, clock=clock)


@pytest.fixture
async def bot(tmp_path: Path, fares: ScriptedFares, clock: Clock) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path, provider=fares, clock=clock) as kit:
        yield kit


async def test_a_drop_reaches_the_chat_and_opens_its_search(
    bot: BotKit, fares: ScriptedFares, clock: Clock
) -> None:
    await to_results(bot, USER)
    await bot.press(USER, "Watch this route")
    done = await bot.say(USER, "under 9999")
    assert "I'll tell you when" in done.text
    alerts = bot.runtime.alerts
    assert alerts is not None
    (alert,) = await alerts.alerts_of(USER)
    assert alert.target is not None

    fares.cut = 1_00
    clock.advance(timedelta(hours=4))
    before = len(bot.sandbox.bot_messages(USER))
    assert await alerts.check_due() == 1
    sent = bot.sandbox.bot_messages(USER)[before:]
    (drop,) = sent
    assert "Price drop" in drop.text
    assert [b.label for row in drop.buttons for b in row] == ["✈️ See flights", "🔕 Stop this alert"]

    opened = await bot.press(USER, "See flights")
    assert "Tap a number" in opened.text
    assert (await bot.state(USER)).state == "search:results"
